"""The simulated model's picture: real, sized like gpt-image-1's, deterministic."""

from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from replicate_simulator import imaging
from replicate_simulator.imaging import ImageError, RenderCache, render_comic
from replicate_simulator.testing import wait_for


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


class _CountingLock:
    """A lock that counts how often it was taken: each render call takes it first thing."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.taken = 0

    def __enter__(self):
        self._lock.acquire()
        self.taken += 1

    def __exit__(self, *exc):
        self._lock.release()


def test_renders_of_one_image_at_the_same_moment_render_it_once(selfie_bytes, monkeypatch):
    cache = RenderCache()
    cache._lock = lock = _CountingLock()
    calls = []
    release = threading.Event()

    def slow_render(source, **options):
        calls.append(source)
        release.wait(timeout=10)
        return b"rendered"

    monkeypatch.setattr(imaging, "render_comic", slow_render)
    with ThreadPoolExecutor(max_workers=4) as pool:
        renders = [pool.submit(cache.render, selfie_bytes, output_format="png") for _ in range(4)]
        # all four have looked in the cache, none has its picture yet
        wait_for(lambda: lock.taken >= 4, timeout=10, message="four renders under way")
        release.set()
        results = [render.result(timeout=10) for render in renders]

    assert results == [b"rendered"] * 4
    assert len(calls) == 1


def test_a_failed_render_fails_its_waiters_and_is_tried_again(selfie_bytes):
    cache = RenderCache()

    with pytest.raises(ImageError):
        cache.render(b"not an image", output_format="png")
    with pytest.raises(ImageError):
        cache.render(b"not an image", output_format="png")
    assert cache.render(selfie_bytes, output_format="png")
