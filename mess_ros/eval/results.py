"""What an evaluation measured, per frame and per configuration.

Offline and live replays fill the same records, so the report, the
comparison of configurations and the check that both modes agree work on
one structure. Each frame keeps its own confusion matrix (C x C integers):
matrices add, so mIoU over any subset of frames (the frames every
configuration processed, the frames that took one exit) is exact without
keeping a single mask.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from mess_ros.common.metrics import (
    ConfusionMatrix,
    confusion_matrix,
    iou_per_class,
    mean_iou,
    pixel_accuracy,
)
from mess_ros.data.labels import LabelSet

LATENCY_QUANTILES: Final = (50, 95, 99)


@dataclass
class FrameRecord:
    """One frame as one configuration handled it.

    ``arrival_ms`` is the frame's time on the recorded timeline (0 = first
    frame), ``latency_ms`` what a robot waits from the frame's arrival to its
    mask (queueing and transport included), ``measured_ms`` the inference
    alone as the engine timed it. A frame that was never segmented (dropped
    while the engine was busy, dropped as late, or no mask came back) has
    ``processed`` False and no timing.
    """

    index: int
    stamp_ns: int
    arrival_ms: float
    has_gt: bool
    processed: bool = False
    exit_id: str | None = None
    exit_index: int | None = None
    num_exits: int | None = None
    confidence: float | None = None
    reason: str = ""
    latency_ms: float | None = None
    measured_ms: float | None = None
    predicted_ms: float | None = None
    deadline_ms: float | None = None
    met_deadline: bool | None = None
    load: float | None = None
    miou: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {key: _json_value(value) for key, value in asdict(self).items()}


def _json_value(value: Any) -> Any:
    """NaN and infinities have no JSON spelling: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def finite_or_none(value: float | None) -> float | None:
    """A measurement, or None when there is none (NaN, infinite or missing)."""
    return float(value) if value is not None and math.isfinite(value) else None


@dataclass
class RunResult:
    """Everything one configuration produced on the frames of one replay."""

    name: str
    parameters: dict[str, Any]
    labels: LabelSet
    records: list[FrameRecord] = field(default_factory=list)
    confusions: dict[int, ConfusionMatrix] = field(default_factory=dict)
    invalid_gt: int = 0
    invalid_gt_ids: set[int] = field(default_factory=set)
    wall_s: float = 0.0
    engine_s: float = 0.0

    def add(
        self,
        record: FrameRecord,
        mask: npt.NDArray[np.integer[Any]] | None,
        gt: npt.NDArray[np.uint8] | None,
    ) -> None:
        """Record a frame; its mask is scored against ``gt`` when both exist."""
        confusion = None
        invalid = False
        if mask is not None and gt is not None:
            confusion = score_mask(self.labels, mask, gt)
            invalid = confusion is None
        self.add_scored(
            record,
            confusion,
            gt_invalid=invalid,
            foreign=foreign_ids(self.labels, gt) if invalid and gt is not None else (),
        )

    def add_scored(
        self,
        record: FrameRecord,
        confusion: ConfusionMatrix | None,
        *,
        gt_invalid: bool = False,
        foreign: Iterable[int] = (),
    ) -> None:
        """Record a frame already scored (``confusion`` None: nothing to score).

        Ground truth that could not be scored (class ids outside the label
        set: it belongs to another one) keeps the frame for timing and is
        counted in :attr:`invalid_gt`, its ``foreign`` ids in
        :attr:`invalid_gt_ids`, instead of stopping the evaluation (unless
        the caller is strict).
        """
        if gt_invalid:
            self.invalid_gt += 1
            self.invalid_gt_ids.update(int(i) for i in foreign)
            record.has_gt = False
        if confusion is not None:
            self.confusions[record.index] = confusion
            record.miou = finite_or_none(mean_iou(confusion))
        self.records.append(record)

    @property
    def num_classes(self) -> int:
        return self.labels.num_classes

    def confusion(self, indices: Iterable[int] | None = None) -> ConfusionMatrix:
        """Summed confusion over ``indices`` (frame indices; all scored frames when None)."""
        total = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        keys = self.confusions.keys() if indices is None else indices
        for index in keys:
            conf = self.confusions.get(index)
            if conf is not None:
                total += conf
        return total

    def miou(self, indices: Iterable[int] | None = None) -> float:
        return mean_iou(self.confusion(indices))

    def processed_indices(self) -> set[int]:
        return {r.index for r in self.records if r.processed}

    def summary(self) -> RunSummary:
        return summarize(self)


def score_mask(
    labels: LabelSet, mask: npt.NDArray[np.integer[Any]], gt: npt.NDArray[np.uint8]
) -> ConfusionMatrix | None:
    """Confusion of one mask against its ground truth; None when they cannot be compared.

    That is ground truth with ids outside ``labels`` or a mask of another
    size, both signs the frame's labels belong to something else.
    """
    try:
        return confusion_matrix(gt, mask, labels.num_classes, labels.ignore_index)
    except ValueError:
        return None


def foreign_ids(labels: LabelSet, gt: npt.NDArray[np.uint8]) -> tuple[int, ...]:
    """Class ids in ``gt`` that ``labels`` does not have (the ignore id is not foreign)."""
    ids = np.unique(gt)
    return tuple(
        int(i) for i in ids if int(i) >= labels.num_classes and int(i) != labels.ignore_index
    )


@dataclass(frozen=True)
class RunSummary:
    """The figures a report table shows for one configuration (JSON-ready)."""

    name: str
    frames: int
    processed: int
    dropped: int
    scored: int
    invalid_gt: int
    invalid_gt_ids: list[int]
    miou: float | None
    pixel_accuracy: float | None
    iou_per_class: dict[str, float | None]
    exit_usage: dict[str, int]
    miou_per_exit: dict[str, float | None]
    latency_ms: dict[str, float | None]
    measured_ms: dict[str, float | None]
    deadline_ms: float | None
    deadline_misses: int
    deadline_miss_rate: float | None
    drop_rate: float | None
    frames_per_s: float | None

    def to_dict(self) -> dict[str, Any]:
        return {key: _json_value(value) for key, value in asdict(self).items()}


def latency_stats(values: Sequence[float]) -> dict[str, float | None]:
    """Mean, p50/p95/p99 and max; all None when nothing was measured."""
    keys = ["mean", *(f"p{q}" for q in LATENCY_QUANTILES), "max"]
    if not values:
        return dict.fromkeys(keys)
    data = np.asarray(values, dtype=np.float64)
    quantiles = np.percentile(data, LATENCY_QUANTILES)
    stats: dict[str, float | None] = {"mean": float(data.mean())}
    stats.update({f"p{q}": float(v) for q, v in zip(LATENCY_QUANTILES, quantiles, strict=True)})
    stats["max"] = float(data.max())
    return stats


def exit_order(records: Iterable[FrameRecord]) -> list[str]:
    """Exit ids by depth (their exit index), so tables and plots list them shallow to deep."""
    depth: dict[str, int] = {}
    for record in records:
        if record.exit_id is not None:
            depth.setdefault(
                record.exit_id, record.exit_index if record.exit_index is not None else 0
            )
    return sorted(depth, key=lambda exit_id: (depth[exit_id], exit_id))


def summarize(run: RunResult) -> RunSummary:
    """Accuracy, exit usage, latency and deadline figures of one run.

    A deadline miss is a processed frame whose end-to-end latency exceeds
    the deadline: what the robot sees, whatever the engine predicted.
    Dropped frames are counted apart (they produced no mask at all).
    """
    records = run.records
    processed = [r for r in records if r.processed]
    conf = run.confusion()
    scored = len(run.confusions)
    ious = iou_per_class(conf)
    usage = Counter(r.exit_id for r in processed if r.exit_id is not None)
    exits = exit_order(processed)
    per_exit: dict[str, float | None] = {}
    for exit_id in exits:
        indices = [r.index for r in processed if r.exit_id == exit_id]
        per_exit[exit_id] = finite_or_none(run.miou(indices)) if scored else None
    deadlines = {r.deadline_ms for r in records if r.deadline_ms}
    deadline_ms = max(deadlines) if deadlines else None
    with_deadline = [r for r in processed if r.met_deadline is not None]
    misses = sum(1 for r in with_deadline if r.met_deadline is False)
    return RunSummary(
        name=run.name,
        frames=len(records),
        processed=len(processed),
        dropped=len(records) - len(processed),
        scored=scored,
        invalid_gt=run.invalid_gt,
        invalid_gt_ids=sorted(run.invalid_gt_ids),
        miou=finite_or_none(mean_iou(conf)) if scored else None,
        pixel_accuracy=finite_or_none(pixel_accuracy(conf)) if scored else None,
        iou_per_class={
            name: finite_or_none(float(value))
            for name, value in zip(run.labels.class_names, ious, strict=True)
        },
        exit_usage={exit_id: usage[exit_id] for exit_id in exits},
        miou_per_exit=per_exit,
        latency_ms=latency_stats([r.latency_ms for r in processed if r.latency_ms is not None]),
        measured_ms=latency_stats([r.measured_ms for r in processed if r.measured_ms is not None]),
        deadline_ms=deadline_ms,
        deadline_misses=misses,
        deadline_miss_rate=misses / len(with_deadline) if with_deadline else None,
        drop_rate=(len(records) - len(processed)) / len(records) if records else None,
        frames_per_s=len(processed) / run.wall_s if run.wall_s > 0 else None,
    )


@dataclass
class Example:
    """A frame shown in the report's strip, with the mask every configuration produced."""

    index: int
    image: npt.NDArray[np.uint8]
    gt: npt.NDArray[np.uint8] | None
    masks: dict[str, npt.NDArray[np.uint8]] = field(default_factory=dict)
    exits: dict[str, str] = field(default_factory=dict)


class ExampleCollector:
    """Keeps a few evenly spaced frames and, per configuration, their masks.

    Indices are fixed from the bag's frame count before the replay starts,
    so every configuration (and every live pass) contributes masks of the
    same frames.
    """

    def __init__(self, frame_count: int, count: int) -> None:
        if count > 0 and frame_count > 0:
            picks = np.linspace(0, frame_count - 1, num=min(count, frame_count))
            self.wanted = {round(float(v)) for v in picks}
        else:
            self.wanted = set()
        self.examples: dict[int, Example] = {}

    def offer_frame(
        self, index: int, image: npt.NDArray[np.uint8], gt: npt.NDArray[np.uint8] | None
    ) -> None:
        if index in self.wanted and index not in self.examples:
            self.examples[index] = Example(index=index, image=image, gt=gt)

    def offer_mask(
        self, run: str, index: int, mask: npt.NDArray[np.integer[Any]], exit_id: str | None
    ) -> None:
        example = self.examples.get(index)
        if example is not None:
            example.masks[run] = np.asarray(mask, dtype=np.uint8)
            if exit_id is not None:
                example.exits[run] = exit_id

    def collected(self) -> list[Example]:
        return [self.examples[i] for i in sorted(self.examples)]


@dataclass
class Evaluation:
    """One evaluation of one bag: how it was read, every configuration's run, the examples."""

    bag: str
    mode: str
    topics: dict[str, Any]
    labels: LabelSet
    read: dict[str, Any]
    runs: list[RunResult]
    examples: list[Example] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0

    def run(self, name: str) -> RunResult:
        for run in self.runs:
            if run.name == name:
                return run
        names = ", ".join(r.name for r in self.runs)
        raise KeyError(f"no run named {name!r}; runs: {names}")

    def common_processed(self) -> set[int]:
        """Frames every configuration segmented: the fair set to compare accuracy on."""
        sets = [run.processed_indices() for run in self.runs]
        return set.intersection(*sets) if sets else set()

    def to_dict(self) -> dict[str, Any]:
        """The machine-readable report: settings, read statistics, summaries and frames."""
        common = sorted(self.common_processed())
        return {
            "bag": self.bag,
            "mode": self.mode,
            "topics": self.topics,
            "labels": self.labels.to_dict(),
            "read": self.read,
            "settings": self.settings,
            "wall_s": self.wall_s,
            "common_frames": len(common),
            "runs": [
                {
                    "summary": run.summary().to_dict(),
                    "miou_common_frames": _json_value(run.miou(common)) if run.confusions else None,
                    "parameters": run.parameters,
                    "frames": [record.to_dict() for record in run.records],
                }
                for run in self.runs
            ],
        }


def matched_miou(
    first: RunResult, second: RunResult, indices: Iterable[int] | None = None
) -> tuple[float, float, int]:
    """mIoU of two runs over the frames both scored (optionally within ``indices``).

    This is how offline and live results of one configuration are compared:
    a live replay may lose frames, so only frames present in both count.
    """
    common = set(first.confusions) & set(second.confusions)
    if indices is not None:
        common &= set(indices)
    return first.miou(common), second.miou(common), len(common)
