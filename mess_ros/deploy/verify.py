"""Verification: run the chosen configuration with the real engine and compare with the prediction.

The search predicts from cached numbers; this step closes the loop on images
the search did not see. ``mess_configure`` keeps a share of the calibration
images out of fitting and choosing (:func:`~mess_ros.deploy.decisions.split_images`);
on those the cache still predicts any configuration exactly, so:

* the engine's mIoU on them must equal the cache's prediction exactly (same
  images, same preprocessing, same confidence and mask definitions), and
  every image must leave at the predicted exit: this checks the plumbing.
  The cache is computed with torch; another backend (``engine.backend``)
  computes the same network in another order of floating-point operations,
  so there a pixel near a class boundary or a confidence on a threshold may
  differ: its mIoU must lie within :data:`BACKEND_MIOU_TOLERANCE` and its
  decisions match on :data:`BACKEND_DECISION_SHARE` of the images;
* the held-out mIoU beside the one the search promised on its own images
  says whether the chosen thresholds carry over to new images;
* the measured latency must lie within the tolerance (25 % by default) of
  the prediction on the device the table was profiled on. One pass over a
  few images on a shared machine is at the mercy of whatever else runs, so
  the images are run several times and the median of the per-pass means is
  compared; the pass means are reported beside it.

Latency is compared on the stages the table prices (blocks, heads, outputs),
summed from the engine's per-stage times; the whole ``infer`` call, which
also includes resizing and normalising the frame, is reported beside it.
"""

from __future__ import annotations

import copy
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from mess_ros.common.latency_table import PREPROCESS_KEY, LatencyTable
from mess_ros.common.metrics import confusion_matrix, mean_iou
from mess_ros.config import SegmentationConfig
from mess_ros.data.datasets import DatasetSpec, SegmentationDataset, build_dataset
from mess_ros.deploy.errors import VerificationError
from mess_ros.deploy.problem import P95_QUANTILE, ScoredConfiguration, SearchProblem, exit_decisions
from mess_ros.errors import MessError
from mess_ros.model import Checkpoint
from mess_ros.runtime.engine import SegmentationEngine

LATENCY_TOLERANCE = 0.25
DEFAULT_PASSES = 3
# Below this many images an image-level threshold moves in steps of 1 % or more of the
# images, and a configuration chosen on them is fitted to those particular images.
MIN_SEARCH_IMAGES = 100
MIN_VERIFY_IMAGES = 20
# Held-out mIoU this far below the search's own figure is reported as not carrying over.
GENERALISATION_GAP = 0.02
BACKEND_MIOU_TOLERANCE = 0.0005
"""mIoU difference (0.05 points) a backend other than torch may show against the cache."""
BACKEND_DECISION_SHARE = 0.99
"""Share of images whose exit a backend other than torch must take as the cache predicts."""


def calibration_warnings(search_images: int, verify_images: int) -> list[str]:
    """Why the numbers behind a chosen configuration may not mean much (empty: they do)."""
    warnings = []
    if search_images < MIN_SEARCH_IMAGES:
        warnings.append(
            f"the search scores only {search_images} calibration images: one image changes an "
            f"exit's share by {100 / search_images:.1f} %, so the chosen thresholds are fitted "
            f"to these images rather than measured; calibrate on {MIN_SEARCH_IMAGES} or more "
            "(val_dataset num_images in the training config)"
        )
    if 0 < verify_images < MIN_VERIFY_IMAGES:
        warnings.append(
            f"verification runs on only {verify_images} held-out images; its mIoU says little "
            f"about new images below {MIN_VERIFY_IMAGES}"
        )
    return warnings


@dataclass(frozen=True)
class VerificationReport:
    """Predicted against measured accuracy, exit decisions and latency.

    ``predicted`` is the cache's exact score on the verified images; ``search``
    what the search promised on the images it scored (None when they are the
    same images, i.e. nothing was held out).
    """

    images: int
    passes: int
    predicted: ScoredConfiguration
    measured_miou: float
    decisions_matching: int
    pass_mean_ms: tuple[float, ...]
    measured_p95_ms: float
    frame_mean_ms: float
    search: ScoredConfiguration | None = None
    tolerance: float = LATENCY_TOLERANCE
    backend: str = "torch"

    @property
    def exact(self) -> bool:
        """Whether the engine computes exactly what the (torch) calibration cache did."""
        return self.backend == "torch"

    @property
    def held_out(self) -> bool:
        return self.search is not None

    @property
    def measured_mean_ms(self) -> float:
        """Median over passes of the mean stage latency: one disturbed pass does not decide."""
        return float(statistics.median(self.pass_mean_ms))

    @property
    def miou_matches(self) -> bool:
        if self.exact:
            return self.measured_miou == self.predicted.miou
        return abs(self.measured_miou - self.predicted.miou) <= BACKEND_MIOU_TOLERANCE

    @property
    def decisions_match(self) -> bool:
        if self.exact:
            return self.decisions_matching == self.images
        return self.decisions_matching >= BACKEND_DECISION_SHARE * self.images

    @property
    def latency_error(self) -> float:
        """Relative error of the predicted mean latency against the measured one."""
        return self.measured_mean_ms / self.predicted.mean_ms - 1.0

    @property
    def latency_ok(self) -> bool:
        return abs(self.latency_error) <= self.tolerance

    @property
    def generalisation_gap(self) -> float | None:
        """Search mIoU minus held-out mIoU (None without a hold-out)."""
        return None if self.search is None else self.search.miou - self.predicted.miou

    @property
    def passed(self) -> bool:
        return self.miou_matches and self.decisions_match and self.latency_ok

    def summary(self) -> str:
        def verdict(ok: bool) -> str:
            return "OK" if ok else "MISMATCH"

        where = (
            f"{self.images} held-out calibration images the search did not see"
            if self.held_out
            else f"the {self.images} calibration images the search scored (nothing held out)"
        )
        passes = ", ".join(f"{ms:.2f}" for ms in self.pass_mean_ms)
        agreement = (
            "exactly"
            if self.exact
            else f"within {100 * BACKEND_MIOU_TOLERANCE:.2f} points and on "
            f"{100 * BACKEND_DECISION_SHARE:.0f}% of the images ({self.backend} against the "
            "torch cache)"
        )
        lines = [
            f"verification on {where} ({self.passes} pass(es), backend {self.backend}; must agree "
            f"{agreement}):",
            f"  mIoU predicted {self.predicted.miou:.6f}, measured {self.measured_miou:.6f} "
            f"[{verdict(self.miou_matches)}]",
            f"  exit decisions matching: {self.decisions_matching}/{self.images} "
            f"[{verdict(self.decisions_match)}]",
        ]
        gap = self.generalisation_gap
        if self.search is not None and gap is not None:
            carried = "carries over" if gap <= GENERALISATION_GAP else "DOES NOT carry over"
            lines.append(
                f"  mIoU on the search's images {100 * self.search.miou:.2f}%, on held-out "
                f"images {100 * self.predicted.miou:.2f}% ({-100 * gap:+.2f} points): the "
                f"configuration {carried} (more than {100 * GENERALISATION_GAP:.0f} points "
                "lower would not)"
            )
        lines += [
            f"  mean latency predicted {self.predicted.mean_ms:.2f} ms, measured "
            f"{self.measured_mean_ms:.2f} ms, the median of {len(self.pass_mean_ms)} pass means "
            f"({passes} ms) ({100 * self.latency_error:+.1f}%, tolerance "
            f"±{100 * self.tolerance:.0f}%) [{verdict(self.latency_ok)}]",
            f"  p95 latency predicted {self.predicted.p95_ms:.2f} ms, measured "
            f"{self.measured_p95_ms:.2f} ms",
            f"  whole frame incl. preprocessing: {self.frame_mean_ms:.2f} ms mean",
        ]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "passes": self.passes,
            "backend": self.backend,
            "held_out": self.held_out,
            "search_miou": None if self.search is None else self.search.miou,
            "predicted_miou": self.predicted.miou,
            "measured_miou": self.measured_miou,
            "miou_matches": self.miou_matches,
            "decisions_matching": self.decisions_matching,
            "predicted_mean_ms": self.predicted.mean_ms,
            "measured_mean_ms": self.measured_mean_ms,
            "pass_mean_ms": list(self.pass_mean_ms),
            "predicted_p95_ms": self.predicted.p95_ms,
            "measured_p95_ms": self.measured_p95_ms,
            "frame_mean_ms": self.frame_mean_ms,
            "latency_error": self.latency_error,
            "latency_tolerance": self.tolerance,
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
    passes: int = DEFAULT_PASSES,
    progress: bool = False,
    tolerance: float = LATENCY_TOLERANCE,
    search: ScoredConfiguration | None = None,
) -> VerificationReport:
    """Run ``params`` with the engine on the calibration images ``passes`` times.

    ``problem`` must come from the calibration cache of ``dataset``: its images
    are ``dataset[i]`` for ``i`` in ``images`` (all of them, in order, by
    default), e.g. the held-out part; ``predicted`` is the configuration's
    exact evaluation on it and ``search`` its score on the images the search
    fitted on, when those were others. Deadlines are switched off so that the
    engine makes the decisions the prediction assumes.
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
    if not tolerance > 0:
        raise VerificationError(f"the latency tolerance must be > 0, got {tolerance}")
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
    pass_means: list[float] = []
    frame_ms: list[float] = []
    total = passes * len(chosen)
    with tqdm(total=total, desc="verify", unit="img", disable=not progress) as bar:
        for run in range(passes):
            this_pass: list[float] = []
            for index, image in enumerate(chosen):
                sample = dataset[image]
                result = engine.infer(sample.image)
                if run == 0:
                    confusion += confusion_matrix(sample.mask, result.mask, num_classes, ignore)
                    matching += int(result.exit_index == int(expected[index]))
                this_pass.append(
                    sum(ms for key, ms in result.stage_times_ms.items() if key != PREPROCESS_KEY)
                )
                frame_ms.append(result.measured_ms)
                bar.update(1)
            pass_means.append(float(np.mean(this_pass)))
            stage_ms += this_pass
    rank = max(1, math.ceil(P95_QUANTILE * len(stage_ms) - 1e-9))
    return VerificationReport(
        images=len(chosen),
        passes=passes,
        predicted=predicted,
        measured_miou=mean_iou(confusion),
        decisions_matching=matching,
        pass_mean_ms=tuple(pass_means),
        measured_p95_ms=float(np.sort(stage_ms)[rank - 1]),
        frame_mean_ms=float(np.mean(frame_ms)),
        search=search,
        tolerance=tolerance,
        backend=engine.backend,
    )
