"""Bag builders of the evaluation tests (layouts the dataset writer never produces)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer

from mess_ros.data.datasets import SyntheticDataset
from mess_ros.data.sample import Sample
from mess_ros.eval.messages import LOAD_TYPE, encode_image, encode_mask, serialize, typestore

FRAME_HW = (48, 64)
NUM_FRAMES = 8
RATE_HZ = 20.0
START_NS = 1_700_000_000 * 1_000_000_000
PERIOD_NS = 50_000_000
# The first exit of the tiny model of the tests (a linear head after the first block).
EARLY_EXIT = "layer1_0:linear"


def synthetic_samples(count: int = NUM_FRAMES, seed: int = 2) -> list[Sample]:
    dataset = SyntheticDataset(num_images=count, height=FRAME_HW[0], width=FRAME_HW[1], seed=seed)
    return [dataset[i] for i in range(count)]


@dataclass(frozen=True)
class Record:
    """One message to write with :func:`write_raw_bag`: topic, log time, CDR bytes."""

    topic: str
    log_ns: int
    data: bytes


def write_raw_bag(path: Path, types: dict[str, str], records: Sequence[Record]) -> Path:
    """A bag (directory) holding exactly ``records``, in log-time order."""
    plugin = StoragePlugin.MCAP if path.suffix == ".mcap" else StoragePlugin.SQLITE3
    store = typestore()
    with Writer(path, version=Writer.VERSION_LATEST, storage_plugin=plugin) as writer:
        connections = {
            topic: writer.add_connection(topic, msgtype, typestore=store)
            for topic, msgtype in types.items()
        }
        for record in sorted(records, key=lambda r: r.log_ns):
            writer.write(connections[record.topic], record.log_ns, record.data)
    return path


def image_bytes(image: np.ndarray, stamp_ns: int, encoding: str = "rgb8", **kwargs: Any) -> bytes:
    return serialize(encode_image(image, encoding, stamp_ns, **kwargs))


def mask_bytes(mask: np.ndarray, stamp_ns: int) -> bytes:
    return serialize(encode_mask(mask, stamp_ns))


def load_bytes(value: float) -> bytes:
    return serialize(typestore().types[LOAD_TYPE](data=value))
