"""Prompt design for GPT-Image-1: versioned templates and the named styles.

The template asks for exactly what makes a usable avatar: one person, head to toe, centred on a
plain background, with the person's likeness kept, and nothing written on the picture. A style
only changes the drawing language. Change the wording by adding a new version, never by editing
one in place: every avatar records the version it was made with.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class Style:
    id: str
    name: str
    description: str
    # The drawing language, inserted into the template.
    look: str


STYLES: dict[str, Style] = {
    style.id: style
    for style in [
        Style(
            "comic",
            "Comic",
            "A classic comic-book hero look: bold ink outlines, flat colours, vivid palette.",
            "classic American comic-book art: bold black ink outlines of even weight, flat cel "
            "shading with one or two tones per colour, a vivid saturated palette, crisp clean "
            "shapes",
        ),
        Style(
            "manga",
            "Manga",
            "Clean Japanese manga line art with soft cel colouring.",
            "modern Japanese manga and anime illustration: clean confident line art, soft cel "
            "shading, bright clear colours, expressive but faithful facial features",
        ),
        Style(
            "pop_art",
            "Pop art",
            "Retro pop art with halftone dots and punchy primary colours.",
            "1960s pop-art comic print: thick black outlines, Ben-Day halftone dots in the "
            "shading, punchy primary colours, high contrast",
        ),
        Style(
            "graphic_novel",
            "Graphic novel",
            "Moody graphic-novel inking with a restrained palette.",
            "contemporary graphic-novel art: confident brush inking, dramatic but soft shadows, "
            "a restrained harmonious palette, detailed yet clean rendering",
        ),
        Style(
            "cartoon",
            "Cartoon",
            "A friendly, rounded cartoon look for all ages.",
            "friendly all-ages cartoon illustration: rounded simplified shapes, clean thick "
            "outlines, cheerful bright colours, gentle flat shading, proportions close to real",
        ),
    ]
}
DEFAULT_STYLE = "comic"

PROMPT_VERSION = "v1"
TEMPLATES: dict[str, str] = {
    "v1": (
        "Turn the person in the reference photo into a full-body character illustration in "
        "the style of {look}. "
        "Show exactly one person, alone, standing upright in a relaxed natural pose, facing "
        "the viewer, centred in the frame, the whole body visible from the top of the head "
        "to the shoes, with a little empty space above the head and below the feet; nothing "
        "cropped. "
        "Keep the person clearly recognisable: the same face shape and facial features, the "
        "same hairstyle and hair colour, the same skin tone, the same eye colour, glasses, "
        "facial hair and visible accessories if they have them, and the same body build. "
        "Dress them in the clothes from the photo, completed naturally below the frame of "
        "the photo. "
        "Plain, evenly lit, light single-colour background with no scenery. "
        "No text, letters, numbers, speech bubbles, captions, logos, signatures, watermarks, "
        "borders or panels."
    ),
}


def build_prompt(style_id: str, version: str = PROMPT_VERSION) -> str:
    return TEMPLATES[version].format(look=STYLES[style_id].look)


def opaque_user_id(user_id: int) -> str:
    """Who asked, for the provider's abuse tracking, without telling it who we mean."""
    digest = hmac.new(
        settings.SECRET_KEY.encode(), f"avatar-user:{user_id}".encode(), hashlib.sha256
    )
    return digest.hexdigest()[:32]
