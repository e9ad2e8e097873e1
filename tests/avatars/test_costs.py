"""Pricing a prediction (avatars/costs.py) from the price tables in settings."""

from __future__ import annotations

from decimal import Decimal

import pytest

from avatars import costs

LOGS = (
    "Generating image...\n"
    "Image size: 1024x1024\n"
    "Input text token count: 200\n"
    "Input image token count: 1000\n"
    "Output token count: 4160\n"
)


def test_the_token_counts_are_read_from_the_logs():
    assert costs.read_token_usage(LOGS) == costs.TokenUsage(200, 1000, 4160)


@pytest.mark.parametrize("logs", ["", "Generating image...\n", "Output token count: 4160\n"])
def test_logs_without_all_three_counts_leave_the_tokens_unknown(logs):
    assert costs.read_token_usage(logs) is None


def test_a_per_image_model_costs_its_price_per_image_whatever_its_logs_say():
    usage = costs.read_token_usage(LOGS)

    assert costs.price_prediction(
        model="openai/gpt-image-1.5", quality="medium", images=1, usage=usage
    ) == Decimal("0.05")
    assert costs.price_prediction(
        model="openai/gpt-image-2", quality="auto", images=2, usage=None
    ) == Decimal("0.38"), "auto is priced as high"
    assert costs.price_prediction(
        model="openai/gpt-image-2", quality="high", images=0, usage=None
    ) == Decimal("0"), "a prediction without an image is not billed per image"


def test_gpt_image_1_costs_its_tokens_at_openai_prices_plus_replicates_fee():
    cost = costs.price_prediction(
        model="openai/gpt-image-1", quality="high", images=1, usage=costs.read_token_usage(LOGS)
    )

    # 200 x $5 + 1000 x $10 + 4160 x $40 per million, and $0.001 for the image
    assert cost == Decimal("0.001") + Decimal("0.1774")


def test_the_price_tables_are_settings(settings):
    settings.AVATAR_PRICES_USD = {
        **settings.AVATAR_PRICES_USD,
        "openai/gpt-image-2": {"low": 1, "medium": 2, "high": 3, "auto": 3},
    }
    settings.OPENAI_TOKEN_PRICES_USD_PER_MILLION = {
        "input_text_tokens": 0,
        "input_image_tokens": 0,
        "output_tokens": 1_000_000,
    }

    assert costs.price_prediction(
        model="openai/gpt-image-2", quality="medium", images=1, usage=None
    ) == Decimal("2")
    assert costs.price_prediction(
        model="openai/gpt-image-1", quality="low", images=1, usage=costs.TokenUsage(9, 9, 3)
    ) == Decimal("3.001")


def test_an_estimate_before_the_run_uses_typical_tokens_for_gpt_image_1():
    assert costs.estimate_avatar_cost("openai/gpt-image-2", "low") == Decimal("0.02")
    # 250 x $5 + 1000 x $10 + 4160 x $40 per million, plus the fee
    assert costs.estimate_avatar_cost("openai/gpt-image-1", "high") == Decimal("0.178650")
