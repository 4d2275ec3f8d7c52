"""Camera, mask and camera-info messages <-> numpy, on ``rosbags`` message objects.

Pixels are decoded and encoded by :mod:`mess_ros.data.image_codec`, the codec
the node uses too, so a frame evaluated offline is pixel for pixel the frame
the node sees in a live replay. The decoders only read attributes, so they
take rclpy messages as well. This module adds what is particular to bags:
``rosbags`` message classes, CDR (de)serialisation and restamping.

A message that cannot be used raises :class:`~mess_ros.eval.errors.FrameError`
with a short reason the reader counts frames under; the encoders exist so
datasets can be packaged as bags and tests can produce every layout a real
camera driver sends.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from typing import Any, Final

import numpy as np
from rosbags.serde import SerdeError
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.store import Typestore

from mess_ros.common.stamps import split_ns
from mess_ros.data import image_codec
from mess_ros.data.errors import ImageFormatCause, ImageFormatError
from mess_ros.data.image_codec import (
    COMPRESSED_FORMATS,
    SUPPORTED_ENCODINGS,
    CompressedLike,
    ImageLike,
    U8Array,
)
from mess_ros.eval.errors import BagError, FrameError

IMAGE_TYPE: Final = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE: Final = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO_TYPE: Final = "sensor_msgs/msg/CameraInfo"
LOAD_TYPE: Final = "std_msgs/msg/Float32"
IMAGE_TYPES: Final = (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE)

# What the writer can produce: every raw encoding plus the two compressed payloads.
IMAGE_FORMATS: Final = (*SUPPORTED_ENCODINGS, *COMPRESSED_FORMATS)

# Encoding problems of one sample skip that sample; any other cause is a bad writer option
# (encoding name, padding) and stops the writer with a BagError.
_ENCODE_REASONS: Final[Mapping[ImageFormatCause, str]] = {
    "bad_array": "wrong size",
    "encode_failed": "undecodable image",
}

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


@contextmanager
def _decode_errors() -> Iterator[None]:
    """Codec errors of a recorded frame as :class:`FrameError` counted under the codec's cause.

    The node counts the same frame under the same tag (``dropped.<cause>``).
    """
    try:
        yield
    except ImageFormatError as err:
        raise FrameError(str(err), err.cause) from err


@contextmanager
def _encode_errors() -> Iterator[None]:
    """Codec errors of a sample as a skippable :class:`FrameError`, of an option as a BagError."""
    try:
        yield
    except ImageFormatError as err:
        reason = _ENCODE_REASONS.get(err.cause)
        if reason is None:
            raise BagError(str(err)) from err
        raise FrameError(str(err), reason) from err


def decode_image(msg: ImageLike) -> U8Array:
    """A raw ``sensor_msgs/Image`` as HxWx3 RGB uint8, converted exactly as the node does."""
    with _decode_errors():
        return image_codec.image_to_rgb(msg)


def decode_compressed(msg: CompressedLike) -> U8Array:
    """A JPEG or PNG ``sensor_msgs/CompressedImage`` as HxWx3 RGB uint8, as the node decodes it."""
    with _decode_errors():
        return image_codec.compressed_to_rgb(msg)


def decode_mask(msg: ImageLike) -> U8Array:
    """A ``mono8`` class-id mask as HxW uint8 (a copy: the message buffer is not kept alive)."""
    with _decode_errors():
        return np.array(image_codec.image_to_mask(msg), dtype=np.uint8)


def _header(stamp_ns: int, frame_id: str) -> Any:
    types = typestore().types
    sec, nanosec = split_ns(stamp_ns)
    stamp = types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)
    return types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)


def _image_message(raw: image_codec.RawImage, stamp_ns: int, frame_id: str) -> Any:
    return typestore().types[IMAGE_TYPE](
        header=_header(stamp_ns, frame_id),
        height=raw.height,
        width=raw.width,
        encoding=raw.encoding,
        is_bigendian=int(raw.is_bigendian),
        step=raw.step,
        data=raw.data,
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
    A sample that is not HxWx3 uint8 is a :class:`FrameError` ("wrong size");
    an unknown encoding or a negative padding is a :class:`BagError`.
    """
    with _encode_errors():
        pixels = image_codec.rgb_to_encoding(rgb, encoding)
        raw = image_codec.array_to_raw(
            pixels, encoding, row_padding=row_padding, big_endian=big_endian
        )
    return _image_message(raw, stamp_ns, frame_id)


def encode_compressed(rgb: np.ndarray, fmt: str, stamp_ns: int, frame_id: str = "camera") -> Any:
    """An RGB image as a JPEG (quality 95) or lossless PNG ``sensor_msgs/CompressedImage``."""
    with _encode_errors():
        payload = image_codec.rgb_to_compressed(rgb, fmt, jpeg_quality=95)
    return typestore().types[COMPRESSED_IMAGE_TYPE](
        header=_header(stamp_ns, frame_id), format=payload.format, data=payload.data
    )


def encode_mask(mask: np.ndarray, stamp_ns: int, frame_id: str = "camera") -> Any:
    """A class-id mask as a ``mono8`` ``sensor_msgs/Image``; not HxW uint8 is "wrong size"."""
    with _encode_errors():
        raw = image_codec.array_to_raw(mask, "mono8")
    return _image_message(raw, stamp_ns, frame_id)


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
    sec, nanosec = split_ns(stamp_ns)
    kind = message[:2]
    if kind not in (_CDR_BIG, _CDR_LITTLE) or len(message) < 12:
        raise FrameError(
            f"cannot restamp a message with CDR encapsulation {kind.hex()!r}; expected plain CDR",
            "unsupported serialization",
        )
    patched = bytearray(message)
    struct.pack_into("<iI" if kind == _CDR_LITTLE else ">iI", patched, 4, sec, nanosec)
    return bytes(patched)
