"""Validate an uploaded selfie by its content and produce the clean copy we store.

Uploads are untrusted: the file name and declared content type are ignored, the bytes are
checked (size, format, dimensions, structure, full decode) and then re-encoded to a plain
JPEG without any metadata, so nothing from the original file (GPS position, camera details,
an appended HTML or ZIP payload) survives into storage or reaches the image model.

This module is pure (no Django models, no I/O); ``prepare_selfie_from_settings`` is the only
part that reads Django settings.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass, field
from typing import Final, Literal

from django.conf import settings
from PIL import Image, ImageFile, ImageOps

try:  # Colour management is optional: without LittleCMS we only lose the ICC conversion.
    from PIL import ImageCms

    _SRGB_PROFILE: ImageCms.ImageCmsProfile | None = ImageCms.ImageCmsProfile(
        ImageCms.createProfile("sRGB")
    )
except (ImportError, OSError):  # pragma: no cover - depends on how Pillow was built
    ImageCms = None  # type: ignore[assignment]
    _SRGB_PROFILE = None

Reason = Literal[
    "too_large",
    "unsupported_type",
    "too_small",
    "too_many_pixels",
    "corrupt",
    "trailing_data",
]

#: Formats accepted, as Pillow names them when detecting from content.
ACCEPTED_FORMATS: Final = ("JPEG", "PNG", "WEBP")
# Pillow's JPEG opener reports multi-picture JPEGs (phone photos with a depth or gain map) as
# "MPO"; they are still JPEG files.
_OPENED_FORMATS: Final = frozenset({"JPEG", "MPO", "PNG", "WEBP"})

STORED_CONTENT_TYPE: Final = "image/jpeg"
STORED_EXTENSION: Final = "jpg"
STORED_JPEG_QUALITY: Final = 90
_WHITE: Final = (255, 255, 255)

#: Bytes after the end of the image that are tolerated: encoders and cameras sometimes pad
#: files with a few NUL/0xFF bytes or a newline. Such padding cannot carry a payload.
PADDING_TOLERANCE: Final = 4096
_PADDING_BYTES: Final = b"\x00\xff \t\r\n"

_JPEG_SIGNATURE: Final = b"\xff\xd8\xff"
_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
# Inside entropy-coded JPEG data, 0xFF is followed by 0x00 (byte stuffing), a restart marker
# (0xD0-0xD7) or another 0xFF (fill byte). Anything else is a real marker.
_JPEG_MARKER_IN_SCAN: Final = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_MAX_MPF_IMAGES: Final = 64

MESSAGE_UNSUPPORTED: Final = "This file is not a JPEG, PNG or WebP image."
MESSAGE_EMPTY: Final = "The file is empty."
MESSAGE_TOO_MANY_PIXELS: Final = "The image has too many pixels."
MESSAGE_CORRUPT: Final = "The image is damaged or incomplete."
MESSAGE_TRAILING_DATA: Final = "The file contains extra data after the end of the image."


class InvalidSelfie(Exception):
    """An upload that cannot be used as a selfie.

    ``message`` is meant for the person who uploaded the file; ``reason`` is a stable slug for
    API clients, logs and metrics.
    """

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason
        self.message: str = message

    def __repr__(self) -> str:
        return f"InvalidSelfie(reason={self.reason!r}, message={self.message!r})"


@dataclass(frozen=True, slots=True)
class PreparedSelfie:
    """The re-encoded image to store, with what callers need to save and serve it."""

    content: bytes = field(repr=False)
    content_type: str
    extension: str
    width: int
    height: int
    sha256: str


def prepare_selfie(
    data: bytes,
    *,
    max_bytes: int,
    min_side: int,
    max_pixels: int,
    stored_max_side: int,
) -> PreparedSelfie:
    """Validate ``data`` by content and return a metadata-free JPEG copy, or raise InvalidSelfie.

    Checks run cheapest first so hostile files are refused before any pixel data is decoded.
    """
    if len(data) > max_bytes:
        raise InvalidSelfie("too_large", f"The file is larger than {_format_size(max_bytes)}.")
    if not data:
        raise InvalidSelfie("unsupported_type", MESSAGE_EMPTY)

    image = _open(data)
    with image:
        width, height = image.size
        if width <= 0 or height <= 0:
            raise InvalidSelfie("corrupt", MESSAGE_CORRUPT)
        # The size comes from the header; nothing has been decoded yet.
        if width * height > max_pixels:
            raise InvalidSelfie("too_many_pixels", MESSAGE_TOO_MANY_PIXELS)
        if width < min_side or height < min_side:
            raise InvalidSelfie(
                "too_small",
                f"The image is too small: it must be at least {min_side}x{min_side} pixels.",
            )
        _check_structure(data, image.format)
        _decode_no_larger_than_needed(image, stored_max_side)
        try:
            image.load()
        except MemoryError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise InvalidSelfie("too_many_pixels", MESSAGE_TOO_MANY_PIXELS) from exc
        except Exception as exc:  # Pillow raises many types for broken data.
            raise InvalidSelfie("corrupt", MESSAGE_CORRUPT) from exc
        clean = _clean_rgb(_shrink_to_fit(image, stored_max_side), stored_max_side)

    buffer = io.BytesIO()
    clean.save(buffer, format="JPEG", quality=STORED_JPEG_QUALITY, optimize=True)
    content = buffer.getvalue()
    return PreparedSelfie(
        content=content,
        content_type=STORED_CONTENT_TYPE,
        extension=STORED_EXTENSION,
        width=clean.width,
        height=clean.height,
        sha256=hashlib.sha256(content).hexdigest(),
    )


def prepare_selfie_from_settings(data: bytes) -> PreparedSelfie:
    """``prepare_selfie`` with the limits configured in Django settings (SELFIE_*)."""
    return prepare_selfie(
        data,
        max_bytes=settings.SELFIE_MAX_BYTES,
        min_side=settings.SELFIE_MIN_SIDE,
        max_pixels=settings.SELFIE_MAX_PIXELS,
        stored_max_side=settings.SELFIE_STORED_MAX_SIDE,
    )


# --- Opening -------------------------------------------------------------------------------


def _open(data: bytes) -> ImageFile.ImageFile:
    """Identify the format from the bytes (header only) and map Pillow's errors to reasons."""
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except MemoryError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own guard (its MAX_IMAGE_PIXELS, left untouched) fired while reading the
        # header; the warning only arrives here if warnings are turned into errors.
        raise InvalidSelfie("too_many_pixels", MESSAGE_TOO_MANY_PIXELS) from exc
    except Exception as exc:  # UnidentifiedImageError and plugin errors alike
        # A file that starts like an accepted format but cannot be parsed is a broken image,
        # not a different kind of file.
        if _has_accepted_signature(data):
            raise InvalidSelfie("corrupt", MESSAGE_CORRUPT) from exc
        raise InvalidSelfie("unsupported_type", MESSAGE_UNSUPPORTED) from exc
    if image.format not in _OPENED_FORMATS:  # pragma: no cover - guarded by formats=
        image.close()
        raise InvalidSelfie("unsupported_type", MESSAGE_UNSUPPORTED)
    return image


def _has_accepted_signature(data: bytes) -> bool:
    return (
        data.startswith(_JPEG_SIGNATURE)
        or data.startswith(_PNG_SIGNATURE)
        or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")
    )


# --- Structure: where does the image end? --------------------------------------------------


def _check_structure(data: bytes, image_format: str | None) -> None:
    """Refuse files whose image ends before the file does (polyglots such as PNG+HTML).

    Also catches truncation independently of ``ImageFile.LOAD_TRUNCATED_IMAGES``.
    """
    if image_format in ("JPEG", "MPO"):
        _check_jpeg_structure(data)
        return
    if image_format == "PNG":
        end = _png_end(data)
    else:
        end = _webp_end(data)
    if end is None:
        raise InvalidSelfie("corrupt", MESSAGE_CORRUPT)
    if not _is_padding(data[end:]):
        raise InvalidSelfie("trailing_data", MESSAGE_TRAILING_DATA)


def _is_padding(rest: bytes) -> bool:
    return len(rest) <= PADDING_TOLERANCE and not rest.strip(_PADDING_BYTES)


def _png_end(data: bytes) -> int | None:
    """Offset just past the IEND chunk, walking chunk lengths; None if the file stops early."""
    n = len(data)
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= n:
        length = int.from_bytes(data[pos : pos + 4], "big")
        if length > 0x7FFFFFFF:
            return None
        chunk_type = data[pos + 4 : pos + 8]
        pos += 12 + length  # length + type + data + CRC
        if pos > n:
            return None
        if chunk_type == b"IEND":
            return pos
    return None


def _webp_end(data: bytes) -> int | None:
    """Offset just past the RIFF container, per its size field; None if the file is shorter."""
    if len(data) < 12:
        return None
    end = 8 + int.from_bytes(data[4:8], "little")
    return end if end <= len(data) else None


def _check_jpeg_structure(data: bytes) -> None:
    """Find the real EOI of the primary image, then account for MPF images that follow it."""
    end, mpf_images = _walk_jpeg(data, 0)
    if end is None:
        raise InvalidSelfie("corrupt", MESSAGE_CORRUPT)
    if _is_padding(data[end:]):
        return
    # Multi-picture JPEGs (MPO, Ultra HDR gain maps) append further JPEGs after the first EOI
    # and list them in an APP2 "MPF" index. Accept exactly those, each structurally complete.
    cursor = end
    for start in sorted(start for start in mpf_images if start >= end):
        gap = data[cursor:start]
        if start < cursor or not _is_padding(gap):
            raise InvalidSelfie("trailing_data", MESSAGE_TRAILING_DATA)
        extra_end, _ = _walk_jpeg(data, start)
        if extra_end is None:
            raise InvalidSelfie("corrupt", MESSAGE_CORRUPT)
        cursor = extra_end
    if not _is_padding(data[cursor:]):
        raise InvalidSelfie("trailing_data", MESSAGE_TRAILING_DATA)


def _walk_jpeg(data: bytes, start: int) -> tuple[int | None, list[int]]:
    """Walk JPEG segments from the SOI at ``start`` to the EOI that really ends the image.

    Segments are skipped by their length, so FFD9 inside an EXIF thumbnail (APP1) is never
    mistaken for the end. After each SOS the entropy-coded data is scanned for the next marker
    that is not byte-stuffed (FF00) or a restart (FFD0-FFD7); progressive JPEGs simply have
    several scans. Returns (offset after EOI or None if incomplete, absolute offsets of the
    extra images listed in an MPF index).
    """
    n = len(data)
    if data[start : start + 2] != b"\xff\xd8":
        return None, []
    mpf_images: list[int] = []
    pos = start + 2
    while True:
        if pos >= n:
            return None, mpf_images
        if data[pos] != 0xFF:
            # Like libjpeg, skip stray bytes between segments up to the next marker.
            pos = data.find(b"\xff", pos)
            if pos < 0:
                return None, mpf_images
        while pos < n and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= n:
            return None, mpf_images
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # EOI
            return pos, mpf_images
        if marker == 0xD8:  # a second SOI before EOI: not a well-formed image
            return None, mpf_images
        if marker == 0x00 or marker == 0x01 or 0xD0 <= marker <= 0xD7:
            continue  # stray stuffing, TEM or restart marker: no length field
        if pos + 2 > n:
            return None, mpf_images
        length = int.from_bytes(data[pos : pos + 2], "big")
        if length < 2 or pos + length > n:
            return None, mpf_images
        if marker == 0xE2 and data[pos + 2 : pos + 6] == b"MPF\x00":
            mpf_images = _mpf_image_offsets(data[pos + 6 : pos + length], pos + 6)
        pos += length
        if marker == 0xDA:  # SOS: skip the entropy-coded data that follows the header
            found = _JPEG_MARKER_IN_SCAN.search(data, pos)
            if found is None:
                return None, mpf_images
            pos = found.start()


def _mpf_image_offsets(tiff: bytes, tiff_offset: int) -> list[int]:
    """Absolute offsets of the non-primary images listed in an MPF (CIPA DC-007) index.

    Offsets in the index are relative to the index's TIFF header at ``tiff_offset``. A broken
    index yields no images, so whatever follows the first image counts as trailing data.
    """
    if tiff[:4] == b"II*\x00":
        order: Literal["little", "big"] = "little"
    elif tiff[:4] == b"MM\x00*":
        order = "big"
    else:
        return []

    def read(at: int, size: int) -> int | None:
        if at < 0 or at + size > len(tiff):
            return None
        return int.from_bytes(tiff[at : at + size], order)

    ifd = read(4, 4)
    count = read(ifd, 2) if ifd is not None else None
    if ifd is None or count is None:
        return []
    for index in range(count):
        entry = ifd + 2 + 12 * index
        if read(entry, 2) != 0xB002:  # MPEntry
            continue
        size = read(entry + 4, 4)
        entries_at = read(entry + 8, 4)
        if size is None or entries_at is None or size % 16:
            return []
        offsets = []
        for image in range(min(size // 16, _MAX_MPF_IMAGES)):
            data_offset = read(entries_at + 16 * image + 8, 4)
            if data_offset is None:
                return []
            if data_offset:  # 0 means "the primary image", which we already walked
                offsets.append(tiff_offset + data_offset)
        return offsets
    return []


# --- Re-encoding ---------------------------------------------------------------------------


def _decode_no_larger_than_needed(image: ImageFile.ImageFile, max_side: int) -> None:
    """Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the stored copy is that much smaller.

    A 40 MP photo then costs a quarter of its full 120 MB of pixels. Every scan is still
    decoded, so damaged data is still found. Other formats decode at full size.
    """
    if image.format in ("JPEG", "MPO"):
        image.draft(None, _fitted_size(image.size, max_side))


# Modes that resample well. Palette, bilevel and colour-keyed images are shrunk only once
# they are RGB (`_clean_rgb`).
_RESAMPLED_MODES: Final = frozenset({"L", "LA", "RGB", "RGBA", "CMYK", "I", "F"})


def _shrink_to_fit(image: Image.Image, max_side: int) -> Image.Image:
    """The stored size first, so the copies the clean-up makes are small ones.

    The box is square, so turning the image upright afterwards fits it just the same.
    """
    if (
        max(image.size) <= max_side
        or image.mode not in _RESAMPLED_MODES
        or "transparency" in image.info
    ):
        return image
    size = _fitted_size(image.size, max_side)
    shrunk = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    shrunk.info = image.info  # the EXIF orientation and ICC profile still apply
    return shrunk


def _fitted_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    scale = min(1.0, max_side / max(size))
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _clean_rgb(image: Image.Image, max_side: int) -> Image.Image:
    """Upright, sRGB-ish, alpha-free RGB copy no larger than ``max_side``, with no metadata."""
    try:
        upright = ImageOps.exif_transpose(image)
    except MemoryError:
        raise
    except Exception:  # An unreadable EXIF block should not cost the user their upload.
        upright = image.copy()
    rgb = _flatten_to_rgb(_to_srgb(upright, image.info.get("icc_profile")))
    rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    # Dropping info means JPEG save has no comment/EXIF/ICC/XMP to carry over.
    rgb.info = {}
    return rgb


def _to_srgb(image: Image.Image, icc_profile: bytes | None) -> Image.Image:
    """Convert colours from an embedded ICC profile to sRGB, since the profile is discarded."""
    if not icc_profile or ImageCms is None or _SRGB_PROFILE is None:
        return image
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
        space = source.profile.xcolor_space.strip()
        if image.mode == "CMYK" and space == "CMYK":
            return ImageCms.profileToProfile(image, source, _SRGB_PROFILE, outputMode="RGB")
        if image.mode in ("RGB", "RGBA") and space == "RGB":
            return ImageCms.profileToProfile(image, source, _SRGB_PROFILE, outputMode=image.mode)
    except MemoryError:
        raise
    except Exception:  # A broken profile: keep the pixel values as they are.
        return image
    return image


def _flatten_to_rgb(image: Image.Image) -> Image.Image:
    """RGB with any transparency composited onto white (JPEG has no alpha)."""
    if image.mode.startswith("I;16"):
        image = image.convert("I")
    if image.mode == "I":  # 16-bit greyscale: scale down rather than clip to white
        image = image.point(lambda value: value * (1 / 256)).convert("L")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or ("transparency" in image.info)
    if not has_alpha:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    background = Image.new("RGB", rgba.size, _WHITE)
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


def _format_size(size: int) -> str:
    """Human-readable byte count for messages, e.g. 10485760 -> "10 MB"."""
    megabyte = 1024 * 1024
    if size >= megabyte:
        value = size / megabyte
        return f"{value:.0f} MB" if size % megabyte == 0 else f"{value:.1f} MB"
    if size >= 1024:
        return f"{size / 1024:.0f} KB"
    return f"{size} bytes"
