"""numpy <-> sensor_msgs conversions on real message objects (no DDS involved)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from mess_ros.ros.conversions import (
    SUPPORTED_ENCODINGS,
    array_to_image,
    compressed_to_rgb,
    image_to_array,
    image_to_rgb,
    mask_to_image,
    rgb_to_compressed,
    rgb_to_encoding,
    scale_camera_info,
)
from mess_ros.ros.errors import (
    CompressedImageError,
    EmptyImageError,
    ImageConversionError,
    ImageDataLengthError,
    ImageStepError,
    ImageTooLargeError,
    UnsupportedEncodingError,
)


@pytest.fixture
def rgb() -> np.ndarray:
    """A 5x7 image whose every pixel differs, so a swapped channel or row shows."""
    return np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)


def encode(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """``rgb`` in the channel layout of ``encoding`` (what a driver would put in the message)."""
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


def expected_rgb(rgb: np.ndarray, encoding: str) -> np.ndarray:
    if encoding.startswith("mono"):
        return np.repeat(rgb[:, :, :1], 3, axis=2)
    return rgb


@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
@pytest.mark.parametrize("row_padding", [0, 5])
@pytest.mark.parametrize("big_endian", [False, True])
def test_round_trip_every_encoding(
    rgb: np.ndarray, encoding: str, row_padding: int, big_endian: bool
) -> None:
    pixels = encode(rgb, encoding)
    msg = array_to_image(pixels, encoding, row_padding=row_padding, is_bigendian=big_endian)
    assert (msg.height, msg.width) == (5, 7)
    assert msg.step == 7 * pixels.itemsize * (pixels.shape[2] if pixels.ndim == 3 else 1) + (
        row_padding
    )
    assert len(msg.data) == msg.step * msg.height
    np.testing.assert_array_equal(image_to_array(msg), pixels)
    out = image_to_rgb(msg)
    assert out.dtype == np.uint8
    assert out.shape == (5, 7, 3)
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, expected_rgb(rgb, encoding))


def test_big_endian_flag_is_honoured() -> None:
    """The same bytes read as little or big endian give different values."""
    msg = Image(height=1, width=2, encoding="mono16", step=4, is_bigendian=True)
    msg.data = bytes([0x01, 0x02, 0xFF, 0x00])
    np.testing.assert_array_equal(image_to_array(msg), [[0x0102, 0xFF00]])
    msg.is_bigendian = False
    np.testing.assert_array_equal(image_to_array(msg), [[0x0201, 0x00FF]])
    # 8 most significant bits of the big-endian values: 0x01 and 0xFF.
    msg.is_bigendian = True
    np.testing.assert_array_equal(image_to_rgb(msg)[0, :, 0], [0x01, 0xFF])


def test_padding_bytes_are_ignored(rgb: np.ndarray) -> None:
    msg = array_to_image(rgb, "rgb8", row_padding=3)
    data = np.frombuffer(msg.data, dtype=np.uint8).copy().reshape(5, msg.step)
    data[:, -3:] = 255
    msg.data = data.tobytes()
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)


def test_header_is_kept(rgb: np.ndarray) -> None:
    header = Header(frame_id="camera_optical")
    header.stamp.sec = 12
    header.stamp.nanosec = 345
    msg = mask_to_image(rgb[:, :, 0].copy(), header)
    assert msg.encoding == "mono8"
    assert msg.header.frame_id == "camera_optical"
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (12, 345)


def test_wrong_data_length_names_the_sizes(rgb: np.ndarray) -> None:
    msg = array_to_image(rgb, "rgb8")
    msg.data = bytes(len(msg.data) - 1)
    with pytest.raises(ImageDataLengthError, match=r"data length 104 .* 21 \* 5 = 105"):
        image_to_rgb(msg)
    msg.data = bytes(len(msg.data) + 2)
    with pytest.raises(ImageDataLengthError):
        image_to_rgb(msg)


def test_wrong_height_is_a_length_error(rgb: np.ndarray) -> None:
    msg = array_to_image(rgb, "rgb8")
    msg.height = 6
    with pytest.raises(ImageDataLengthError):
        image_to_rgb(msg)


def test_step_smaller_than_a_row(rgb: np.ndarray) -> None:
    msg = array_to_image(rgb, "rgb8")
    msg.step = 20
    with pytest.raises(ImageStepError, match=r"step 20 is smaller than one row .*\(21 bytes\)"):
        image_to_rgb(msg)


def test_unsupported_encoding_lists_supported(rgb: np.ndarray) -> None:
    msg = array_to_image(rgb, "rgb8")
    msg.encoding = "yuv422"
    with pytest.raises(UnsupportedEncodingError, match=r"'yuv422'.*rgb8, bgr8"):
        image_to_rgb(msg)


@pytest.mark.parametrize(("height", "width"), [(0, 7), (5, 0), (0, 0)])
def test_zero_size(height: int, width: int) -> None:
    msg = Image(height=height, width=width, encoding="rgb8", step=width * 3)
    with pytest.raises(EmptyImageError, match="zero size"):
        image_to_rgb(msg)


def test_size_limit(rgb: np.ndarray) -> None:
    msg = array_to_image(rgb, "rgb8")
    assert image_to_rgb(msg, max_pixels=35).shape == (5, 7, 3)
    with pytest.raises(ImageTooLargeError, match="35 pixels exceeds the limit of 34"):
        image_to_rgb(msg, max_pixels=34)


def test_absurd_header_fails_before_allocating() -> None:
    msg = Image(height=2**31 - 1, width=2**31 - 1, encoding="rgb8", step=3 * (2**31 - 1))
    with pytest.raises(ImageTooLargeError):
        image_to_rgb(msg)


def test_errors_carry_distinct_causes() -> None:
    causes = {
        cls.cause
        for cls in (
            UnsupportedEncodingError,
            EmptyImageError,
            ImageTooLargeError,
            ImageStepError,
            ImageDataLengthError,
            CompressedImageError,
        )
    }
    assert len(causes) == 6


def test_array_that_does_not_fit_the_encoding(rgb: np.ndarray) -> None:
    with pytest.raises(ImageConversionError, match="HxWx4"):
        array_to_image(rgb, "rgba8")
    with pytest.raises(ImageConversionError, match="uint16"):
        array_to_image(rgb[:, :, 0].copy(), "mono16")


def test_compressed_round_trip() -> None:
    # Smooth content: JPEG keeps it within a few grey levels.
    ramp = np.linspace(0, 255, 64, dtype=np.float32)
    rgb = np.stack(
        [np.tile(ramp, (48, 1)), np.tile(ramp[::-1], (48, 1)), np.full((48, 64), 128.0)], axis=2
    ).astype(np.uint8)
    header = Header(frame_id="cam")
    msg = rgb_to_compressed(rgb, header)
    assert msg.header.frame_id == "cam"
    out = compressed_to_rgb(msg)
    assert out.shape == (48, 64, 3)
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() < 3.0


def test_compressed_png_is_decoded_to_rgb() -> None:
    rgb = np.zeros((4, 6, 3), dtype=np.uint8)
    rgb[:, :, 0] = 250  # pure red
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    msg = CompressedImage(format="png")
    msg.data = png.tobytes()
    np.testing.assert_array_equal(compressed_to_rgb(msg), rgb)


def test_compressed_garbage_and_empty() -> None:
    msg = CompressedImage(format="jpeg")
    msg.data = b"definitely not a jpeg"
    with pytest.raises(CompressedImageError, match="cannot decode"):
        compressed_to_rgb(msg)
    msg.data = b""
    with pytest.raises(EmptyImageError):
        compressed_to_rgb(msg)
    msg.format = "16UC1; compressedDepth"
    msg.data = b"x"
    with pytest.raises(UnsupportedEncodingError, match="depth"):
        compressed_to_rgb(msg)


def test_compressed_size_limit() -> None:
    msg = rgb_to_compressed(np.zeros((20, 30, 3), dtype=np.uint8))
    with pytest.raises(ImageTooLargeError):
        compressed_to_rgb(msg, max_pixels=599)


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


@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
def test_rgb_to_encoding_inverts_image_to_rgb(encoding: str) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)
    if encoding.startswith("mono"):
        rgb = np.repeat(rgb[:, :, :1], 3, axis=2)  # grey input survives the round trip exactly
    msg = array_to_image(rgb_to_encoding(rgb, encoding), encoding)
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)
