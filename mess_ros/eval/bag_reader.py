"""Reading rosbag2 bags (``.db3`` and ``.mcap``) with ``rosbags``.

The evaluation tools replay what a robot recorded, so this module turns a bag
into a stream of :class:`BagFrame`: the camera image as RGB, its ground-truth
mask when the bag has one, the system load known at that moment and the
serialized message for the live replay.

``rosbags`` is pure Python and needs no ROS installation, which is why the
offline evaluation runs on any workstation.

Problems are split by scope: a bag that cannot be opened or read is a
:class:`~mess_ros.eval.errors.BagError` naming the file; one bad frame is
skipped and counted in :class:`ReadStats`, never a crash of a long replay.
A camera frame whose ground truth cannot be used (undecodable, another size)
is kept for latency and exits, without ground truth; that problem is counted
apart and named after the ground-truth topic, not the camera's.
"""

from __future__ import annotations

import dataclasses
import struct
from collections import Counter, deque
from collections.abc import Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import apsw
import numpy as np
from rosbags.interfaces import Connection
from rosbags.rosbag2 import Reader, ReaderError
from rosbags.serde import SerdeError

from mess_ros.common.stamps import header_stamp_ns
from mess_ros.data.image_codec import U8Array
from mess_ros.eval.errors import BagError, FrameError
from mess_ros.eval.messages import (
    COMPRESSED_IMAGE_TYPE,
    IMAGE_TYPE,
    IMAGE_TYPES,
    LOAD_TYPE,
    decode_compressed,
    decode_image,
    decode_mask,
    deserialize,
)

# The reader recognises ground truth and load by the last segment of a topic's name.
GROUND_TRUTH_NAMES: Final = frozenset(
    {"ground_truth", "groundtruth", "gt", "gt_mask", "semantic_gt", "gt_labels", "labels"}
)
LOAD_TOPIC_NAME: Final = "system_load"

# A frame's ground truth may be logged after the frame; wait this much log time for it.
DEFAULT_MATCH_WINDOW_NS: Final = 2_000_000_000

# What a damaged storage file makes rosbags or its backends raise while opening or reading.
_STORAGE_ERRORS: Final = (
    ReaderError,
    SerdeError,
    apsw.Error,
    OSError,
    EOFError,
    struct.error,
    ValueError,
    KeyError,
    IndexError,
    OverflowError,
    AssertionError,
)


@dataclass(frozen=True)
class BagFrame:
    """One camera frame of a bag, ready for the engine.

    ``index`` counts camera messages from 0 in log order, including the ones
    skipped, so reports and examples name the same frame whatever the run.
    ``message`` is the camera message exactly as recorded (CDR), which the
    live replay publishes. ``load`` is the latest system load logged before
    the frame and ``load_ns`` when it was logged, so replays can tell a
    fresh reading from a stale one.
    """

    index: int
    stamp_ns: int
    receive_ns: int
    image: U8Array
    gt: U8Array | None
    load: float | None
    load_ns: int | None
    message: bytes
    msgtype: str

    @property
    def size_hw(self) -> tuple[int, int]:
        return (int(self.image.shape[0]), int(self.image.shape[1]))


@dataclass(frozen=True)
class BagTopics:
    """The topics a reader uses, chosen by name or recognised in the bag.

    ``gt_candidates`` are ``mono8`` image topics that were not recognised as
    ground truth by name (empty when one was): likely ground truth under
    another name, worth a ``--gt-topic``.
    """

    camera: str
    camera_type: str
    ground_truth: str | None
    load: str | None
    frame_count: int
    gt_candidates: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "camera": self.camera,
            "camera_type": self.camera_type,
            "ground_truth": self.ground_truth,
            "load": self.load,
            "frame_count": self.frame_count,
            "gt_candidates": list(self.gt_candidates),
        }


MAX_SKIP_DETAILS: Final = 20


@dataclass
class ReadStats:
    """What one pass over a bag used and what it had to leave out, for the report.

    ``without_gt`` counts used frames that have no usable ground truth: none
    was recorded for them, or what was recorded is unusable (those are also
    in ``bad_gt`` by reason).
    """

    frames: int = 0
    without_gt: int = 0
    unmatched_gt: int = 0
    bad_load: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    bad_gt: Counter[str] = field(default_factory=Counter)
    details: list[str] = field(default_factory=list)

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    @property
    def bad_gt_total(self) -> int:
        return sum(self.bad_gt.values())

    def skip(self, index: int, err: FrameError) -> None:
        self.skipped[err.reason] += 1
        self._detail(f"frame {index}: {err}")

    def ground_truth_unusable(self, index: int, topic: str, err: FrameError) -> None:
        self.bad_gt[err.reason] += 1
        self._detail(f"frame {index}: ground truth on {topic}: {err}")

    def _detail(self, text: str) -> None:
        if len(self.details) < MAX_SKIP_DETAILS:
            self.details.append(text)

    def to_dict(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "without_gt": self.without_gt,
            "unmatched_gt": self.unmatched_gt,
            "bad_gt_total": self.bad_gt_total,
            "bad_gt": dict(sorted(self.bad_gt.items())),
            "bad_load": self.bad_load,
            "skipped_total": self.skipped_total,
            "skipped": dict(sorted(self.skipped.items())),
            "details": list(self.details),
        }


def _describe(topics: Mapping[str, str | None], names: Iterable[str]) -> str:
    listed = [f"{name} ({topics[name] or 'mixed types'})" for name in sorted(names)]
    return ", ".join(listed) if listed else "(none)"


def _looks_like_ground_truth(topic: str) -> bool:
    return topic.rstrip("/").rsplit("/", 1)[-1].lower() in GROUND_TRUTH_NAMES


def select_topics(
    path: Path,
    topics: Mapping[str, str | None],
    counts: Mapping[str, int],
    camera_topic: str | None = None,
    gt_topic: str | None = None,
    load_topic: str | None = None,
) -> BagTopics:
    """Choose the camera, ground-truth and load topics of a bag.

    A name given is checked (present, right type); ``None`` means recognise
    it: ground truth by its conventional name (:data:`GROUND_TRUTH_NAMES`),
    load by ``system_load``, the camera as the only remaining image topic.
    ``""`` for ground truth or load means "do not use one". Every failure
    lists the topics the bag does have so the user can pick.
    """
    images = [name for name, kind in topics.items() if kind in IMAGE_TYPES]
    raw_images = [name for name, kind in topics.items() if kind == IMAGE_TYPE]

    ground_truth: str | None
    if gt_topic is None:
        found = [
            name for name in raw_images if _looks_like_ground_truth(name) and name != camera_topic
        ]
        if len(found) > 1:
            raise BagError(
                f"bag {path} has several ground-truth topics: {_describe(topics, found)}; "
                "name one with --gt-topic"
            )
        ground_truth = found[0] if found else None
    elif gt_topic == "":
        ground_truth = None
    else:
        _check_topic(path, topics, gt_topic, (IMAGE_TYPE,), "ground-truth", raw_images)
        ground_truth = gt_topic

    if camera_topic is None:
        candidates = [
            name
            for name in images
            if name != ground_truth and not (gt_topic is None and _looks_like_ground_truth(name))
        ]
        if not candidates:
            raise BagError(
                f"bag {path} has no camera image topic ({' or '.join(IMAGE_TYPES)}); "
                f"its topics: {_describe(topics, topics)}"
            )
        if len(candidates) > 1:
            raise BagError(
                f"bag {path} has several image topics: {_describe(topics, candidates)}; "
                "name the camera topic with --camera-topic (and, if one of them holds ground "
                "truth, that one with --gt-topic)"
            )
        camera = candidates[0]
    else:
        _check_topic(path, topics, camera_topic, IMAGE_TYPES, "camera", images)
        camera = camera_topic
    if camera == ground_truth:
        raise BagError(f"topic {camera} of {path} cannot be both the camera and the ground truth")

    load: str | None
    if load_topic is None:
        found = [
            name
            for name, kind in topics.items()
            if kind == LOAD_TYPE and name.rstrip("/").rsplit("/", 1)[-1] == LOAD_TOPIC_NAME
        ]
        load = found[0] if len(found) == 1 else None
    elif load_topic == "":
        load = None
    else:
        loads = [name for name, kind in topics.items() if kind == LOAD_TYPE]
        _check_topic(path, topics, load_topic, (LOAD_TYPE,), "load", loads)
        load = load_topic

    camera_type = topics[camera]
    assert camera_type is not None  # checked above: an image type
    return BagTopics(camera, camera_type, ground_truth, load, int(counts.get(camera, 0)))


def _check_topic(
    path: Path,
    topics: Mapping[str, str | None],
    name: str,
    types: tuple[str, ...],
    role: str,
    alternatives: list[str],
) -> None:
    expected = " or ".join(types)
    if name not in topics:
        raise BagError(
            f"bag {path} has no {role} topic {name!r}; topics of type {expected} in it: "
            f"{_describe(topics, alternatives)}"
        )
    if topics[name] not in types:
        raise BagError(
            f"topic {name} of bag {path} has message type {topics[name] or 'mixed types'}, "
            f"which cannot be used as the {role} topic; expected {expected}. "
            f"Topics of that type: {_describe(topics, alternatives)}"
        )


@dataclass
class _Pending:
    """A camera message waiting for its ground truth (which may be logged after it)."""

    index: int
    stamp_ns: int
    receive_ns: int
    msg: Any
    raw: bytes
    load: float | None
    load_ns: int | None
    gt: Any = None


class BagReader:
    """Opens a bag and streams its frames; a context manager.

    ``path`` is a bag directory (with ``metadata.yaml``) or a single
    ``.db3``/``.mcap`` file. Topics are chosen as :func:`select_topics`
    explains. :meth:`frames` can be called several times (one pass each);
    :attr:`stats` describes the latest pass.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        camera_topic: str | None = None,
        gt_topic: str | None = None,
        load_topic: str | None = None,
        match_window_ns: int = DEFAULT_MATCH_WINDOW_NS,
    ) -> None:
        self.path = Path(path)
        self.match_window_ns = match_window_ns
        self.stats = ReadStats()
        if not self.path.exists():
            raise BagError(f"bag {self.path} does not exist; expected a .db3 or .mcap file")
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except (*_STORAGE_ERRORS, AssertionError) as err:
            raise BagError(
                f"cannot open bag {self.path}: {err}; expected a rosbag2 bag directory or a "
                ".db3/.mcap file that is complete and not corrupt"
            ) from err
        try:
            self._connections = list(self._reader.connections)
            topic_types: dict[str, str | None] = {}
            for conn in self._connections:
                known = topic_types.get(conn.topic, conn.msgtype)
                topic_types[conn.topic] = known if known == conn.msgtype else None
            counts = Counter[str]()
            for conn in self._connections:
                counts[conn.topic] += int(conn.msgcount)
            self.topics = select_topics(
                self.path, topic_types, counts, camera_topic, gt_topic, load_topic
            )
            if gt_topic is None and self.topics.ground_truth is None:
                unused = [
                    name
                    for name, kind in topic_types.items()
                    if kind == IMAGE_TYPE and name != self.topics.camera
                ]
                candidates = tuple(self._mono8_topics(unused))
                self.topics = dataclasses.replace(self.topics, gt_candidates=candidates)
            self.start_ns = int(self._reader.start_time)
            self.duration_ns = int(self._reader.duration)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._reader.is_open:
            self._reader.close()

    def __enter__(self) -> BagReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def frame_count(self) -> int:
        """Camera messages in the bag (frames yielded plus frames skipped)."""
        return self.topics.frame_count

    def _mono8_topics(self, names: Iterable[str]) -> Iterator[str]:
        """Those of ``names`` whose first message is a ``mono8`` image (class ids, probably)."""
        for name in names:
            connections = [conn for conn in self._connections if conn.topic == name]
            for _, _, raw in self._messages(connections):
                try:
                    msg = deserialize(raw, IMAGE_TYPE, "image")
                except FrameError:
                    break
                if str(msg.encoding).lower() in ("mono8", "8uc1"):
                    yield name
                break

    def _messages(self, connections: list[Connection]) -> Iterator[tuple[str, int, bytes]]:
        """Raw messages in log order; a storage failure midway becomes a BagError."""
        count = 0
        try:
            for conn, log_ns, raw in self._reader.messages(connections=connections):
                count += 1
                yield conn.topic, int(log_ns), bytes(raw)
        except _STORAGE_ERRORS as err:
            raise BagError(
                f"bag {self.path} is corrupt or truncated: reading failed after {count} messages "
                f"({err}); expected a complete rosbag2 file"
            ) from err

    def frames(self) -> Generator[BagFrame, None, None]:
        """Every usable camera frame in log order, with ground truth matched by header stamp.

        Ground truth may be logged before or after its frame; frames wait for
        it up to ``match_window_ns`` of log time, which keeps memory bounded
        on long bags. Load is the latest ``system_load`` logged before the frame.
        """
        topics = self.topics
        self.stats = stats = ReadStats()
        wanted = {topics.camera, topics.ground_truth, topics.load} - {None}
        connections = [conn for conn in self._connections if conn.topic in wanted]
        pending: deque[_Pending] = deque()
        pending_by_stamp: dict[int, _Pending] = {}
        waiting_gt: dict[int, tuple[int, Any]] = {}
        load: float | None = None
        load_ns: int | None = None
        camera_count = 0
        for topic, log_ns, raw in self._messages(connections):
            if topic == topics.load:
                value = self._load_value(raw)
                if value is not None:
                    load, load_ns = value, log_ns
            elif topic == topics.camera:
                index = camera_count
                camera_count += 1
                try:
                    msg = deserialize(raw, topics.camera_type, "image")
                    stamp_ns = header_stamp_ns(msg)
                except FrameError as err:
                    stats.skip(index, err)
                    continue
                item = _Pending(index, stamp_ns, log_ns, msg, raw, load, load_ns)
                if topics.ground_truth is not None:
                    waiting = waiting_gt.pop(stamp_ns, None)
                    item.gt = waiting[1] if waiting is not None else None
                    pending_by_stamp.setdefault(stamp_ns, item)
                pending.append(item)
            else:
                self._match_gt(raw, log_ns, pending_by_stamp, waiting_gt)
            yield from self._ready(pending, pending_by_stamp, log_ns, flush=False)
            for stamp_ns, (gt_log_ns, _) in list(waiting_gt.items()):
                if log_ns - gt_log_ns > self.match_window_ns:
                    del waiting_gt[stamp_ns]
                    stats.unmatched_gt += 1
        yield from self._ready(pending, pending_by_stamp, 0, flush=True)
        stats.unmatched_gt += len(waiting_gt)
        if camera_count < topics.frame_count:
            # The index promised more than the data held: messages were lost to damage.
            raise BagError(
                f"bag {self.path} is corrupt: its index lists {topics.frame_count} messages on "
                f"{topics.camera} but only {camera_count} could be read"
            )

    def _load_value(self, raw: bytes) -> float | None:
        """A load reading, or None for a corrupt or non-finite one (counted, not fatal)."""
        try:
            value = float(deserialize(raw, LOAD_TYPE, "load").data)
        except FrameError:
            self.stats.bad_load += 1
            return None
        if not np.isfinite(value):
            self.stats.bad_load += 1
            return None
        return value

    def _match_gt(
        self,
        raw: bytes,
        log_ns: int,
        pending_by_stamp: dict[int, _Pending],
        waiting_gt: dict[int, tuple[int, Any]],
    ) -> None:
        try:
            gt = deserialize(raw, IMAGE_TYPE, "ground truth")
        except FrameError:
            # Not attributable to a frame (the stamp is unreadable): the frame goes without.
            self.stats.unmatched_gt += 1
            return
        stamp_ns = header_stamp_ns(gt)
        item = pending_by_stamp.get(stamp_ns)
        if item is not None and item.gt is None:
            item.gt = gt
        else:
            waiting_gt[stamp_ns] = (log_ns, gt)

    def _ready(
        self,
        pending: deque[_Pending],
        pending_by_stamp: dict[int, _Pending],
        now_log_ns: int,
        *,
        flush: bool,
    ) -> Iterator[BagFrame]:
        """Frames at the head of the queue that have their ground truth or waited long enough."""
        has_gt_topic = self.topics.ground_truth is not None
        while pending:
            head = pending[0]
            waited = now_log_ns - head.receive_ns > self.match_window_ns
            if not (flush or not has_gt_topic or head.gt is not None or waited):
                return
            pending.popleft()
            if pending_by_stamp.get(head.stamp_ns) is head:
                del pending_by_stamp[head.stamp_ns]
            frame = self._finish(head)
            if frame is not None:
                yield frame

    def _finish(self, item: _Pending) -> BagFrame | None:
        """Decode a matched frame; a camera frame that cannot be used is counted and left out.

        Unusable ground truth only costs the frame its ground truth: the frame
        still counts for latency and exits.
        """
        try:
            if self.topics.camera_type == COMPRESSED_IMAGE_TYPE:
                image = decode_compressed(item.msg)
            else:
                image = decode_image(item.msg)
        except FrameError as err:
            self.stats.skip(item.index, err)
            return None
        gt = None
        if item.gt is not None:
            try:
                gt = self._ground_truth(item.gt, image)
            except FrameError as err:
                assert self.topics.ground_truth is not None  # item.gt comes from that topic
                self.stats.ground_truth_unusable(item.index, self.topics.ground_truth, err)
        self.stats.frames += 1
        if gt is None:
            self.stats.without_gt += 1
        return BagFrame(
            index=item.index,
            stamp_ns=item.stamp_ns,
            receive_ns=item.receive_ns,
            image=image,
            gt=gt,
            load=item.load,
            load_ns=item.load_ns,
            message=item.raw,
            msgtype=self.topics.camera_type,
        )

    @staticmethod
    def _ground_truth(msg: Any, image: U8Array) -> U8Array:
        """A ground-truth message as a mask of the image's size (FrameError otherwise)."""
        gt = decode_mask(msg)
        if gt.shape != image.shape[:2]:
            raise FrameError(
                f"ground truth of {gt.shape[1]}x{gt.shape[0]} does not match the "
                f"{image.shape[1]}x{image.shape[0]} image",
                "ground truth size mismatch",
            )
        return gt


def load_frames(
    path: str | Path,
    *,
    camera_topic: str | None = None,
    gt_topic: str | None = None,
    load_topic: str | None = None,
) -> tuple[list[BagFrame], ReadStats, BagTopics]:
    """Every frame of a bag decoded into memory, with what was skipped and the topics used.

    For small bags replayed several times (benchmarks, one live pass per
    configuration) decoding once keeps the replays identical and cheap.
    """
    with BagReader(
        path, camera_topic=camera_topic, gt_topic=gt_topic, load_topic=load_topic
    ) as reader:
        frames = list(reader.frames())
        return frames, reader.stats, reader.topics
