"""Verification: run the chosen configuration with the real engine and compare with the prediction.

The search predicts from cached numbers; this step closes the loop. The
engine segments the calibration images under the written parameters and the
measured mIoU must equal the predicted one exactly (same images, same
preprocessing, same confidence and mask definitions), every image must leave
at the predicted exit, and the measured latency must lie within 15 % of the
prediction on the device the table was profiled on.

Latency is compared on the stages the table prices (blocks, heads, outputs),
summed from the engine's per-stage times; the whole ``infer`` call, which
also includes resizing and normalising the frame, is reported beside it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from mess_ros.data.datasets import DatasetSpec, SegmentationDataset, build_dataset
from mess_ros.deploy.errors import VerificationError
from mess_ros.deploy.problem import P95_QUANTILE, ScoredConfiguration, SearchProblem, exit_decisions
from mess_ros.errors import MessError
from mess_ros.eval.metrics import confusion_matrix, mean_iou
from mess_ros.model import Checkpoint
from mess_ros.runtime.config import SegmentationConfig
from mess_ros.runtime.engine import SegmentationEngine
from mess_ros.runtime.latency import PREPROCESS_KEY, LatencyTable

LATENCY_TOLERANCE = 0.15


@dataclass(frozen=True)
class VerificationReport:
    """Predicted against measured accuracy, exit decisions and latency."""

    images: int
    passes: int
    predicted: ScoredConfiguration
    measured_miou: float
    decisions_matching: int
    measured_mean_ms: float
    measured_p95_ms: float
    frame_mean_ms: float
    tolerance: float = LATENCY_TOLERANCE

    @property
    def miou_matches(self) -> bool:
        return self.measured_miou == self.predicted.miou

    @property
    def decisions_match(self) -> bool:
        return self.decisions_matching == self.images

    @property
    def latency_error(self) -> float:
        """Relative error of the predicted mean latency against the measured one."""
        return self.measured_mean_ms / self.predicted.mean_ms - 1.0

    @property
    def latency_ok(self) -> bool:
        return abs(self.latency_error) <= self.tolerance

    @property
    def passed(self) -> bool:
        return self.miou_matches and self.decisions_match and self.latency_ok

    def summary(self) -> str:
        def verdict(ok: bool) -> str:
            return "OK" if ok else "MISMATCH"

        return "\n".join(
            [
                f"verification on {self.images} calibration images ({self.passes} pass(es)):",
                f"  mIoU predicted {self.predicted.miou:.6f}, measured {self.measured_miou:.6f} "
                f"[{verdict(self.miou_matches)}]",
                f"  exit decisions matching: {self.decisions_matching}/{self.images} "
                f"[{verdict(self.decisions_match)}]",
                f"  mean latency predicted {self.predicted.mean_ms:.2f} ms, measured "
                f"{self.measured_mean_ms:.2f} ms ({100 * self.latency_error:+.1f}%, tolerance "
                f"{100 * self.tolerance:.0f}%) [{verdict(self.latency_ok)}]",
                f"  p95 latency predicted {self.predicted.p95_ms:.2f} ms, measured "
                f"{self.measured_p95_ms:.2f} ms",
                f"  whole frame incl. preprocessing: {self.frame_mean_ms:.2f} ms mean",
            ]
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "passes": self.passes,
            "predicted_miou": self.predicted.miou,
            "measured_miou": self.measured_miou,
            "miou_matches": self.miou_matches,
            "decisions_matching": self.decisions_matching,
            "predicted_mean_ms": self.predicted.mean_ms,
            "measured_mean_ms": self.measured_mean_ms,
            "predicted_p95_ms": self.predicted.p95_ms,
            "measured_p95_ms": self.measured_p95_ms,
            "frame_mean_ms": self.frame_mean_ms,
            "latency_error": self.latency_error,
            "latency_ok": self.latency_ok,
            "passed": self.passed,
        }


def calibration_dataset(dataset_info: dict[str, Any], source: str) -> SegmentationDataset:
    """Rebuild the calibration images from the dataset spec recorded in the cache."""
    try:
        return build_dataset(DatasetSpec.from_dict(dataset_info))
    except MessError as err:
        msg = f"cannot rebuild the calibration images recorded in {source} ({dataset_info}): {err}"
        raise VerificationError(msg) from err


def verify_configuration(
    params: SegmentationConfig,
    checkpoint: Checkpoint,
    table: LatencyTable,
    problem: SearchProblem,
    predicted: ScoredConfiguration,
    dataset: SegmentationDataset,
    *,
    images: Sequence[int] | None = None,
    passes: int = 1,
    progress: bool = False,
) -> VerificationReport:
    """Run ``params`` with the engine on the calibration images ``passes`` times.

    ``problem`` must come from the calibration cache of ``dataset``: its images
    are ``dataset[i]`` for ``i`` in ``images`` (all of them, in order, by
    default), e.g. the held-out part; ``predicted`` is the configuration's
    exact evaluation on it. Deadlines are switched off so that the engine
    makes the decisions the prediction assumes.
    """
    chosen = list(range(len(dataset))) if images is None else [int(i) for i in images]
    if len(chosen) != problem.num_images or any(not 0 <= i < len(dataset) for i in chosen):
        msg = (
            f"the calibration dataset has {len(dataset)} images and {len(chosen)} were selected, "
            f"but the cache describes {problem.num_images}; verification needs the very images "
            "the cache was built on"
        )
        raise VerificationError(msg)
    if passes < 1:
        raise VerificationError(f"verification needs at least one pass, got {passes}")
    config = copy.deepcopy(params)
    config.deadline.deadline_ms = 0.0
    try:
        engine = SegmentationEngine(config, checkpoint, latency_table=table)
    except MessError as err:
        raise VerificationError(f"the engine cannot run the configuration: {err}") from err
    expected = exit_decisions(problem, predicted.config)
    num_classes = problem.num_classes
    ignore = engine.labels.ignore_index
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    matching = 0
    stage_ms: list[float] = []
    frame_ms: list[float] = []
    total = passes * len(chosen)
    with tqdm(total=total, desc="verify", unit="img", disable=not progress) as bar:
        for run in range(passes):
            for index, image in enumerate(chosen):
                sample = dataset[image]
                result = engine.infer(sample.image)
                if run == 0:
                    confusion += confusion_matrix(sample.mask, result.mask, num_classes, ignore)
                    matching += int(result.exit_index == int(expected[index]))
                stage_ms.append(
                    sum(ms for key, ms in result.stage_times_ms.items() if key != PREPROCESS_KEY)
                )
                frame_ms.append(result.measured_ms)
                bar.update(1)
    rank = max(1, math.ceil(P95_QUANTILE * len(stage_ms) - 1e-9))
    return VerificationReport(
        images=len(chosen),
        passes=passes,
        predicted=predicted,
        measured_miou=mean_iou(confusion),
        decisions_matching=matching,
        measured_mean_ms=float(np.mean(stage_ms)),
        measured_p95_ms=float(np.sort(stage_ms)[rank - 1]),
        frame_mean_ms=float(np.mean(frame_ms)),
    )
