"""The Replicate image models we can run, each with its own input mapping and price.

Pure Python on purpose: the settings module reads `MODELS` to refuse an unknown
`REPLICATE_MODEL` at start-up, before Django is set up.

Prices are in USD per output image at each quality, Replicate's published per-image prices
(README "What each avatar costs" gives the sources); `auto` is priced as `high`, the most it can
cost. For `openai/gpt-image-1` Replicate bills only a small fee per image and the operator's own
OpenAI key pays for the tokens, so its cost is the tokens the prediction's logs report, priced with
OpenAI's table (`TOKEN_PRICES_USD_PER_MILLION`), plus that fee.
"""

from __future__ import annotations

from dataclasses import dataclass

QUALITIES = ("low", "medium", "high", "auto")


@dataclass(frozen=True)
class ImageModel:
    name: str
    # Only models billed to the operator's OpenAI account take (and require) the key.
    needs_openai_key: bool
    # Whether the schema has `input_fidelity` (gpt-image-2 keeps faces without being asked).
    has_input_fidelity: bool
    # Our quality setting, by the name this model's schema gives it.
    quality_names: dict[str, str]
    # The aspect ratio that gives a square picture, in this model's schema.
    square: str = "1:1"


MODELS: dict[str, ImageModel] = {
    model.name: model
    for model in (
        ImageModel(
            "openai/gpt-image-1",
            needs_openai_key=True,
            has_input_fidelity=True,
            quality_names={quality: quality for quality in QUALITIES},
        ),
        ImageModel(
            "openai/gpt-image-1.5",
            needs_openai_key=False,
            has_input_fidelity=True,
            quality_names={quality: quality for quality in QUALITIES},
        ),
        ImageModel(
            "openai/gpt-image-2",
            needs_openai_key=False,
            has_input_fidelity=False,
            quality_names={quality: quality for quality in QUALITIES},
        ),
    )
}
DEFAULT_MODEL = "openai/gpt-image-1"

# USD per output image by quality (the setting AVATAR_PRICES_USD replaces it, model by model).
# Sources and dates: README, "What each avatar costs".
PRICES_USD: dict[str, dict[str, float]] = {
    # replicate.com/openai/gpt-image-1: $0.001 per image; the tokens are billed by OpenAI.
    "openai/gpt-image-1": {"low": 0.001, "medium": 0.001, "high": 0.001, "auto": 0.001},
    # replicate.com/openai/gpt-image-1.5, 1024x1024.
    "openai/gpt-image-1.5": {"low": 0.013, "medium": 0.05, "high": 0.136, "auto": 0.136},
    # openai/gpt-image-2 is priced by its tokens; Replicate's per-image estimate at 1024x1024.
    "openai/gpt-image-2": {"low": 0.02, "medium": 0.07, "high": 0.19, "auto": 0.19},
}

TOKEN_FIELDS = ("input_text_tokens", "input_image_tokens", "output_tokens")
# OpenAI's prices for gpt-image-1, USD per million tokens (the setting
# OPENAI_TOKEN_PRICES_USD_PER_MILLION replaces it; source: replicate.com/openai/gpt-image-1).
TOKEN_PRICES_USD_PER_MILLION: dict[str, float] = {
    "input_text_tokens": 5.0,
    "input_image_tokens": 10.0,
    "output_tokens": 40.0,
}
# What a square gpt-image-1 picture usually uses, for a cost estimate before the logs say:
# OpenAI's output tokens for 1024x1024 by quality, plus a selfie and a prompt's worth of input.
TYPICAL_TOKENS: dict[str, dict[str, int]] = {
    quality: {"input_text_tokens": 250, "input_image_tokens": 1000, "output_tokens": output}
    for quality, output in {"low": 272, "medium": 1056, "high": 4160, "auto": 4160}.items()
}
TOKEN_PRICED = frozenset({"openai/gpt-image-1"})


def get_model(name: str) -> ImageModel:
    return MODELS[name]


def build_model_input(
    model: ImageModel,
    *,
    prompt: str,
    image: str,
    user_id: str,
    openai_api_key: str,
    quality: str,
) -> dict:
    """The model input of DESIGN.md §5 in `model`'s own terms: one square PNG of the person."""
    payload = {
        "prompt": prompt,
        "input_images": [image],
        "aspect_ratio": model.square,
        "quality": model.quality_names[quality],
        "background": "opaque",
        "output_format": "png",
        "number_of_images": 1,
        "moderation": "auto",
        "user_id": user_id,
    }
    if model.has_input_fidelity:
        payload["input_fidelity"] = "high"
    if model.needs_openai_key and openai_api_key:
        payload["openai_api_key"] = openai_api_key
    return payload
