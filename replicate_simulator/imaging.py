"""The simulated model: a posterised, ink-outlined "comic" rendering of the input image."""

from __future__ import annotations

import hashlib
import io
import threading
from collections import OrderedDict
from concurrent.futures import Future

from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

# gpt-image-1 sizes per aspect ratio.
SIZES = {"1:1": (1024, 1024), "3:2": (1536, 1024), "2:3": (1024, 1536)}
CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_BACKGROUND = (246, 241, 230)
_INK = (24, 22, 28)
_WORKING_SIDE = 768  # effects run at this size at most, then scale: keeps rendering cheap


class ImageError(ValueError):
    """The input could not be decoded as an image."""


def render_comic(
    source: bytes | None,
    *,
    aspect_ratio: str = "1:1",
    output_format: str = "png",
    background: str = "auto",
    compression: int = 90,
    prompt: str = "",
) -> bytes:
    """Render the comic image; same arguments give the same bytes.

    Without a source image a placeholder is drawn from the prompt, so text-only
    predictions still produce a real picture.
    """
    size = SIZES.get(aspect_ratio, SIZES["1:1"])
    picture = _decode(source) if source is not None else _placeholder(prompt)
    picture = ImageOps.contain(picture, (_WORKING_SIDE, _WORKING_SIDE), Image.Resampling.LANCZOS)
    # Smoothing is the costly step, so it runs at the working size; the flat colours and
    # ink lines are made at the final size so scaling does not blur them.
    smooth = ImageOps.contain(
        picture.filter(ImageFilter.MedianFilter(3)), size, Image.Resampling.LANCZOS
    )
    comic = _comicify(smooth)
    transparent = background == "transparent" and output_format in ("png", "webp")
    canvas = Image.new("RGBA" if transparent else "RGB", size, (*_BACKGROUND, 0))
    if not transparent:
        canvas = Image.new("RGB", size, _BACKGROUND)
    canvas.paste(comic, ((size[0] - comic.width) // 2, (size[1] - comic.height) // 2))
    return _encode(canvas, output_format, compression)


def _decode(source: bytes) -> Image.Image:
    try:
        with Image.open(io.BytesIO(source)) as opened:
            opened.load()
            picture = ImageOps.exif_transpose(opened)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"cannot identify image file: {exc}") from exc
    if picture.mode in ("RGBA", "LA", "P"):
        flat = Image.new("RGB", picture.size, _BACKGROUND)
        rgba = picture.convert("RGBA")
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return picture.convert("RGB")


def _comicify(smooth: Image.Image) -> Image.Image:
    vivid = ImageEnhance.Contrast(ImageEnhance.Color(smooth).enhance(1.6)).enhance(1.15)
    flat = ImageOps.posterize(vivid, 3)
    edges = ImageOps.grayscale(smooth.filter(ImageFilter.GaussianBlur(1))).filter(
        ImageFilter.FIND_EDGES
    )
    lines = edges.point(lambda v: 255 if v > 28 else 0).filter(ImageFilter.MaxFilter(3))
    return Image.composite(Image.new("RGB", smooth.size, _INK), flat, lines)


def _placeholder(prompt: str) -> Image.Image:
    digest = hashlib.sha256(prompt.encode()).digest()
    picture = Image.new("RGB", (512, 512), (digest[0], digest[1], digest[2]))
    draw = ImageDraw.Draw(picture)
    for i in range(6):
        x, y, r = digest[3 + i * 3] * 2, digest[4 + i * 3] * 2, 30 + digest[5 + i * 3] // 3
        colour = (digest[20 + i], digest[(26 + i) % 32], digest[(13 + i) % 32])
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    return picture


def _encode(picture: Image.Image, output_format: str, compression: int) -> bytes:
    buffer = io.BytesIO()
    if output_format == "jpeg":
        picture.convert("RGB").save(buffer, "JPEG", quality=max(1, compression))
    elif output_format == "webp":
        picture.save(buffer, "WEBP", quality=max(1, compression), method=4)
    else:
        picture.save(buffer, "PNG")
    return buffer.getvalue()


class RenderCache:
    """Bounded memo of renders: hundreds of predictions of the same selfie render once.

    Once even when they come at the same moment: the first caller renders, the others wait for
    its result. Rendering holds the GIL for about half a second, and several copies of it at
    once would stall the whole simulator (its API included), which Replicate never does.
    """

    def __init__(self, max_entries: int = 32) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self._pending: dict[str, Future[bytes]] = {}
        self._max = max_entries

    def render(self, source: bytes | None, **options: object) -> bytes:
        key = hashlib.sha256((source or b"") + repr(sorted(options.items())).encode()).hexdigest()
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            pending = self._pending.get(key)
            if pending is None:
                self._pending[key] = mine = Future()
        if pending is not None:
            return pending.result()
        try:
            rendered = render_comic(source, **options)  # type: ignore[arg-type]
        except BaseException as exc:
            with self._lock:
                del self._pending[key]
            mine.set_exception(exc)
            raise
        with self._lock:
            del self._pending[key]
            self._entries[key] = rendered
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
        mine.set_result(rendered)
        return rendered
