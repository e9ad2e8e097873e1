"""Good and bad selfie uploads, generated in code so no hostile binaries live in the repo.

Every generator returns a ``CorpusFile(filename, data, expected_reason)``; ``expected_reason``
is the ``InvalidSelfie.reason`` the upload must be refused with, or None for files that must
be accepted. File names are deliberately misleading where that is the point (validation looks
at content only). ``BAD_FILES`` and ``GOOD_FILES`` are lists of the generators, ready for
``pytest.mark.parametrize("make", BAD_FILES, ids=corpus_id)``. ``BOMB_FILES`` are
decompression bombs in several formats (PNG's is in both lists).
"""

from __future__ import annotations

import functools
import io
import struct
import zipfile
import zlib
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

from PIL import Image, ImageDraw

FIXTURE_PATH = Path(__file__).resolve().parents[1] / "fixtures" / "selfie-astronaut.jpg"
#: The endpoint's default SELFIE_MAX_BYTES.
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
#: Size of the decompression-bomb PNG; 400 megapixels, beyond any sane limit.
BOMB_SIDE = 20_000

HTML_PAYLOAD = b"<html><body><script>alert(document.cookie)</script></body></html>\n"


class CorpusFile(NamedTuple):
    filename: str
    data: bytes
    expected_reason: str | None


# --- Building blocks -----------------------------------------------------------------------


@functools.cache
def fixture_bytes() -> bytes:
    """The real 512x512 JPEG photo used as the base of every good file."""
    return FIXTURE_PATH.read_bytes()


def fixture_image(size: tuple[int, int] | None = None) -> Image.Image:
    """The fixture decoded to RGB, optionally resized (aspect ratio not preserved)."""
    with Image.open(io.BytesIO(fixture_bytes())) as image:
        rgb = image.convert("RGB")
    return rgb.resize(size, Image.Resampling.BILINEAR) if size else rgb


def encode(image: Image.Image, image_format: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **params)
    return buffer.getvalue()


def crafted_png(width: int, height: int) -> bytes:
    """A valid 1-bit greyscale PNG of any size whose pixels are all black.

    The IDAT stream is compressed incrementally from identical zero rows, so even 400
    megapixels cost about 50 KB and a fraction of a second, without ever holding the image.
    """
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", ihdr),
            _png_chunk(b"IDAT", _deflate_repeated(row, height)),
            _png_chunk(b"IEND", b""),
        ]
    )


def _deflate_repeated(row: bytes, count: int) -> bytes:
    """zlib stream of ``row`` repeated ``count`` times, compressed a block at a time."""
    compressor = zlib.compressobj(9)
    rows_per_block = max(1, (1 << 20) // len(row))
    parts = []
    remaining = count
    while remaining:
        block = min(rows_per_block, remaining)
        parts.append(compressor.compress(row * block))
        remaining -= block
    parts.append(compressor.flush())
    return b"".join(parts)


def _png_chunk(chunk_type: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(chunk_type + payload)
    return struct.pack(">I", len(payload)) + chunk_type + payload + struct.pack(">I", crc)


def crafted_webp(width: int, height: int) -> bytes:
    """A valid lossless WebP (VP8L) of any size up to 16383x16383, every pixel black.

    All five prefix codes are "simple" codes with a single symbol, so each pixel takes zero
    bits: the whole file is 30 bytes whatever its size, and decoding it fills the full canvas.
    """
    bits, count = 0, 0

    def put(value: int, width_in_bits: int) -> None:
        nonlocal bits, count
        bits |= value << count
        count += width_in_bits

    put(width - 1, 14)
    put(height - 1, 14)
    put(0, 1)  # alpha_is_used
    put(0, 3)  # version
    put(0, 1)  # no transform
    put(0, 1)  # no colour cache
    put(0, 1)  # no meta prefix codes
    for symbol in (0, 0, 0, 255, 0):  # green, red, blue, alpha, distance
        put(1, 1)  # simple code...
        put(0, 1)  # ...of one symbol
        if symbol < 2:
            put(0, 1)
            put(symbol, 1)
        else:
            put(1, 1)
            put(symbol, 8)
    payload = b"\x2f" + bits.to_bytes((count + 7) // 8, "little")
    chunk = b"VP8L" + struct.pack("<I", len(payload)) + payload + b"\x00" * (len(payload) % 2)
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def jpeg_claiming_size(width: int, height: int) -> bytes:
    """The fixture photo with its SOF0 header rewritten to claim ``width`` x ``height``."""
    data = bytearray(fixture_bytes())
    sof = data.index(b"\xff\xc0")  # baseline SOF0: FFC0, length, precision, height, width
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def crafted_gif(width: int, height: int) -> bytes:
    """A valid GIF of any size up to 65535x65535 whose pixels are all black.

    The LZW codes for a run of one colour stand for ever longer runs (1, 2, 3, ... pixels up
    to a full table, then a clear code), so 400 megapixels take about 270 KB.
    """
    data = _lzw_zeros(width * height)
    blocks = b"".join(
        bytes([len(data[at : at + 255])]) + data[at : at + 255] for at in range(0, len(data), 255)
    )
    screen = struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    descriptor = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0)
    return b"GIF89a" + screen + descriptor + b"\x02" + blocks + b"\x00\x3b"


def _lzw_zeros(pixels: int) -> bytes:
    """GIF LZW (minimum code size 2) for ``pixels`` zeros, codes packed LSB first."""
    clear, end, first_free, longest_run = 4, 5, 6, 4090  # so no code exceeds 4095
    out = bytearray()
    bits = count = 0
    width = 3

    def put(code: int) -> None:
        nonlocal bits, count
        bits |= code << count
        count += width
        while count >= 8:
            out.append(bits & 0xFF)
            bits >>= 8
            count -= 8

    remaining = pixels
    while remaining:
        put(clear)
        width, decoder_next = 3, first_free
        for run in range(1, longest_run + 1):
            if not remaining:
                break
            length = min(run, remaining)
            # Run 1 is the root code 0; run n was added as code first_free + n - 2.
            put(0 if length == 1 else first_free + length - 2)
            remaining -= length
            if run > 1:  # the decoder adds an entry for every code but the first after clear
                decoder_next += 1
                if decoder_next == 1 << width and width < 12:
                    width += 1
    put(end)
    if count:
        out.append(bits & 0xFF)
    return bytes(out)


def crafted_tiff(width: int, height: int) -> bytes:
    """A valid 1-bit, deflate-compressed TIFF of any size, one strip of black rows (small)."""
    strip = _deflate_repeated(b"\x00" * ((width + 7) // 8), height)
    short, long_ = 3, 4
    entries = [
        (256, long_, width),  # ImageWidth
        (257, long_, height),  # ImageLength
        (258, short, 1),  # BitsPerSample
        (259, short, 8),  # Compression: deflate
        (262, short, 1),  # PhotometricInterpretation: black is zero
        (273, long_, 0),  # StripOffsets, filled in below
        (277, short, 1),  # SamplesPerPixel
        (278, long_, height),  # RowsPerStrip
        (279, long_, len(strip)),  # StripByteCounts
    ]
    ifd_at = 8
    strip_at = ifd_at + 2 + 12 * len(entries) + 4
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        value = strip_at if tag == 273 else value
        packed = (
            struct.pack("<H", value) + b"\x00\x00" if kind == short else struct.pack("<I", value)
        )
        ifd += struct.pack("<HHI", tag, kind, 1) + packed
    ifd += struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", ifd_at) + ifd + strip


def crafted_bmp(width: int, height: int) -> bytes:
    """A valid 8-bit RLE BMP of any size, all black: 4 bytes of pixel data per row.

    Each row is one black pixel and an end-of-line code, which leaves the rest of the row
    background; 20000 rows of any width take 80 KB.
    """
    palette = b"\x00\x00\x00\x00" + b"\x00\x00\xff\x00"  # black, red: a "P" image
    rle = b"\x01\x00\x00\x00" * height + b"\x00\x01"  # (1 x colour 0, end of line)..., end
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(rle), 2835, 2835, 2, 0)
    file_header = b"BM" + struct.pack("<IHHI", offset + len(rle), 0, 0, offset)
    return file_header + info + palette + rle


def exif_with_gps_and_thumbnail(orientation: int, thumbnail: bytes) -> bytes:
    """A raw APP1 EXIF block (``Exif\\0\\0`` + big-endian TIFF) written by hand.

    It has IFD0 (Make, Orientation, GPS pointer), a GPS IFD with a latitude/longitude, and
    IFD1 holding an embedded JPEG thumbnail, whose own FFD8...FFD9 markers are exactly what a
    naive "find the first FFD9" trailing-data check would trip over.
    """
    ascii_, short, long_, rational, byte = 2, 3, 4, 5, 1

    def rationals(*values: Fraction) -> bytes:
        return b"".join(struct.pack(">II", v.numerator, v.denominator) for v in values)

    def ifd_size(entries: list[tuple[int, int, int, bytes]]) -> int:
        overflow = sum(len(v) + len(v) % 2 for *_, v in entries if len(v) > 4)
        return 2 + 12 * len(entries) + 4 + overflow

    def ifd(entries: list[tuple[int, int, int, bytes]], offset: int, next_ifd: int) -> bytes:
        head = struct.pack(">H", len(entries))
        data_at = offset + 2 + 12 * len(entries) + 4
        overflow = b""
        for tag, kind, count, value in entries:
            if len(value) <= 4:
                head += struct.pack(">HHI", tag, kind, count) + value.ljust(4, b"\x00")
            else:
                head += struct.pack(">HHII", tag, kind, count, data_at + len(overflow))
                overflow += value + b"\x00" * (len(value) % 2)
        return head + struct.pack(">I", next_ifd) + overflow

    gps = [
        (0x0000, byte, 4, bytes([2, 3, 0, 0])),  # GPSVersionID
        (0x0001, ascii_, 2, b"N\x00"),
        (0x0002, rational, 3, rationals(Fraction(48), Fraction(51), Fraction(2931, 100))),
        (0x0003, ascii_, 2, b"E\x00"),
        (0x0004, rational, 3, rationals(Fraction(2), Fraction(17), Fraction(4023, 100))),
    ]
    make = b"SelfieCam\x00"

    def ifd0(gps_at: int) -> list[tuple[int, int, int, bytes]]:
        return [
            (0x010F, ascii_, len(make), make),
            (0x0112, short, 1, struct.pack(">H", orientation)),
            (0x8825, long_, 1, struct.pack(">I", gps_at)),
        ]

    ifd0_at = 8
    gps_at = ifd0_at + ifd_size(ifd0(0))
    ifd1_at = gps_at + ifd_size(gps)

    def ifd1(thumb_at: int) -> list[tuple[int, int, int, bytes]]:
        return [
            (0x0103, short, 1, struct.pack(">H", 6)),  # Compression: JPEG
            (0x0201, long_, 1, struct.pack(">I", thumb_at)),  # JPEGInterchangeFormat
            (0x0202, long_, 1, struct.pack(">I", len(thumbnail))),  # ...Length
        ]

    thumb_at = ifd1_at + ifd_size(ifd1(0))
    tiff = (
        b"MM\x00\x2a"
        + struct.pack(">I", ifd0_at)
        + ifd(ifd0(gps_at), ifd0_at, ifd1_at)
        + ifd(gps, gps_at, 0)
        + ifd(ifd1(thumb_at), ifd1_at, 0)
        + thumbnail
    )
    return b"Exif\x00\x00" + tiff


def jpeg_with_gps_exif(size: tuple[int, int] = (600, 300), orientation: int = 6) -> bytes:
    """A camera-like JPEG: GPS position, orientation tag, EXIF thumbnail and a comment.

    The top-left corner of the stored pixels is painted pure red so tests can check where
    the orientation moved it.
    """
    image = fixture_image(size)
    ImageDraw.Draw(image).rectangle((0, 0, 59, 59), fill=(255, 0, 0))
    thumbnail = encode(image.resize((160, 80)), "JPEG", quality=80)
    exif = exif_with_gps_and_thumbnail(orientation, thumbnail)
    return encode(image, "JPEG", quality=92, exif=exif, comment=b"taken at home")


# --- face-check fixtures (avatars/faces.py) --------------------------------------------------


def portrait_rotated_by_exif() -> bytes:
    """The portrait stored on its side, with the EXIF tag (6) that turns it upright."""
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = fixture_image().transpose(Image.Transpose.ROTATE_90)
    return encode(stored, "JPEG", quality=90, exif=exif.tobytes())


def two_portraits_side_by_side() -> bytes:
    portrait = fixture_image()
    pair = Image.new("RGB", (portrait.width * 2, portrait.height))
    pair.paste(portrait, (0, 0))
    pair.paste(portrait, (portrait.width, 0))
    return encode(pair, "JPEG", quality=90)


def small_face_on_a_large_canvas(side: int = 1024) -> bytes:
    """The portrait in the middle of a plain canvas: its face is about 9% of the side."""
    canvas = Image.new("RGB", (side, side), (200, 200, 200))
    portrait = fixture_image()
    canvas.paste(portrait, ((side - portrait.width) // 2, (side - portrait.height) // 2))
    return encode(canvas, "JPEG", quality=90)


def plain_picture() -> bytes:
    return encode(Image.new("RGB", (800, 600), (90, 140, 200)), "JPEG", quality=90)


def landscape() -> bytes:
    """Sky over fields, with some texture: no face anywhere."""
    image = Image.new("RGB", (900, 600))
    draw = ImageDraw.Draw(image)
    for y in range(600):
        colour = (120 + y // 5, 160 + y // 10, 230 - y // 3) if y < 300 else (50, 120 + y % 11, 40)
        draw.line((0, y, 900, y), fill=colour)
    for x in range(0, 900, 37):
        draw.ellipse((x, 280 - x % 23, x + 60, 320), fill=(30, 90 + x % 40, 30))
    return encode(image, "JPEG", quality=90)


def _with_com_padding(jpeg: bytes, total_size: int) -> bytes:
    """Insert COM segments after SOI so the JPEG stays well-formed but is exactly total_size."""
    remaining = total_size - len(jpeg)
    if remaining < 4:
        raise ValueError("target size too small")
    segments = []
    while remaining:
        segment = min(65537, remaining)  # marker + length field + up to 65533 payload bytes
        if 0 < remaining - segment < 4:
            segment -= 4
        segments.append(b"\xff\xfe" + struct.pack(">H", segment - 2) + b"\x00" * (segment - 4))
        remaining -= segment
    return jpeg[:2] + b"".join(segments) + jpeg[2:]


# --- Bad files -----------------------------------------------------------------------------


def text_renamed_jpg() -> CorpusFile:
    return CorpusFile(
        "selfie.jpg", b"Dear diary, this is not a picture.\n" * 20, "unsupported_type"
    )


def html_renamed_png() -> CorpusFile:
    return CorpusFile("selfie.png", b"<!DOCTYPE html>\n" + HTML_PAYLOAD, "unsupported_type")


def empty_file() -> CorpusFile:
    return CorpusFile("selfie.jpg", b"", "unsupported_type")


def truncated_jpeg() -> CorpusFile:
    data = fixture_bytes()
    return CorpusFile("selfie.jpg", data[: len(data) // 2], "corrupt")


def truncated_png() -> CorpusFile:
    data = encode(fixture_image(), "PNG")
    return CorpusFile("selfie.png", data[: len(data) * 2 // 3], "corrupt")


def png_1x1() -> CorpusFile:
    return CorpusFile(
        "selfie.png", encode(Image.new("RGB", (1, 1), (200, 150, 120)), "PNG"), "too_small"
    )


@functools.cache
def _bomb() -> bytes:
    return crafted_png(BOMB_SIDE, BOMB_SIDE)


def png_bomb() -> CorpusFile:
    """20000x20000 PNG of about 50 KB: decoding it would need 400 MB or more."""
    return CorpusFile("selfie.png", _bomb(), "too_many_pixels")


def oversized_jpeg(max_bytes: int = DEFAULT_MAX_BYTES) -> CorpusFile:
    """A well-formed JPEG of exactly max_bytes + 1 bytes (padded with COM segments)."""
    return CorpusFile("selfie.jpg", _with_com_padding(fixture_bytes(), max_bytes + 1), "too_large")


def gif_image() -> CorpusFile:
    return CorpusFile("selfie.gif", encode(fixture_image(), "GIF"), "unsupported_type")


def gif_renamed_jpg() -> CorpusFile:
    return CorpusFile("selfie.jpg", encode(fixture_image(), "GIF"), "unsupported_type")


def svg_image() -> CorpusFile:
    svg = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<svg xmlns="http://www.w3.org/2000/svg" width="512" height="512">'
        b'<rect width="512" height="512" fill="#c96"/>'
        b"<script>alert(document.domain)</script></svg>\n"
    )
    return CorpusFile("selfie.svg", svg, "unsupported_type")


def png_followed_by_html() -> CorpusFile:
    return CorpusFile("selfie.png", encode(fixture_image(), "PNG") + HTML_PAYLOAD, "trailing_data")


def jpeg_followed_by_html() -> CorpusFile:
    """HTML after EOI, even ending in FFD9 so "the last FFD9 is the end" would be fooled."""
    return CorpusFile("selfie.jpg", fixture_bytes() + HTML_PAYLOAD + b"\xff\xd9", "trailing_data")


def jpeg_followed_by_zip() -> CorpusFile:
    """The classic JPEG+ZIP polyglot: a valid image that is also a valid ZIP archive."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("payload.html", HTML_PAYLOAD)
    return CorpusFile("selfie.jpg", fixture_bytes() + archive.getvalue(), "trailing_data")


def exif_jpeg_followed_by_html() -> CorpusFile:
    """Trailing data after a JPEG whose EXIF thumbnail has its own FFD8/FFD9."""
    return CorpusFile("selfie.jpg", jpeg_with_gps_exif() + HTML_PAYLOAD, "trailing_data")


def webp_followed_by_html() -> CorpusFile:
    return CorpusFile(
        "selfie.webp", encode(fixture_image(), "WEBP", quality=85) + HTML_PAYLOAD, "trailing_data"
    )


BAD_FILES: list[Callable[[], CorpusFile]] = [
    text_renamed_jpg,
    html_renamed_png,
    empty_file,
    truncated_jpeg,
    truncated_png,
    png_1x1,
    png_bomb,
    oversized_jpeg,
    gif_image,
    gif_renamed_jpg,
    svg_image,
    png_followed_by_html,
    jpeg_followed_by_html,
    jpeg_followed_by_zip,
    exif_jpeg_followed_by_html,
    webp_followed_by_html,
]


# --- Decompression bombs -------------------------------------------------------------------
# Small files that decode to hundreds of megapixels. All must be refused from their headers,
# before any pixel is decoded: JPEG, PNG and WebP by their size, the formats we do not accept
# by their signature alone (they are never parsed at all).


def jpeg_bomb() -> CorpusFile:
    """A 512x512 photo whose header claims 65500x65500 (4.3 gigapixels)."""
    return CorpusFile("selfie.jpg", jpeg_claiming_size(65_500, 65_500), "too_many_pixels")


def webp_bomb() -> CorpusFile:
    """30 bytes of lossless WebP that decode to 16383x16383 (268 megapixels, 800 MB RGB)."""
    return CorpusFile("selfie.webp", crafted_webp(16_383, 16_383), "too_many_pixels")


def webp_bomb_below_pillows_limit() -> CorpusFile:
    """81 megapixels: only our own limit (40 MP) stops it, Pillow's guard (89 MP) would not."""
    return CorpusFile("selfie.webp", crafted_webp(9_000, 9_000), "too_many_pixels")


def gif_bomb() -> CorpusFile:
    return CorpusFile("selfie.gif", crafted_gif(BOMB_SIDE, BOMB_SIDE), "unsupported_type")


def tiff_bomb() -> CorpusFile:
    return CorpusFile("selfie.tiff", crafted_tiff(BOMB_SIDE, BOMB_SIDE), "unsupported_type")


def bmp_bomb() -> CorpusFile:
    """Named .png: the name must not matter either."""
    return CorpusFile("selfie.png", crafted_bmp(BOMB_SIDE, BOMB_SIDE), "unsupported_type")


BOMB_FILES: list[Callable[[], CorpusFile]] = [
    png_bomb,
    jpeg_bomb,
    webp_bomb,
    webp_bomb_below_pillows_limit,
    gif_bomb,
    tiff_bomb,
    bmp_bomb,
]


# --- Good files ----------------------------------------------------------------------------


def good_jpeg_with_gps_exif() -> CorpusFile:
    """600x300 pixels stored, orientation 6: must be stored as 300x600 with no EXIF at all."""
    return CorpusFile("IMG_0001.jpg", jpeg_with_gps_exif(), None)


def good_png_with_alpha() -> CorpusFile:
    """Left half fully transparent: must come out white there (JPEG has no alpha)."""
    image = fixture_image().convert("RGBA")
    alpha = Image.new("L", image.size, 255)
    ImageDraw.Draw(alpha).rectangle((0, 0, image.width // 2 - 1, image.height), fill=0)
    image.putalpha(alpha)
    return CorpusFile("selfie.png", encode(image, "PNG"), None)


def good_webp() -> CorpusFile:
    return CorpusFile("selfie.webp", encode(fixture_image(), "WEBP", quality=90), None)


def good_progressive_jpeg() -> CorpusFile:
    return CorpusFile(
        "selfie.jpg", encode(fixture_image(), "JPEG", quality=90, progressive=True), None
    )


def good_mpo_jpeg() -> CorpusFile:
    """A multi-picture JPEG (as phones write): a second JPEG after the first EOI, indexed."""
    image = fixture_image()
    data = encode(image, "MPO", save_all=True, append_images=[image.resize((256, 256))])
    return CorpusFile("selfie.jpg", data, None)


def good_png_named_jpg() -> CorpusFile:
    """A fine PNG with the wrong extension: the name is irrelevant."""
    return CorpusFile("selfie.jpg", encode(fixture_image(), "PNG"), None)


GOOD_FILES: list[Callable[[], CorpusFile]] = [
    good_jpeg_with_gps_exif,
    good_png_with_alpha,
    good_webp,
    good_progressive_jpeg,
    good_mpo_jpeg,
    good_png_named_jpg,
]


def corpus_id(make: Callable[[], CorpusFile]) -> str:
    """Readable pytest id for a generator."""
    return make.__name__
