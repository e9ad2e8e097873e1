"""Unit tests for avatars.selfies: every validation rule, the bad-file corpus, the clean copy."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import struct
from collections.abc import Callable

import pytest
from django.test import override_settings
from PIL import Image, ImageCms, ImageFile

from avatars.selfies import (
    MESSAGE_CORRUPT,
    MESSAGE_TRAILING_DATA,
    MESSAGE_UNSUPPORTED,
    PADDING_TOLERANCE,
    InvalidSelfie,
    PreparedSelfie,
    prepare_selfie,
    prepare_selfie_from_settings,
)
from tests.avatars import selfie_corpus as corpus
from tests.avatars.selfie_corpus import BAD_FILES, GOOD_FILES, CorpusFile, corpus_id

# The project defaults (config/settings.py), spelled out so these tests do not depend on env.
LIMITS = {
    "max_bytes": 10 * 1024 * 1024,
    "min_side": 256,
    "max_pixels": 40_000_000,
    "stored_max_side": 2048,
}


def prepare(data: bytes, **overrides: int) -> PreparedSelfie:
    return prepare_selfie(data, **{**LIMITS, **overrides})


def refusal(data: bytes, **overrides: int) -> InvalidSelfie:
    with pytest.raises(InvalidSelfie) as caught:
        prepare(data, **overrides)
    return caught.value


def open_stored(selfie: PreparedSelfie) -> Image.Image:
    image = Image.open(io.BytesIO(selfie.content))
    image.load()
    return image


def assert_no_metadata(selfie: PreparedSelfie) -> None:
    image = open_stored(selfie)
    assert image.format == "JPEG"
    assert image.mode == "RGB"
    assert len(image.getexif()) == 0
    assert not {"exif", "icc_profile", "xmp", "comment", "photoshop"} & set(image.info)
    # Only the JFIF header segment; no APP1 (EXIF/XMP), APP2 (ICC/MPF), APP13, COM.
    assert [marker for marker, _ in image.applist] == ["APP0"]
    assert b"Exif\x00" not in selfie.content


@pytest.fixture
def no_pixel_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any image's pixel data gets decoded."""

    def forbidden(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixel data was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", forbidden)


# --- The corpus ----------------------------------------------------------------------------


@pytest.mark.parametrize("make", BAD_FILES, ids=corpus_id)
def test_bad_files_are_refused_with_their_reason(make: Callable[[], CorpusFile]) -> None:
    bad = make()
    error = refusal(bad.data)
    assert error.reason == bad.expected_reason
    assert error.message
    assert str(error) == error.message


@pytest.mark.parametrize("make", GOOD_FILES, ids=corpus_id)
def test_good_files_are_stored_as_clean_jpeg(make: Callable[[], CorpusFile]) -> None:
    selfie = prepare(make().data)
    assert selfie.content_type == "image/jpeg"
    assert selfie.extension == "jpg"
    assert selfie.sha256 == hashlib.sha256(selfie.content).hexdigest()
    assert open_stored(selfie).size == (selfie.width, selfie.height)
    assert_no_metadata(selfie)


@pytest.mark.parametrize("make", GOOD_FILES, ids=corpus_id)
def test_good_files_with_appended_html_are_refused(make: Callable[[], CorpusFile]) -> None:
    error = refusal(make().data + corpus.HTML_PAYLOAD)
    assert error.reason == "trailing_data"
    assert error.message == MESSAGE_TRAILING_DATA


def test_corpus_files_are_small_and_generated() -> None:
    assert len(corpus.png_bomb().data) < 300 * 1024
    assert len(corpus.oversized_jpeg().data) == LIMITS["max_bytes"] + 1


# --- Size ----------------------------------------------------------------------------------


def test_too_large_is_checked_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_called(*args: object, **kwargs: object) -> None:
        raise AssertionError("Image.open must not be reached")

    monkeypatch.setattr(Image, "open", not_called)
    error = refusal(corpus.oversized_jpeg().data)
    assert error.reason == "too_large"
    assert error.message == "The file is larger than 10 MB."


def test_size_limit_is_inclusive() -> None:
    data = corpus.fixture_bytes()
    assert prepare(data, max_bytes=len(data)).width == 512
    assert refusal(data, max_bytes=len(data) - 1).reason == "too_large"


def test_oversized_corpus_file_is_otherwise_a_valid_jpeg() -> None:
    bad = corpus.oversized_jpeg(max_bytes=200_000)
    assert len(bad.data) == 200_001
    assert prepare(bad.data, max_bytes=200_001).width == 512


@pytest.mark.parametrize(
    ("max_bytes", "shown"),
    [(10 * 1024 * 1024, "10 MB"), (5 * 1024 * 1024 + 512 * 1024, "5.5 MB"), (70_000, "68 KB")],
)
def test_too_large_message_shows_the_limit(max_bytes: int, shown: str) -> None:
    error = refusal(b"\x00" * (max_bytes + 1), max_bytes=max_bytes)
    assert error.message == f"The file is larger than {shown}."


# --- Type ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"%PDF-1.7\n1 0 obj\n",
        b"GIF89a" + b"\x00" * 100,
        b"BM" + b"\x00" * 100,
        b"PK\x03\x04" + b"\x00" * 100,
        b"RIFF\x10\x00\x00\x00WAVEfmt ",
    ],
    ids=["pdf", "gif-header", "bmp-header", "zip", "wav"],
)
def test_other_formats_are_unsupported(data: bytes) -> None:
    error = refusal(data)
    assert error.reason == "unsupported_type"
    assert error.message == MESSAGE_UNSUPPORTED


@pytest.mark.parametrize("image_format", ["BMP", "TIFF", "GIF", "ICO"])
def test_real_images_in_other_formats_are_unsupported(image_format: str) -> None:
    data = corpus.encode(corpus.fixture_image((256, 256)), image_format)
    assert refusal(data).reason == "unsupported_type"


@pytest.mark.parametrize(
    "data",
    [b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, b"\xff\xd8\xff\xe0garbage", b"RIFF\x00\x00\x00\x00WEBP"],
    ids=["png", "jpeg", "webp"],
)
def test_broken_file_with_accepted_signature_is_corrupt(data: bytes) -> None:
    assert refusal(data).reason == "corrupt"


# --- Pixels and dimensions -----------------------------------------------------------------


def test_png_bomb_is_refused_without_decoding(no_pixel_decoding: None) -> None:
    error = refusal(corpus.png_bomb().data)
    assert error.reason == "too_many_pixels"
    assert error.message == "The image has too many pixels."


def test_pixel_limit_is_ours_not_only_pillows(no_pixel_decoding: None) -> None:
    # 48 MP: over our 40 MP limit but under Pillow's own warning threshold (~89 MP).
    data = corpus.crafted_png(8000, 6000)
    assert 8000 * 6000 < Image.MAX_IMAGE_PIXELS
    assert refusal(data).reason == "too_many_pixels"


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_bomb_in_pillows_warning_range_is_refused(no_pixel_decoding: None) -> None:
    assert refusal(corpus.crafted_png(10_000, 10_000)).reason == "too_many_pixels"


@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")
def test_bomb_warning_raised_as_error_maps_to_too_many_pixels(no_pixel_decoding: None) -> None:
    assert refusal(corpus.crafted_png(10_000, 10_000)).reason == "too_many_pixels"


@pytest.mark.parametrize(("width", "height"), [(7000, 7000), (60_000, 60_000)])
def test_jpeg_header_claiming_huge_size_is_refused(
    width: int, height: int, no_pixel_decoding: None
) -> None:
    data = bytearray(corpus.fixture_bytes())
    sof = data.index(b"\xff\xc0")  # baseline SOF0: FFC0, length, precision, height, width
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    assert refusal(bytes(data)).reason == "too_many_pixels"


def test_pixel_limit_is_inclusive() -> None:
    data = corpus.fixture_bytes()
    assert prepare(data, max_pixels=512 * 512).width == 512
    assert refusal(data, max_pixels=512 * 512 - 1).reason == "too_many_pixels"


@pytest.mark.parametrize(
    ("size", "accepted"), [((256, 256), True), ((255, 400), False), ((400, 255), False)]
)
def test_minimum_side(size: tuple[int, int], accepted: bool) -> None:
    data = corpus.encode(corpus.fixture_image(size), "PNG")
    if accepted:
        assert (prepare(data).width, prepare(data).height) == size
    else:
        error = refusal(data)
        assert error.reason == "too_small"
        assert error.message == "The image is too small: it must be at least 256x256 pixels."


# --- Damaged files -------------------------------------------------------------------------


def test_load_truncated_images_is_off_by_default() -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize("cut", [1, 2, 100, 30_000])
@pytest.mark.parametrize("tolerant_pillow", [False, True])
def test_truncated_jpeg_is_corrupt(
    cut: int, tolerant_pillow: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Even if someone turns LOAD_TRUNCATED_IMAGES on globally, the structure walk notices.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", tolerant_pillow)
    error = refusal(corpus.fixture_bytes()[:-cut])
    assert error.reason == "corrupt"
    assert error.message == MESSAGE_CORRUPT


@pytest.mark.parametrize("image_format", ["PNG", "WEBP"])
@pytest.mark.parametrize("keep", [0.5, 0.9, 0.999])
def test_truncated_png_and_webp_are_corrupt(image_format: str, keep: float) -> None:
    data = corpus.encode(corpus.fixture_image(), image_format)
    assert refusal(data[: int(len(data) * keep)]).reason == "corrupt"


def test_png_without_iend_is_corrupt() -> None:
    data = corpus.encode(corpus.fixture_image(), "PNG")
    assert data.endswith(b"IEND\xaeB`\x82")
    assert refusal(data[:-12]).reason == "corrupt"


def test_damaged_pixel_data_is_corrupt() -> None:
    data = bytearray(corpus.encode(corpus.fixture_image(), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 100 : idat + 400] = b"\x55" * 300
    assert refusal(bytes(data)).reason == "corrupt"


# --- Trailing data -------------------------------------------------------------------------


def test_exif_thumbnail_markers_are_not_mistaken_for_the_end() -> None:
    data = corpus.jpeg_with_gps_exif()
    app1 = data.index(b"\xff\xe1")
    app1_end = app1 + 2 + int.from_bytes(data[app1 + 2 : app1 + 4], "big")
    # The thumbnail's own EOI sits inside the APP1 segment, long before the real one.
    assert app1 < data.index(b"\xff\xd9") < app1_end < len(data) - 2
    assert prepare(data).width == 300


def test_trailing_html_after_exif_jpeg_is_refused() -> None:
    assert refusal(corpus.exif_jpeg_followed_by_html().data).reason == "trailing_data"


def test_progressive_jpeg_is_accepted() -> None:
    data = corpus.good_progressive_jpeg().data
    assert data.count(b"\xff\xda") > 1  # several scans
    assert Image.open(io.BytesIO(data)).info.get("progressive")
    assert prepare(data).width == 512


def test_jpeg_with_restart_markers_is_accepted() -> None:
    data = corpus.encode(corpus.fixture_image(), "JPEG", restart_marker_blocks=1)
    assert data.count(b"\xff\xd0") > 10
    assert prepare(data).width == 512
    assert refusal(data + b"junk").reason == "trailing_data"


@pytest.mark.parametrize("padding", [b"\x00", b"\x00" * 4, b"\n", b"\r\n", b"\xff\xff"])
@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "WEBP"])
def test_a_little_padding_after_the_image_is_tolerated(padding: bytes, image_format: str) -> None:
    data = corpus.encode(corpus.fixture_image(), image_format)
    assert prepare(data + padding).width == 512


def test_padding_tolerance_is_limited() -> None:
    data = corpus.fixture_bytes()
    assert prepare(data + b"\x00" * PADDING_TOLERANCE).width == 512
    assert refusal(data + b"\x00" * (PADDING_TOLERANCE + 1)).reason == "trailing_data"
    assert refusal(data + b"\x00\x00X").reason == "trailing_data"


def test_webp_riff_size_beyond_file_is_corrupt() -> None:
    data = bytearray(corpus.good_webp().data)
    data[4:8] = struct.pack("<I", len(data))  # claims 8 more bytes than there are
    assert refusal(bytes(data)).reason == "corrupt"


def test_mpo_with_truncated_second_image_is_corrupt() -> None:
    data = corpus.good_mpo_jpeg().data
    assert refusal(data[:-50]).reason == "corrupt"


def test_jpeg_after_jpeg_without_mpf_index_is_trailing_data() -> None:
    data = corpus.fixture_bytes() + corpus.encode(corpus.fixture_image((64, 64)), "JPEG")
    assert refusal(data).reason == "trailing_data"


# --- The stored copy -----------------------------------------------------------------------


def test_gps_exif_is_stripped_and_orientation_applied() -> None:
    original = corpus.good_jpeg_with_gps_exif().data
    with Image.open(io.BytesIO(original)) as image:
        assert image.size == (600, 300)
        exif = image.getexif()
        assert exif[0x0112] == 6
        assert exif.get_ifd(0x8825)[1] == "N"  # the GPS position is really there

    selfie = prepare(original)
    assert (selfie.width, selfie.height) == (300, 600)
    assert_no_metadata(selfie)
    assert b"SelfieCam" not in selfie.content
    # Orientation 6 means "rotate 90 degrees clockwise": the red top-left corner moves to the
    # top-right.
    stored = open_stored(selfie)
    red, green, blue = stored.getpixel((300 - 15, 15))
    assert red > 200 and green < 60 and blue < 60
    assert stored.getpixel((15, 15)) != stored.getpixel((300 - 15, 15))


def test_alpha_is_flattened_onto_white() -> None:
    stored = open_stored(prepare(corpus.good_png_with_alpha().data))
    assert all(channel > 245 for channel in stored.getpixel((20, 256)))
    assert stored.getpixel((400, 256)) != (255, 255, 255)


def image_in_mode(mode: str) -> bytes:
    base = corpus.fixture_image((300, 300))
    if mode == "P-transparent":
        image = base.convert("P")
        image.info["transparency"] = image.getpixel((0, 0))
        return corpus.encode(image, "PNG", transparency=image.getpixel((0, 0)))
    if mode == "I;16":
        return corpus.encode(
            base.convert("L").convert("I").point(lambda v: v * 256).convert("I;16"), "PNG"
        )
    if mode == "CMYK":
        return corpus.encode(base.convert("CMYK"), "JPEG")
    if mode == "WEBP-RGBA":
        return corpus.encode(base.convert("RGBA"), "WEBP", lossless=True)
    if mode == "L-jpeg":
        return corpus.encode(base.convert("L"), "JPEG")
    return corpus.encode(base.convert(mode), "PNG")


@pytest.mark.parametrize(
    "mode",
    ["1", "L", "LA", "P", "P-transparent", "I;16", "CMYK", "L-jpeg", "RGBA", "WEBP-RGBA"],
)
def test_every_mode_becomes_rgb(mode: str) -> None:
    stored = open_stored(prepare(image_in_mode(mode)))
    assert stored.mode == "RGB"
    assert stored.size == (300, 300)
    # The face is mid-tones, not blown out to white or black (checks 16-bit scaling and CMYK).
    gray = stored.convert("L").resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
    assert 20 < gray < 235


def test_icc_profile_is_applied_then_dropped() -> None:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = corpus.encode(corpus.fixture_image(), "JPEG", quality=95, icc_profile=srgb)
    assert "icc_profile" in Image.open(io.BytesIO(data)).info
    selfie = prepare(data)
    assert_no_metadata(selfie)
    before = corpus.fixture_image().resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
    after = open_stored(selfie).resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
    assert all(abs(a - b) <= 4 for a, b in zip(before, after, strict=True))


def test_broken_icc_profile_is_ignored() -> None:
    data = corpus.encode(corpus.fixture_image(), "JPEG", icc_profile=b"not a profile" * 10)
    assert_no_metadata(prepare(data))


def test_large_images_are_scaled_down() -> None:
    data = corpus.encode(corpus.fixture_image((3000, 1500)), "JPEG", quality=80)
    selfie = prepare(data)
    assert (selfie.width, selfie.height) == (2048, 1024)
    assert open_stored(selfie).size == (2048, 1024)


def test_stored_max_side_applies_after_rotation() -> None:
    selfie = prepare(corpus.good_jpeg_with_gps_exif().data, stored_max_side=300)
    assert (selfie.width, selfie.height) == (150, 300)


def test_small_images_are_not_upscaled() -> None:
    selfie = prepare(corpus.fixture_bytes(), stored_max_side=4096)
    assert (selfie.width, selfie.height) == (512, 512)


def test_animated_webp_uses_the_first_frame() -> None:
    frames = [corpus.fixture_image(), Image.new("RGB", (512, 512), (0, 0, 255))]
    data = corpus.encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    stored = open_stored(prepare(data))
    assert stored.getpixel((256, 256)) != (0, 0, 255)


def test_output_is_deterministic() -> None:
    data = corpus.good_png_with_alpha().data
    assert prepare(data).sha256 == prepare(data).sha256


def test_prepared_selfie_is_frozen_and_repr_omits_content() -> None:
    selfie = prepare(corpus.fixture_bytes())
    with pytest.raises(dataclasses.FrozenInstanceError):
        selfie.width = 1  # type: ignore[misc]
    assert "content=" not in repr(selfie)


def test_pillow_globals_are_left_alone() -> None:
    max_pixels, truncated = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    for make in BAD_FILES + GOOD_FILES:
        try:
            prepare(make().data)
        except InvalidSelfie:
            pass
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == (max_pixels, truncated)


# --- Settings ------------------------------------------------------------------------------


def test_from_settings_uses_the_configured_limits() -> None:
    data = corpus.fixture_bytes()
    with override_settings(SELFIE_STORED_MAX_SIDE=128):
        assert prepare_selfie_from_settings(data).width == 128
    with override_settings(SELFIE_MIN_SIDE=600), pytest.raises(InvalidSelfie) as caught:
        prepare_selfie_from_settings(data)
    assert caught.value.reason == "too_small"
    with override_settings(SELFIE_MAX_BYTES=1000), pytest.raises(InvalidSelfie) as caught:
        prepare_selfie_from_settings(data)
    assert caught.value.reason == "too_large"
