"""Camera, mask and camera-info messages <-> numpy, on ``rosbags`` message objects.

The decoders mirror the node's own conversions (same encodings, ``step``
padding, byte order, ``mono16`` keeps its high byte), so a frame evaluated
offline is pixel for pixel the frame the node sees in a live replay. They
only read attributes, so they take rclpy messages as well.

A message that cannot be used raises :class:`~mess_ros.eval.errors.FrameError`
with a short reason the reader counts frames under; the encoders exist so
datasets can be packaged as bags and tests can produce every layout a real
camera driver sends.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from functools import cache
from typing import Any, Final, Protocol

import cv2
import numpy as np
import numpy.typing as npt
from rosbags.serde import SerdeError
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.store import Typestore

from mess_ros.eval.errors import BagError, FrameError

U8Array = npt.NDArray[np.uint8]

IMAGE_TYPE: Final = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE: Final = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO_TYPE: Final = "sensor_msgs/msg/CameraInfo"
LOAD_TYPE: Final = "std_msgs/msg/Float32"
IMAGE_TYPES: Final = (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE)

# The raw encodings the node accepts: channels and bytes per channel of each.
RAW_ENCODINGS: Final[dict[str, tuple[int, int]]] = {
    "rgb8": (3, 1),
    "bgr8": (3, 1),
    "rgba8": (4, 1),
    "bgra8": (4, 1),
    "mono8": (1, 1),
    "mono16": (1, 2),
}
COMPRESSED_FORMATS: Final = ("jpeg", "png")
# What the writer can produce: every raw encoding plus the two compressed payloads.
IMAGE_FORMATS: Final = (*RAW_ENCODINGS, *COMPRESSED_FORMATS)
MASK_ENCODINGS: Final = ("mono8", "8UC1")
# Anything far above a 4K frame is a corrupted header, not a camera (same limit as the node).
MAX_IMAGE_PIXELS: Final = 4096 * 4096

# Encapsulation headers of plain CDR (big and little endian).
_CDR_BIG: Final = b"\x00\x00"
_CDR_LITTLE: Final = b"\x00\x01"

# What garbage bytes make the CDR deserializer raise.
CDR_ERRORS: Final = (SerdeError, ValueError, IndexError, KeyError, OverflowError, struct.error)


@cache
def typestore() -> Typestore:
    """Message definitions for reading and writing bags (ROS 2 Kilted, else the newest known)."""
    store = getattr(Stores, "ROS2_KILTED", Stores.LATEST)
    return get_typestore(store)


def deserialize(raw: bytes, msgtype: str, what: str) -> Any:
    """A message object from CDR bytes; garbage is a :class:`FrameError` ("corrupt <what>")."""
    try:
        return typestore().deserialize_cdr(raw, msgtype)
    except CDR_ERRORS as err:
        raise FrameError(f"cannot deserialize {what} message: {err}", f"corrupt {what}") from err


class ImageLike(Protocol):
    """The fields of ``sensor_msgs/Image`` the decoders need (rosbags and rclpy messages alike)."""

    @property
    def height(self) -> int: ...
    @property
    def width(self) -> int: ...
    @property
    def encoding(self) -> str: ...
    @property
    def is_bigendian(self) -> int: ...
    @property
    def step(self) -> int: ...
    @property
    def data(self) -> Any: ...


class CompressedLike(Protocol):
    """The fields of ``sensor_msgs/CompressedImage`` the decoder needs."""

    @property
    def format(self) -> str: ...
    @property
    def data(self) -> Any: ...


def _raw_pixels(msg: ImageLike, allowed: Iterable[str]) -> np.ndarray:
    """``msg``'s pixels in their native layout after every size check, step padding cut away."""
    encoding = str(msg.encoding)
    if encoding not in allowed:
        supported = ", ".join(allowed)
        raise FrameError(
            f"unsupported encoding {encoding!r}; supported encodings: {supported}",
            "unsupported encoding",
        )
    channels, bytes_per_channel = RAW_ENCODINGS.get(encoding, (1, 1))
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise FrameError(f"image has zero size ({width}x{height})", "empty image")
    if height * width > MAX_IMAGE_PIXELS:
        raise FrameError(
            f"image of {width}x{height} pixels exceeds the limit of {MAX_IMAGE_PIXELS} pixels",
            "image too large",
        )
    row_bytes = width * channels * bytes_per_channel
    if step < row_bytes:
        raise FrameError(
            f"step {step} is smaller than one row of {width} {encoding} pixels ({row_bytes} bytes)",
            "wrong size",
        )
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size != step * height:
        raise FrameError(
            f"data length {data.size} does not match step * height = {step * height} bytes "
            f"({width}x{height} {encoding})",
            "wrong size",
        )
    rows = data.reshape(height, step)[:, :row_bytes]
    if bytes_per_channel == 2:
        dtype = np.dtype(">u2" if msg.is_bigendian else "<u2")
        return np.ascontiguousarray(rows).view(dtype).astype(np.uint16).reshape(height, width)
    if channels == 1:
        return rows
    return rows.reshape(height, width, channels)


def decode_image(msg: ImageLike) -> U8Array:
    """A raw ``sensor_msgs/Image`` as HxWx3 RGB uint8, converted exactly as the node does.

    Alpha is dropped, grey is replicated and ``mono16`` keeps its 8 most
    significant bits, so offline and live evaluation see identical pixels.
    """
    pixels = _raw_pixels(msg, RAW_ENCODINGS)
    encoding = str(msg.encoding)
    if encoding == "mono16":
        pixels = (pixels >> 8).astype(np.uint8)
    if encoding in ("mono8", "mono16"):
        grey = np.ascontiguousarray(pixels, dtype=np.uint8)
        return np.asarray(cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB), dtype=np.uint8)
    if encoding in ("rgb8", "rgba8"):
        return np.ascontiguousarray(pixels[:, :, :3], dtype=np.uint8)
    return np.ascontiguousarray(pixels[:, :, 2::-1], dtype=np.uint8)


def decode_compressed(msg: CompressedLike) -> U8Array:
    """A JPEG or PNG ``sensor_msgs/CompressedImage`` as HxWx3 RGB uint8.

    OpenCV always decodes colour to BGR whatever ``format`` claims, so the
    result is only swapped to RGB, as the node does.
    """
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise FrameError("compressed image has no data", "undecodable image")
    if "compresseddepth" in str(msg.format).lower():
        raise FrameError(
            f"compressed format {msg.format!r} is a depth image; expected JPEG or PNG colour",
            "unsupported encoding",
        )
    decoded = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if decoded is None:
        raise FrameError(
            f"cannot decode {data.size} bytes of compressed image (format {msg.format!r}); "
            "expected a JPEG or PNG payload",
            "undecodable image",
        )
    if decoded.shape[0] * decoded.shape[1] > MAX_IMAGE_PIXELS:
        raise FrameError(
            f"decoded image of {decoded.shape[1]}x{decoded.shape[0]} pixels exceeds the limit",
            "image too large",
        )
    return np.asarray(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB), dtype=np.uint8)


def decode_mask(msg: ImageLike) -> U8Array:
    """A ``mono8`` class-id mask as HxW uint8 (a copy: the message buffer is not kept alive)."""
    return np.array(_raw_pixels(msg, MASK_ENCODINGS), dtype=np.uint8)


def stamp_to_ns(msg: Any) -> int:
    """``header.stamp`` of ``msg`` in nanoseconds."""
    stamp = msg.header.stamp
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _header(stamp_ns: int, frame_id: str) -> Any:
    types = typestore().types
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    stamp = types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)
    return types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)


def _check_rgb(rgb: np.ndarray) -> None:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise FrameError(
            f"image of shape {rgb.shape} and dtype {rgb.dtype}; expected HxWx3 uint8 RGB",
            "wrong size",
        )


def encode_image(
    rgb: np.ndarray,
    encoding: str,
    stamp_ns: int,
    frame_id: str = "camera",
    *,
    row_padding: int = 0,
    big_endian: bool = False,
) -> Any:
    """An RGB image as a ``sensor_msgs/Image`` in ``encoding`` (rosbags message object).

    ``mono16`` stores grey * 257, so the node's high-byte conversion gives
    back the grey value exactly; ``row_padding`` and ``big_endian`` produce
    the layouts real drivers send, which the tests use to exercise decoding.
    """
    _check_rgb(rgb)
    if encoding not in RAW_ENCODINGS:
        raise BagError(
            f"unknown image encoding {encoding!r}; expected one of {', '.join(RAW_ENCODINGS)}"
        )
    if row_padding < 0:
        raise BagError(f"row_padding must be >= 0, got {row_padding}")
    pixels: np.ndarray
    if encoding == "rgb8":
        pixels = rgb
    elif encoding == "bgr8":
        pixels = rgb[:, :, ::-1]
    elif encoding in ("rgba8", "bgra8"):
        colour = rgb if encoding == "rgba8" else rgb[:, :, ::-1]
        alpha = np.full((*rgb.shape[:2], 1), 255, dtype=np.uint8)
        pixels = np.concatenate([colour, alpha], axis=2)
    else:
        grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
        if encoding == "mono16":
            pixels = grey.astype(np.uint16) * np.uint16(257)
            pixels = pixels.astype(">u2" if big_endian else "<u2")
        else:
            pixels = grey
    height, width = rgb.shape[:2]
    rows = np.ascontiguousarray(pixels).view(np.uint8).reshape(height, -1)
    if row_padding:
        rows = np.pad(rows, ((0, 0), (0, row_padding)))
    return typestore().types[IMAGE_TYPE](
        header=_header(stamp_ns, frame_id),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=int(big_endian and encoding == "mono16"),
        step=rows.shape[1],
        data=np.ascontiguousarray(rows).reshape(-1),
    )


def encode_compressed(rgb: np.ndarray, fmt: str, stamp_ns: int, frame_id: str = "camera") -> Any:
    """An RGB image as a JPEG (quality 95) or lossless PNG ``sensor_msgs/CompressedImage``."""
    _check_rgb(rgb)
    if fmt not in COMPRESSED_FORMATS:
        raise BagError(f"unknown compressed format {fmt!r}; expected one of {COMPRESSED_FORMATS}")
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if fmt == "jpeg" else []
    ok, encoded = cv2.imencode(f".{'jpg' if fmt == 'jpeg' else 'png'}", rgb[:, :, ::-1], params)
    if not ok:
        raise FrameError(f"{fmt} encoding of a {rgb.shape} image failed", "undecodable image")
    return typestore().types[COMPRESSED_IMAGE_TYPE](
        header=_header(stamp_ns, frame_id),
        format=f"rgb8; {fmt} compressed bgr8",
        data=np.asarray(encoded, dtype=np.uint8).reshape(-1),
    )


def encode_mask(mask: np.ndarray, stamp_ns: int, frame_id: str = "camera") -> Any:
    """A class-id mask as a ``mono8`` ``sensor_msgs/Image``."""
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise FrameError(
            f"mask of shape {mask.shape} and dtype {mask.dtype}; expected HxW uint8", "wrong size"
        )
    height, width = mask.shape
    return typestore().types[IMAGE_TYPE](
        header=_header(stamp_ns, frame_id),
        height=height,
        width=width,
        encoding="mono8",
        is_bigendian=0,
        step=width,
        data=np.ascontiguousarray(mask).reshape(-1),
    )


def pinhole_camera_info(height: int, width: int, stamp_ns: int, frame_id: str = "camera") -> Any:
    """A distortion-free ``CameraInfo`` with a 90 degree horizontal field of view.

    Datasets rarely ship calibration; a plausible pinhole model keeps
    consumers that need camera_info (rectification, projection) working.
    """
    types = typestore().types
    focal = width / 2.0
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    return types[CAMERA_INFO_TYPE](
        header=_header(stamp_ns, frame_id),
        height=height,
        width=width,
        distortion_model="plumb_bob",
        d=np.zeros(5, dtype=np.float64),
        k=np.array([focal, 0, cx, 0, focal, cy, 0, 0, 1], dtype=np.float64),
        r=np.eye(3, dtype=np.float64).reshape(-1),
        p=np.array([focal, 0, cx, 0, 0, focal, cy, 0, 0, 0, 1, 0], dtype=np.float64),
        binning_x=0,
        binning_y=0,
        roi=types["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
        ),
    )


def serialize(msg: Any) -> bytes:
    """CDR bytes of a rosbags message object, as stored in bags and sent over DDS."""
    return bytes(typestore().serialize_cdr(msg, msg.__msgtype__))


def restamp(message: bytes, stamp_ns: int) -> bytes:
    """``message`` (CDR) with its ``header.stamp`` replaced, without decoding the image.

    Every stamped sensor message starts with its header, so the stamp sits
    right after the 4-byte encapsulation header (sec int32, nanosec uint32)
    in plain CDR, which is what rosbag2 records from ROS 2 publishers.
    """
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    kind = message[:2]
    if kind not in (_CDR_BIG, _CDR_LITTLE) or len(message) < 12:
        raise FrameError(
            f"cannot restamp a message with CDR encapsulation {kind.hex()!r}; expected plain CDR",
            "unsupported serialization",
        )
    patched = bytearray(message)
    struct.pack_into("<iI" if kind == _CDR_LITTLE else ">iI", patched, 4, sec, nanosec)
    return bytes(patched)
