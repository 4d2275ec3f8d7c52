"""The shared image codec on plain field values, without any ROS message class."""

from __future__ import annotations

from dataclasses import replace
from typing import get_args

import cv2
import numpy as np
import pytest

from mess_ros.data.errors import DataError, ImageFormatCause, ImageFormatError
from mess_ros.data.image_codec import (
    COMPRESSED_FORMATS,
    MASK_ENCODINGS,
    SUPPORTED_ENCODINGS,
    CompressedPayload,
    RawImage,
    array_to_raw,
    check_image_size,
    compressed_to_rgb,
    image_to_array,
    image_to_mask,
    image_to_rgb,
    rgb_to_compressed,
    rgb_to_encoding,
)


@pytest.fixture
def rgb() -> np.ndarray:
    """A 5x7 image whose every pixel differs, so a swapped channel or row shows."""
    return np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)


def driver_layout(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """``rgb`` in the channel layout of ``encoding``, built independently of the codec."""
    alpha = np.full((*rgb.shape[:2], 1), 200, dtype=np.uint8)
    grey = rgb[:, :, 0]
    layouts = {
        "rgb8": rgb,
        "bgr8": rgb[:, :, ::-1],
        "rgba8": np.concatenate([rgb, alpha], axis=2),
        "bgra8": np.concatenate([rgb[:, :, ::-1], alpha], axis=2),
        "mono8": grey,
        "mono16": grey.astype(np.uint16) * 257,
    }
    return np.ascontiguousarray(layouts[encoding])


def cause_of(info: pytest.ExceptionInfo[ImageFormatError]) -> str:
    return info.value.cause


@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
@pytest.mark.parametrize("row_padding", [0, 5])
@pytest.mark.parametrize("big_endian", [False, True])
def test_round_trip_every_encoding(
    rgb: np.ndarray, encoding: str, row_padding: int, big_endian: bool
) -> None:
    pixels = driver_layout(rgb, encoding)
    raw = array_to_raw(pixels, encoding, row_padding=row_padding, big_endian=big_endian)
    assert (raw.height, raw.width, raw.encoding) == (5, 7, encoding)
    assert raw.step == 7 * pixels.itemsize * (pixels.shape[2] if pixels.ndim == 3 else 1) + (
        row_padding
    )
    assert raw.data.shape == (raw.step * raw.height,)
    assert raw.is_bigendian == (big_endian and encoding == "mono16")
    np.testing.assert_array_equal(image_to_array(raw), pixels)
    out = image_to_rgb(raw)
    assert out.dtype == np.uint8
    assert out.shape == (5, 7, 3)
    assert out.flags.c_contiguous
    expected = np.repeat(rgb[:, :, :1], 3, axis=2) if encoding.startswith("mono") else rgb
    np.testing.assert_array_equal(out, expected)


def test_big_endian_flag_is_honoured() -> None:
    """The same bytes read as little or big endian give different values."""
    data = np.array([0x01, 0x02, 0xFF, 0x00], dtype=np.uint8)
    big = RawImage(height=1, width=2, encoding="mono16", is_bigendian=True, step=4, data=data)
    np.testing.assert_array_equal(image_to_array(big), [[0x0102, 0xFF00]])
    little = replace(big, is_bigendian=False)
    np.testing.assert_array_equal(image_to_array(little), [[0x0201, 0x00FF]])
    # 8 most significant bits of the big-endian values: 0x01 and 0xFF.
    np.testing.assert_array_equal(image_to_rgb(big)[0, :, 0], [0x01, 0xFF])


@pytest.mark.parametrize("big_endian", [False, True])
def test_mono16_keeps_the_high_byte_never_rounded_up_by_the_low_one(big_endian: bool) -> None:
    grey = np.arange(35, dtype=np.uint8).reshape(5, 7) * 7
    values = grey.astype(np.uint16) * 256 + 0xFF
    raw = array_to_raw(values, "mono16", big_endian=big_endian)
    np.testing.assert_array_equal(image_to_rgb(raw), np.repeat(grey[:, :, None], 3, axis=2))


def test_padding_bytes_are_ignored(rgb: np.ndarray) -> None:
    raw = array_to_raw(rgb, "rgb8", row_padding=3)
    data = raw.data.copy().reshape(5, raw.step)
    data[:, -3:] = 255
    np.testing.assert_array_equal(image_to_rgb(replace(raw, data=data.reshape(-1))), rgb)


def test_decoders_take_any_buffer_the_message_classes_hold(rgb: np.ndarray) -> None:
    """rclpy stores ``array.array``, rosbags numpy arrays, hand-made messages ``bytes``."""
    raw = array_to_raw(rgb, "bgr8")
    as_bytes = replace(raw, data=raw.data.tobytes())
    np.testing.assert_array_equal(image_to_rgb(as_bytes), rgb[:, :, ::-1])


def test_wrong_data_length_names_the_sizes(rgb: np.ndarray) -> None:
    raw = array_to_raw(rgb, "rgb8")
    with pytest.raises(ImageFormatError, match=r"data length 104 .* 21 \* 5 = 105") as info:
        image_to_rgb(replace(raw, data=raw.data[:-1]))
    assert cause_of(info) == "bad_data_length"
    longer = replace(raw, data=np.zeros(raw.data.size + 2, dtype=np.uint8))
    with pytest.raises(ImageFormatError, match="data length 107"):
        image_to_rgb(longer)
    with pytest.raises(ImageFormatError, match="step \\* height = 21 \\* 6") as info:
        image_to_rgb(replace(raw, height=6))
    assert cause_of(info) == "bad_data_length"


def test_step_smaller_than_a_row(rgb: np.ndarray) -> None:
    raw = array_to_raw(rgb, "rgb8")
    with pytest.raises(
        ImageFormatError, match=r"step 20 is smaller than one row .*\(21 bytes\)"
    ) as info:
        image_to_rgb(replace(raw, step=20))
    assert cause_of(info) == "bad_step"


def test_unsupported_encoding_lists_supported(rgb: np.ndarray) -> None:
    raw = replace(array_to_raw(rgb, "rgb8"), encoding="yuv422")
    with pytest.raises(ImageFormatError, match=r"'yuv422'.*rgb8, bgr8") as info:
        image_to_rgb(raw)
    assert cause_of(info) == "unsupported_encoding"


@pytest.mark.parametrize(("height", "width"), [(0, 7), (5, 0), (0, 0)])
def test_zero_size(height: int, width: int) -> None:
    raw = RawImage(height, width, "rgb8", False, width * 3, np.zeros(0, dtype=np.uint8))
    with pytest.raises(ImageFormatError, match="zero size") as info:
        image_to_rgb(raw)
    assert cause_of(info) == "zero_size"


def test_size_limit(rgb: np.ndarray) -> None:
    raw = array_to_raw(rgb, "rgb8")
    assert image_to_rgb(raw, max_pixels=35).shape == (5, 7, 3)
    with pytest.raises(ImageFormatError, match="35 pixels exceeds the limit of 34") as info:
        image_to_rgb(raw, max_pixels=34)
    assert cause_of(info) == "too_large"


def test_absurd_header_fails_before_allocating() -> None:
    side = 2**31 - 1
    raw = RawImage(side, side, "rgb8", False, 3 * side, np.zeros(0, dtype=np.uint8))
    with pytest.raises(ImageFormatError) as info:
        image_to_rgb(raw)
    assert cause_of(info) == "too_large"
    with pytest.raises(ImageFormatError):
        check_image_size(side, side)


def test_errors_belong_to_the_data_family_and_use_known_causes(rgb: np.ndarray) -> None:
    with pytest.raises(DataError) as info:
        image_to_rgb(replace(array_to_raw(rgb, "rgb8"), step=1))
    assert isinstance(info.value, ImageFormatError)
    assert info.value.cause in get_args(ImageFormatCause)


def test_arrays_that_do_not_fit_the_encoding(rgb: np.ndarray) -> None:
    with pytest.raises(ImageFormatError, match="HxWx4") as info:
        array_to_raw(rgb, "rgba8")
    assert cause_of(info) == "bad_array"
    with pytest.raises(ImageFormatError, match="uint16") as info:
        array_to_raw(rgb[:, :, 0].copy(), "mono16")
    assert cause_of(info) == "bad_array"
    with pytest.raises(ImageFormatError, match="row_padding must be >= 0") as info:
        array_to_raw(rgb, "rgb8", row_padding=-1)
    assert cause_of(info) == "bad_step"
    with pytest.raises(ImageFormatError, match="expected HxWx3 uint8 RGB") as info:
        rgb_to_encoding(rgb[:, :, 0], "mono8")
    assert cause_of(info) == "bad_array"
    with pytest.raises(ImageFormatError, match="'yuv422'") as info:
        rgb_to_encoding(rgb, "yuv422")
    assert cause_of(info) == "unsupported_encoding"


@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
def test_rgb_to_encoding_inverts_image_to_rgb(encoding: str) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)
    if encoding.startswith("mono"):
        rgb = np.repeat(rgb[:, :, :1], 3, axis=2)  # grey input survives the round trip exactly
    raw = array_to_raw(rgb_to_encoding(rgb, encoding), encoding)
    np.testing.assert_array_equal(image_to_rgb(raw), rgb)


def test_grey_encodings_use_opencv_luma_and_alpha_is_opaque(rgb: np.ndarray) -> None:
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    np.testing.assert_array_equal(rgb_to_encoding(rgb, "mono8"), grey)
    np.testing.assert_array_equal(rgb_to_encoding(rgb, "mono16"), grey.astype(np.uint16) * 257)
    bgra = rgb_to_encoding(rgb, "bgra8")
    np.testing.assert_array_equal(bgra[:, :, :3], rgb[:, :, ::-1])
    assert (bgra[:, :, 3] == 255).all()


@pytest.mark.parametrize("encoding", MASK_ENCODINGS)
def test_masks_are_read_as_class_ids(encoding: str) -> None:
    mask = np.arange(35, dtype=np.uint8).reshape(5, 7)
    mask[0] = 255
    raw = replace(array_to_raw(mask, "mono8", row_padding=2), encoding=encoding)
    out = image_to_mask(raw)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, mask)


def test_a_colour_image_is_not_a_mask(rgb: np.ndarray) -> None:
    with pytest.raises(ImageFormatError, match=r"'rgb8'.*mono8, 8UC1") as info:
        image_to_mask(array_to_raw(rgb, "rgb8"))
    assert cause_of(info) == "unsupported_encoding"


def test_png_is_lossless_and_jpeg_close() -> None:
    rng = np.random.default_rng(3)
    noisy = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    png = rgb_to_compressed(noisy, "png")
    assert png.format == "rgb8; png compressed bgr8"
    np.testing.assert_array_equal(compressed_to_rgb(png), noisy)
    # Smooth content: JPEG keeps it within a few grey levels.
    ramp = np.linspace(0, 255, 64, dtype=np.float32)
    smooth = np.stack(
        [np.tile(ramp, (48, 1)), np.tile(ramp[::-1], (48, 1)), np.full((48, 64), 128.0)], axis=2
    ).astype(np.uint8)
    jpeg = rgb_to_compressed(smooth)
    assert jpeg.format == "rgb8; jpeg compressed bgr8"
    assert np.abs(compressed_to_rgb(jpeg).astype(int) - smooth.astype(int)).mean() < 3.0


def test_jpeg_quality_is_applied() -> None:
    rgb = np.random.default_rng(4).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    low = rgb_to_compressed(rgb, "jpeg", jpeg_quality=10)
    high = rgb_to_compressed(rgb, "jpeg", jpeg_quality=95)
    assert low.data.size < high.data.size


def test_foreign_png_is_decoded_to_rgb() -> None:
    """OpenCV decodes to BGR whatever ``format`` says; the codec swaps to RGB."""
    rgb = np.zeros((4, 6, 3), dtype=np.uint8)
    rgb[:, :, 0] = 250  # pure red
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    np.testing.assert_array_equal(compressed_to_rgb(CompressedPayload("png", png.reshape(-1))), rgb)


@pytest.mark.parametrize(
    ("fmt", "data", "cause", "match"),
    [
        ("jpeg", b"definitely not a jpeg", "decode_failed", "cannot decode"),
        ("jpeg", b"", "zero_size", "no data"),
        ("16UC1; compressedDepth", b"x", "unsupported_encoding", "depth"),
    ],
)
def test_unusable_compressed_payloads(fmt: str, data: bytes, cause: str, match: str) -> None:
    payload = CompressedPayload(fmt, np.frombuffer(data, dtype=np.uint8))
    with pytest.raises(ImageFormatError, match=match) as info:
        compressed_to_rgb(payload)
    assert cause_of(info) == cause


def test_compressed_size_limits() -> None:
    payload = rgb_to_compressed(np.zeros((20, 30, 3), dtype=np.uint8), "png")
    assert compressed_to_rgb(payload, max_pixels=600).shape == (20, 30, 3)
    with pytest.raises(ImageFormatError, match="600 pixels exceeds the limit of 599") as info:
        compressed_to_rgb(payload, max_pixels=599)
    assert cause_of(info) == "too_large"
    # A payload bigger than three bytes per allowed pixel is refused before decoding.
    with pytest.raises(ImageFormatError, match="compressed payload of") as info:
        compressed_to_rgb(payload, max_pixels=payload.data.size // 3 - 1)
    assert cause_of(info) == "too_large"


def test_compressing_needs_an_rgb_array_and_a_known_format(rgb: np.ndarray) -> None:
    with pytest.raises(ImageFormatError, match="expected HxWx3 uint8 RGB") as info:
        rgb_to_compressed(rgb[:, :, 0], "png")
    assert cause_of(info) == "bad_array"
    with pytest.raises(ImageFormatError, match=r"'bmp'.*jpeg, png") as info:
        rgb_to_compressed(rgb, "bmp")
    assert cause_of(info) == "unsupported_encoding"
    assert set(COMPRESSED_FORMATS) == {"jpeg", "png"}
