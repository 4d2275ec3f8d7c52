"""The rclpy glue around the image codec, on real message objects (no DDS involved)."""

from __future__ import annotations

import array
from typing import get_args

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from mess_ros.data.errors import (
    EmptyImageError,
    ImageArrayError,
    ImageDataLengthError,
    ImageDecodeError,
    ImageFormatCause,
    ImageFormatError,
    ImageStepError,
    ImageTooLargeError,
    UnsupportedEncodingError,
)
from mess_ros.data.image_codec import SUPPORTED_ENCODINGS
from mess_ros.eval.errors import FrameError
from mess_ros.eval.messages import decode_image
from mess_ros.ros.conversions import (
    array_to_image,
    compressed_to_rgb,
    image_to_array,
    image_to_rgb,
    mask_to_image,
    rgb_to_compressed,
    rgb_to_encoding,
    scale_camera_info,
)
from mess_ros.ros.core import BAD_INPUT_CAUSES


@pytest.fixture
def rgb() -> np.ndarray:
    """A 5x7 image whose every pixel differs, so a swapped channel or row shows."""
    return np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)


@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
@pytest.mark.parametrize(("row_padding", "big_endian"), [(0, False), (5, True)])
def test_round_trip_through_rclpy_messages(
    rgb: np.ndarray, encoding: str, row_padding: int, big_endian: bool
) -> None:
    pixels = rgb_to_encoding(rgb, encoding)
    msg = array_to_image(pixels, encoding, row_padding=row_padding, is_bigendian=big_endian)
    assert isinstance(msg, Image)
    assert isinstance(msg.data, array.array)
    assert len(msg.data) == msg.step * msg.height
    assert msg.is_bigendian == (big_endian and encoding == "mono16")
    np.testing.assert_array_equal(image_to_array(msg), pixels)
    grey = np.repeat(rgb_to_encoding(rgb, "mono8")[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(image_to_rgb(msg), grey if encoding.startswith("mono") else rgb)


def test_header_is_kept(rgb: np.ndarray) -> None:
    header = Header(frame_id="camera_optical")
    header.stamp.sec = 12
    header.stamp.nanosec = 345
    msg = mask_to_image(rgb[:, :, 0].copy(), header)
    assert msg.encoding == "mono8"
    assert msg.header.frame_id == "camera_optical"
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (12, 345)


def malformed(rgb: np.ndarray) -> dict[type[ImageFormatError], Image]:
    """One message per check the node counts drops under."""
    short = array_to_image(rgb, "rgb8")
    short.data = bytes(len(short.data) - 1)
    narrow = array_to_image(rgb, "rgb8")
    narrow.step = 20
    yuv = array_to_image(rgb, "rgb8")
    yuv.encoding = "yuv422"
    return {
        ImageDataLengthError: short,
        ImageStepError: narrow,
        UnsupportedEncodingError: yuv,
        EmptyImageError: Image(height=0, width=7, encoding="rgb8", step=21),
        ImageTooLargeError: Image(height=2**31 - 1, width=2**31 - 1, encoding="rgb8", step=3),
    }


def test_codec_errors_become_the_node_error_of_their_cause(rgb: np.ndarray) -> None:
    for error, msg in malformed(rgb).items():
        with pytest.raises(error) as info:
            image_to_rgb(msg)
        assert info.value.cause == error.cause


def test_the_bag_reader_counts_a_bad_image_under_the_node_s_tag(rgb: np.ndarray) -> None:
    """/diagnostics' dropped.<cause> and a bag report's skipped reason name one fault alike."""
    for error, msg in malformed(rgb).items():
        with pytest.raises(FrameError) as info:
            decode_image(msg)
        assert info.value.reason == error.cause


def test_drop_counter_names_are_codec_causes() -> None:
    """Each of the node's six bad-input counters is named after one codec check."""
    assert len(BAD_INPUT_CAUSES) == 6
    assert set(BAD_INPUT_CAUSES) <= set(get_args(ImageFormatCause))


def test_size_error_names_the_node_parameter(rgb: np.ndarray) -> None:
    msg = array_to_image(rgb, "rgb8")
    assert image_to_rgb(msg, max_pixels=35).shape == (5, 7, 3)
    with pytest.raises(ImageTooLargeError, match=r"limit of 34 .*node\.max_image_pixels"):
        image_to_rgb(msg, max_pixels=34)


def test_array_that_does_not_fit_the_encoding(rgb: np.ndarray) -> None:
    with pytest.raises(ImageArrayError, match="HxWx4") as info:
        array_to_image(rgb, "rgba8")
    assert info.value.cause == "bad_array"


def test_compressed_round_trip() -> None:
    # Smooth content: JPEG keeps it within a few grey levels.
    ramp = np.linspace(0, 255, 64, dtype=np.float32)
    rgb = np.stack(
        [np.tile(ramp, (48, 1)), np.tile(ramp[::-1], (48, 1)), np.full((48, 64), 128.0)], axis=2
    ).astype(np.uint8)
    msg = rgb_to_compressed(rgb, Header(frame_id="cam"))
    assert isinstance(msg, CompressedImage)
    assert msg.header.frame_id == "cam"
    assert msg.format == "rgb8; jpeg compressed bgr8"
    out = compressed_to_rgb(msg)
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() < 3.0


def test_compressed_errors() -> None:
    msg = CompressedImage(format="jpeg")
    msg.data = b"definitely not a jpeg"
    with pytest.raises(ImageDecodeError, match="cannot decode"):
        compressed_to_rgb(msg)
    msg.data = b""
    with pytest.raises(EmptyImageError):
        compressed_to_rgb(msg)
    too_big = rgb_to_compressed(np.zeros((20, 30, 3), dtype=np.uint8))
    with pytest.raises(ImageTooLargeError, match=r"node\.max_image_pixels"):
        compressed_to_rgb(too_big, max_pixels=599)


def test_scale_camera_info() -> None:
    info = CameraInfo(width=640, height=480, distortion_model="plumb_bob")
    info.header.frame_id = "cam"
    info.k = [500.0, 0.0, 320.0, 0.0, 510.0, 240.0, 0.0, 0.0, 1.0]
    info.p = [500.0, 0.0, 320.0, -25.0, 0.0, 510.0, 240.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    info.d = [0.1, -0.2, 0.0, 0.0, 0.0]
    info.roi.width = 640
    info.roi.height = 480
    out = scale_camera_info(info, 240, 320)
    assert (out.width, out.height) == (320, 240)
    np.testing.assert_allclose(out.k, [250, 0, 160, 0, 255, 120, 0, 0, 1])
    np.testing.assert_allclose(out.p, [250, 0, 160, -12.5, 0, 255, 120, 0, 0, 0, 1, 0])
    np.testing.assert_allclose(out.d, info.d)
    assert (out.roi.width, out.roi.height) == (320, 240)
    assert out.header.frame_id == "cam"
    assert out.distortion_model == "plumb_bob"
