"""What a prediction costs in USD, from the price tables in settings.

Replicate bills its per-image models for each image a prediction outputs (nothing for one that
failed); gpt-image-1's tokens are billed by OpenAI to the operator's key, and its logs say how
many ("Input text token count: 250"), so its cost is those tokens at OpenAI's prices plus
Replicate's fee per image. Logs without the counts leave the tokens unknown and the cost at the
per-image fee alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings

from avatars import image_models

_TOKEN_LINES = {
    "input_text_tokens": re.compile(r"input text token count:\s*(\d+)", re.IGNORECASE),
    "input_image_tokens": re.compile(r"input image token count:\s*(\d+)", re.IGNORECASE),
    "output_tokens": re.compile(r"output token count:\s*(\d+)", re.IGNORECASE),
}
_MICRO = Decimal("0.000001")


@dataclass(frozen=True)
class TokenUsage:
    input_text_tokens: int
    input_image_tokens: int
    output_tokens: int


def read_token_usage(logs: str) -> TokenUsage | None:
    """The token counts a gpt-image-1 prediction's logs report, or None without all three."""
    counts = {}
    for field, pattern in _TOKEN_LINES.items():
        found = pattern.findall(logs or "")
        if not found:
            return None
        counts[field] = int(found[-1])
    return TokenUsage(**counts)


def _price_per_image(model: str, quality: str) -> Decimal:
    return Decimal(str(settings.AVATAR_PRICES_USD[model][quality]))


def _price_tokens(usage: TokenUsage) -> Decimal:
    prices = settings.OPENAI_TOKEN_PRICES_USD_PER_MILLION
    total = sum(
        Decimal(str(prices[field])) * getattr(usage, field) for field in image_models.TOKEN_FIELDS
    )
    return total / Decimal(1_000_000)


def price_prediction(*, model: str, quality: str, images: int, usage: TokenUsage | None) -> Decimal:
    """The cost of one ended prediction that output `images` images (tokens count only where
    the operator's OpenAI key pays for them; other models' logs report them too)."""
    cost = _price_per_image(model, quality) * images
    if usage is not None and model in image_models.TOKEN_PRICED:
        cost += _price_tokens(usage)
    return cost.quantize(_MICRO)


def estimate_avatar_cost(model: str, quality: str) -> Decimal:
    """What one more avatar is likely to cost, before it has run (for the daily spend cap)."""
    usage = None
    if model in image_models.TOKEN_PRICED:
        usage = TokenUsage(**image_models.TYPICAL_TOKENS[quality])
    return price_prediction(model=model, quality=quality, images=1, usage=usage)
