"""The token counts a GPT Image prediction's logs report, as Replicate's openai models print them.

Real counts depend on OpenAI's tokenizer; these follow its published shape closely enough for a
cost to be computed from them: output tokens by quality and size (OpenAI's table for 1024x1024
and 1536x1024), a fixed count per input image, and about four tokens for every three words.
"""

from __future__ import annotations

from typing import Any

OUTPUT_TOKENS = {
    "1:1": {"low": 272, "medium": 1056, "high": 4160},
    "3:2": {"low": 408, "medium": 1584, "high": 6240},
    "2:3": {"low": 408, "medium": 1584, "high": 6240},
}
TOKENS_PER_INPUT_IMAGE = {"low": 323, "high": 4160}


def token_log_lines(options: dict[str, Any], input_images: int, images: int) -> tuple[str, ...]:
    """The three count lines of a successful prediction's logs."""
    quality = options.get("quality") or "auto"
    by_quality = OUTPUT_TOKENS.get(options.get("aspect_ratio") or "1:1", OUTPUT_TOKENS["1:1"])
    output = by_quality.get(quality, by_quality["high"]) * images
    fidelity = options.get("input_fidelity") or "high"
    image_tokens = TOKENS_PER_INPUT_IMAGE.get(fidelity, TOKENS_PER_INPUT_IMAGE["high"])
    text = max(1, len(str(options.get("prompt") or "").split()) * 4 // 3)
    return (
        f"Input text token count: {text}",
        f"Input image token count: {image_tokens * input_images}",
        f"Output token count: {output}",
    )
