"""The simulated model's picture: real, sized like gpt-image-1's, deterministic."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from replicate_simulator.imaging import ImageError, RenderCache, render_comic


def test_comic_is_1024_square_png_and_deterministic(selfie_bytes):
    first = render_comic(selfie_bytes, output_format="png")
    second = render_comic(selfie_bytes, output_format="png")

    image = Image.open(io.BytesIO(first))
    assert (image.format, image.size, image.mode) == ("PNG", (1024, 1024), "RGB")
    assert first == second


def test_comic_is_posterised_with_ink_outlines(selfie_bytes):
    image = Image.open(io.BytesIO(render_comic(selfie_bytes, output_format="png")))

    colours = image.getcolors(maxcolors=1 << 20)
    ink = sum(count for count, rgb in colours if rgb == (24, 22, 28))
    assert len(colours) < 1500  # the photo has tens of thousands of colours
    assert ink > 1024 * 1024 * 0.02


@pytest.mark.parametrize(
    ("fmt", "pil_format"), [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")]
)
def test_output_formats(selfie_bytes, fmt, pil_format):
    image = Image.open(io.BytesIO(render_comic(selfie_bytes, output_format=fmt)))

    assert image.format == pil_format


def test_non_square_ratios_are_fitted_on_a_plain_background(selfie_bytes):
    image = Image.open(io.BytesIO(render_comic(selfie_bytes, aspect_ratio="2:3")))

    assert image.size == (1024, 1536)
    assert image.convert("RGB").getpixel((512, 5)) == (246, 241, 230)


def test_transparent_background(selfie_bytes):
    image = Image.open(
        io.BytesIO(render_comic(selfie_bytes, aspect_ratio="3:2", background="transparent"))
    )

    assert image.mode == "RGBA"
    assert image.getpixel((5, 512))[3] == 0


def test_without_an_input_image_a_placeholder_is_drawn_from_the_prompt():
    one = render_comic(None, prompt="a cat")
    same = render_comic(None, prompt="a cat")
    other = render_comic(None, prompt="a dog")

    assert one == same != other


def test_garbage_is_an_image_error():
    with pytest.raises(ImageError):
        render_comic(b"definitely not an image")


def test_cache_returns_identical_bytes(selfie_bytes):
    cache = RenderCache(max_entries=1)

    first = cache.render(selfie_bytes, output_format="png")

    assert cache.render(selfie_bytes, output_format="png") is first
    cache.render(None, output_format="png")
    assert cache.render(selfie_bytes, output_format="png") == first
