"""Image, mask and camera-info messages <-> numpy, in every layout a camera driver sends."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mess_ros.eval.errors import FrameError
from mess_ros.eval.messages import (
    COMPRESSED_IMAGE_TYPE,
    IMAGE_TYPE,
    RAW_ENCODINGS,
    decode_compressed,
    decode_image,
    decode_mask,
    deserialize,
    encode_compressed,
    encode_image,
    encode_mask,
    pinhole_camera_info,
    restamp,
    serialize,
    stamp_to_ns,
)

RNG = np.random.default_rng(7)
RGB = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
GREY = cv2.cvtColor(RGB, cv2.COLOR_RGB2GRAY)


def expected_rgb(encoding: str) -> np.ndarray:
    """What the node makes of ``RGB`` sent in ``encoding`` (grey encodings lose colour)."""
    if encoding.startswith("mono"):
        return np.repeat(GREY[:, :, None], 3, axis=2)
    return RGB


@pytest.mark.parametrize("encoding", list(RAW_ENCODINGS))
@pytest.mark.parametrize("row_padding", [0, 3])
def test_raw_encodings_round_trip_through_cdr(encoding: str, row_padding: int) -> None:
    msg = encode_image(RGB, encoding, 1_234_567_890_123, row_padding=row_padding)
    decoded = deserialize(serialize(msg), IMAGE_TYPE, "image")
    assert decoded.encoding == encoding
    assert stamp_to_ns(decoded) == 1_234_567_890_123
    np.testing.assert_array_equal(decode_image(decoded), expected_rgb(encoding))


@pytest.mark.parametrize("big_endian", [False, True])
def test_mono16_is_read_in_its_byte_order_keeping_the_high_byte(big_endian: bool) -> None:
    """Like the node: the 8 most significant bits, never rounded up by the low byte."""
    values = GREY.astype(np.uint16) * 256 + 0xFF
    msg = encode_image(RGB, "mono16", 0, big_endian=big_endian)
    msg.data = values.astype(">u2" if big_endian else "<u2").view(np.uint8).reshape(-1)
    assert msg.is_bigendian == int(big_endian)
    np.testing.assert_array_equal(decode_image(msg)[:, :, 0], GREY)


def test_png_is_lossless_and_jpeg_close() -> None:
    png = deserialize(serialize(encode_compressed(RGB, "png", 5)), COMPRESSED_IMAGE_TYPE, "image")
    np.testing.assert_array_equal(decode_compressed(png), RGB)
    smooth = np.full((16, 16, 3), (200, 40, 90), dtype=np.uint8)
    jpeg = encode_compressed(smooth, "jpeg", 5)
    assert "jpeg" in jpeg.format
    assert np.abs(decode_compressed(jpeg).astype(int) - smooth).max() <= 8


def test_mask_round_trip_keeps_class_ids_and_ignore() -> None:
    mask = RNG.integers(0, 9, (5, 7), dtype=np.uint8)
    mask[0, :] = 255
    decoded = deserialize(serialize(encode_mask(mask, 9)), IMAGE_TYPE, "ground truth")
    np.testing.assert_array_equal(decode_mask(decoded), mask)


def test_unsupported_encoding_is_a_frame_error_listing_the_supported_ones() -> None:
    msg = encode_image(RGB, "rgb8", 0)
    msg.encoding = "yuv422"
    with pytest.raises(FrameError, match=r"yuv422.*rgb8") as info:
        decode_image(msg)
    assert info.value.reason == "unsupported encoding"


def test_mask_must_be_mono8() -> None:
    with pytest.raises(FrameError, match="unsupported encoding 'rgb8'"):
        decode_mask(encode_image(RGB, "rgb8", 0))


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("step", 5, "step 5 is smaller than one row"),
        ("height", 6, "data length"),
        ("width", 0, "zero size"),
    ],
)
def test_inconsistent_sizes_are_frame_errors(field: str, value: int, match: str) -> None:
    msg = encode_image(RGB, "rgb8", 0)
    setattr(msg, field, value)
    with pytest.raises(FrameError, match=match):
        decode_image(msg)


def test_garbage_compressed_payload_is_a_frame_error() -> None:
    msg = encode_compressed(RGB, "png", 0)
    msg.data = np.frombuffer(b"not an image at all", dtype=np.uint8)
    with pytest.raises(FrameError, match="cannot decode") as info:
        decode_compressed(msg)
    assert info.value.reason == "undecodable image"


def test_garbage_cdr_is_a_frame_error() -> None:
    with pytest.raises(FrameError) as info:
        deserialize(b"\x00\x01\x00\x00\xff\xff\xff\x7f", IMAGE_TYPE, "image")
    assert info.value.reason == "corrupt image"


def test_camera_info_is_a_pinhole_model_of_the_image() -> None:
    info = pinhole_camera_info(48, 64, 11)
    decoded = deserialize(serialize(info), "sensor_msgs/msg/CameraInfo", "camera info")
    assert (decoded.height, decoded.width) == (48, 64)
    assert decoded.k[0] == decoded.k[4] == 32.0
    assert decoded.k[2] == pytest.approx(31.5)
    assert stamp_to_ns(decoded) == 11


def test_restamping_rewrites_only_the_header_stamp() -> None:
    raw = serialize(encode_image(RGB, "rgb8", 1_000_000_000_123))
    patched = restamp(raw, 42_000_000_007)
    decoded = deserialize(patched, IMAGE_TYPE, "image")
    assert stamp_to_ns(decoded) == 42_000_000_007
    np.testing.assert_array_equal(decode_image(decoded), RGB)
    assert len(patched) == len(raw)


def test_restamping_refuses_other_serializations() -> None:
    with pytest.raises(FrameError, match="encapsulation '0003'"):
        restamp(b"\x00\x03\x00\x00" + bytes(16), 1)
