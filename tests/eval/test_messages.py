"""Image, mask and camera-info messages <-> numpy, in every layout a camera driver sends."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mess_ros.common.stamps import header_stamp_ns
from mess_ros.data.image_codec import SUPPORTED_ENCODINGS
from mess_ros.eval.errors import BagError, FrameError
from mess_ros.eval.messages import (
    COMPRESSED_IMAGE_TYPE,
    IMAGE_FORMATS,
    IMAGE_TYPE,
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
)

RNG = np.random.default_rng(7)
RGB = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
GREY = cv2.cvtColor(RGB, cv2.COLOR_RGB2GRAY)


def expected_rgb(encoding: str) -> np.ndarray:
    """What the node makes of ``RGB`` sent in ``encoding`` (grey encodings lose colour)."""
    if encoding.startswith("mono"):
        return np.repeat(GREY[:, :, None], 3, axis=2)
    return RGB


@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
@pytest.mark.parametrize(("row_padding", "big_endian"), [(0, False), (3, True)])
def test_raw_encodings_round_trip_through_cdr(
    encoding: str, row_padding: int, big_endian: bool
) -> None:
    msg = encode_image(
        RGB, encoding, 1_234_567_890_123, row_padding=row_padding, big_endian=big_endian
    )
    decoded = deserialize(serialize(msg), IMAGE_TYPE, "image")
    assert decoded.encoding == encoding
    assert decoded.is_bigendian == int(big_endian and encoding == "mono16")
    assert header_stamp_ns(decoded) == 1_234_567_890_123
    np.testing.assert_array_equal(decode_image(decoded), expected_rgb(encoding))


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
    out = decode_mask(decoded)
    np.testing.assert_array_equal(out, mask)
    assert out.flags.owndata  # a copy: frames waiting for their mask do not pin message buffers


def test_unsupported_encoding_is_a_frame_error_listing_the_supported_ones() -> None:
    msg = encode_image(RGB, "rgb8", 0)
    msg.encoding = "yuv422"
    with pytest.raises(FrameError, match=r"yuv422.*rgb8") as info:
        decode_image(msg)
    assert info.value.reason == "unsupported_encoding"


def test_mask_must_be_mono8() -> None:
    with pytest.raises(FrameError, match="unsupported encoding 'rgb8'"):
        decode_mask(encode_image(RGB, "rgb8", 0))


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"step": 5}, "bad_step"),
        ({"height": 6}, "bad_data_length"),
        ({"width": 0}, "zero_size"),
        ({"height": 5000, "width": 5000}, "too_large"),
    ],
)
def test_unusable_images_are_frame_errors_under_their_report_reason(
    changes: dict[str, int], reason: str
) -> None:
    msg = encode_image(RGB, "rgb8", 0)
    for field, value in changes.items():
        setattr(msg, field, value)
    with pytest.raises(FrameError) as info:
        decode_image(msg)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("payload", "fmt", "reason"),
    [
        (b"not an image at all", "png", "decode_failed"),
        (b"", "png", "zero_size"),
        (b"x", "16UC1; compressedDepth", "unsupported_encoding"),
    ],
)
def test_unusable_compressed_payloads_are_frame_errors(
    payload: bytes, fmt: str, reason: str
) -> None:
    msg = encode_compressed(RGB, "png", 0)
    msg.data = np.frombuffer(payload, dtype=np.uint8)
    msg.format = fmt
    with pytest.raises(FrameError) as info:
        decode_compressed(msg)
    assert info.value.reason == reason


def test_samples_that_do_not_fit_are_skippable_frame_errors() -> None:
    for encode in (
        lambda: encode_image(GREY, "mono8", 0),
        lambda: encode_compressed(GREY, "png", 0),
        lambda: encode_mask(RGB, 0),
    ):
        with pytest.raises(FrameError) as info:
            encode()
        assert info.value.reason == "wrong size"


def test_bad_writer_options_are_bag_errors_not_frame_errors() -> None:
    for encode in (
        lambda: encode_image(RGB, "yuv422", 0),
        lambda: encode_image(RGB, "rgb8", 0, row_padding=-1),
        lambda: encode_compressed(RGB, "bmp", 0),
    ):
        with pytest.raises(BagError) as info:
            encode()
        assert not isinstance(info.value, FrameError)


def test_writer_formats_are_the_raw_encodings_and_compressed_payloads() -> None:
    assert (*SUPPORTED_ENCODINGS, "jpeg", "png") == IMAGE_FORMATS


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
    assert header_stamp_ns(decoded) == 11


def test_restamping_rewrites_only_the_header_stamp() -> None:
    raw = serialize(encode_image(RGB, "rgb8", 1_000_000_000_123))
    patched = restamp(raw, 42_000_000_007)
    decoded = deserialize(patched, IMAGE_TYPE, "image")
    assert header_stamp_ns(decoded) == 42_000_000_007
    np.testing.assert_array_equal(decode_image(decoded), RGB)
    assert len(patched) == len(raw)


def test_restamping_refuses_other_serializations() -> None:
    with pytest.raises(FrameError, match="encapsulation '0003'"):
        restamp(b"\x00\x03\x00\x00" + bytes(16), 1)
