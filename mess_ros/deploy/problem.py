"""What the search scores from, and the exact score of one exit configuration.

A *configuration* is what a robot deploys with the ``confidence`` policy:

* a set of active intermediate exits, at most one per candidate point, each
  with its head architecture (the final exit is always active);
* one pixel threshold (a multiple of ``1 / bins`` of the cache's confidence
  histogram, so the histogram answers exactly);
* image thresholds, either one shared by all exits or one per exit.

An image leaves at the first active exit (in depth order) whose *score*
reaches that exit's image threshold; otherwise it reaches the final exit.
The score is what the configuration's *decision* reads from the exit's output:

* ``confidence`` (the paper's): the share of pixels with top-1 probability
  ``>= pixel threshold`` (from the cache's confidence histogram);
* ``class``: the share of pixels whose top-1 probability reaches the
  threshold of their top-1 class (per-class histogram, thresholds on its grid);
* ``learnt``: the exit model's probability that the exit's mask is as good as
  the final exit's (:mod:`mess_ros.runtime.exit_model`), scored per image
  with the engine's own code into ``learnt_scores``.
 Because each image's outcome
depends only on its own cached numbers, the accuracy of a configuration is
exact: the confusion matrices of the exits the images take are summed and the
Cityscapes mIoU is computed from the sum (:mod:`mess_ros.common.metrics`).

Latency follows the engine: a frame that leaves at exit ``e`` pays the
backbone blocks up to ``e``'s point, every active head up to and including
``e`` (the earlier ones were evaluated and rejected), and the output
(upsample + argmax) of ``e``. Two statistics are offered:

* ``mean``: the mean over calibration images of that cost with every
  component's mean time;
* ``p95``: the 95th percentile (nearest rank: the smallest cost that at least
  95 % of the images do not exceed) over images of the same cost computed
  with every component's high quantile from the latency table. Summing
  component quantiles over-estimates the quantile of the sum, so this is a
  conservative tail estimate, which is what a deadline needs.

Everything here is numpy only, so the search imports without torch.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt

from mess_ros.common.exits import FINAL_EXIT
from mess_ros.common.metrics import mean_iou
from mess_ros.deploy.errors import InputMismatchError, SearchSpaceError

StatName = Literal["mean", "p95"]
STATS: tuple[StatName, ...] = get_args(StatName)
DecisionName = Literal["confidence", "class", "learnt"]
DECISIONS: tuple[DecisionName, ...] = get_args(DecisionName)
P95_QUANTILE = 0.95

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
Int16Array = npt.NDArray[np.int16]


# --------------------------------------------------------------------------------------------
# Problem: what the cache and the latency table say, in arrays aligned with the candidates
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExitCandidate:
    """An intermediate exit the search may activate (one head at one candidate point)."""

    exit_id: str
    point: str
    arch: str
    params: int = 0

    @property
    def head_name(self) -> str:
        return self.exit_id.partition(":")[2]


@dataclass(frozen=True)
class ComponentCosts:
    """One latency statistic (mean, or the table's high quantile) of every component, in ms.

    ``segment_ms`` holds the backbone block ending at each point (the first
    includes the stem); ``head_ms`` a head plus its confidence; ``output_ms``
    the upsample and argmax of one exit to the input size.
    """

    segment_ms: Mapping[str, float]
    head_ms: Mapping[str, float]
    output_ms: Mapping[str, float]


@dataclass(frozen=True, eq=False)
class SearchProblem:
    """Everything the search scores from, aligned with ``candidates`` then the final exit.

    ``confusion`` is ``[N, E + 1, C, C]`` and ``conf_hist`` ``[N, E + 1, BINS]``
    with ``E = len(candidates)`` and the final exit last; candidates are in
    depth order (point, then exit id). ``costs`` has one entry per statistic
    (``"mean"`` and ``"p95"``, the latter holding the components' high quantile).
    ``class_hist`` (``[N, E + 1, C, CLASS_BINS]``) is needed by the ``class``
    decision and to fit exit models; ``learnt_scores`` (``[N, E + 1]``, the
    final column unused) by the ``learnt`` decision.
    """

    points: tuple[str, ...]
    candidates: tuple[ExitCandidate, ...]
    confusion: IntArray
    conf_hist: IntArray
    costs: Mapping[StatName, ComponentCosts]
    final_params: int = 0
    class_names: tuple[str, ...] = ()
    class_hist: IntArray | None = None
    learnt_scores: FloatArray | None = None

    def __post_init__(self) -> None:
        problems = self._problems()
        if problems:
            raise InputMismatchError("inconsistent search inputs: " + "; ".join(problems))

    def _problems(self) -> list[str]:
        problems: list[str] = []
        if len(self.points) < 1 or len(set(self.points)) != len(self.points):
            return [f"backbone points must be unique and non-empty, got {list(self.points)}"]
        depth = {point: index for index, point in enumerate(self.points)}
        ids = [c.exit_id for c in self.candidates]
        if len(set(ids)) != len(ids) or FINAL_EXIT in ids:
            problems.append(f"candidate exit ids must be unique and not {FINAL_EXIT!r}: {ids}")
        for candidate in self.candidates:
            if depth.get(candidate.point, len(self.points) - 1) >= len(self.points) - 1:
                problems.append(
                    f"exit {candidate.exit_id!r} sits at {candidate.point!r}, which is not a "
                    f"candidate point (expected one of {list(self.points[:-1])})"
                )
        if not problems:
            keys = [(depth[c.point], c.exit_id) for c in self.candidates]
            if keys != sorted(keys):
                problems.append("candidates must be sorted by depth (point, then exit id)")
        exits = len(self.candidates) + 1
        if self.confusion.ndim != 4 or self.confusion.shape[1] != exits:
            problems.append(
                f"confusion has shape {self.confusion.shape}, expected [N, {exits}, C, C]"
            )
        elif self.confusion.shape[2] != self.confusion.shape[3] or self.confusion.shape[0] < 1:
            problems.append(f"confusion has shape {self.confusion.shape}, expected [N>0, E, C, C]")
        if self.conf_hist.ndim != 3 or self.conf_hist.shape[:2] != self.confusion.shape[:2]:
            problems.append(
                f"conf_hist has shape {self.conf_hist.shape}, expected "
                f"[{self.confusion.shape[0]}, {exits}, BINS]"
            )
        if problems:
            return problems
        if self.conf_hist.shape[2] < 2 or (self.conf_hist.sum(axis=2) <= 0).any():
            problems.append("every confidence histogram must hold at least one pixel")
        classes = self.confusion.shape[2]
        if self.class_hist is not None and (
            self.class_hist.ndim != 4
            or self.class_hist.shape[:3] != (*self.conf_hist.shape[:2], classes)
        ):
            problems.append(
                f"class_hist has shape {self.class_hist.shape}, expected "
                f"[{self.confusion.shape[0]}, {exits}, {classes}, BINS]"
            )
        if self.learnt_scores is not None and self.learnt_scores.shape != self.conf_hist.shape[:2]:
            problems.append(
                f"learnt_scores has shape {self.learnt_scores.shape}, expected "
                f"{self.conf_hist.shape[:2]}"
            )
        ground_truth = self.confusion.sum(axis=3)
        if (ground_truth != ground_truth[:, :1]).any():
            problems.append("confusion matrices of one image disagree on its ground truth")
        elif ground_truth.sum() <= 0:
            problems.append("the calibration images hold no labelled pixel")
        problems.extend(self._cost_problems())
        return problems

    def _cost_problems(self) -> list[str]:
        problems: list[str] = []
        missing_stats = [stat for stat in STATS if stat not in self.costs]
        if missing_stats:
            return [f"latency costs lack the statistics {missing_stats}"]
        exit_ids = self.exit_ids
        for stat in STATS:
            costs = self.costs[stat]
            needs = (
                ("segment", costs.segment_ms, self.points),
                ("head", costs.head_ms, exit_ids),
                ("output", costs.output_ms, exit_ids),
            )
            for kind, values, names in needs:
                absent = [name for name in names if name not in values]
                if absent:
                    problems.append(f"no {stat} {kind} latency for {absent}")
                bad = [n for n in names if n in values and not (values[n] >= 0.0)]
                bad += [n for n in names if n in values and not math.isfinite(values[n])]
                if bad:
                    problems.append(f"{stat} {kind} latency of {sorted(set(bad))} is not >= 0")
        return problems

    @property
    def exit_ids(self) -> list[str]:
        """Candidate exit ids in depth order, then the final exit: the arrays' column order."""
        return [c.exit_id for c in self.candidates] + [FINAL_EXIT]

    @property
    def num_images(self) -> int:
        return int(self.confusion.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.confusion.shape[2])

    @property
    def bins(self) -> int:
        return int(self.conf_hist.shape[2])

    def subset(self, images: npt.NDArray[np.intp]) -> SearchProblem:
        """The same problem on some of its images (in the order given)."""
        index = np.asarray(images, dtype=np.intp)
        return replace(
            self,
            confusion=self.confusion[index],
            conf_hist=self.conf_hist[index],
            class_hist=None if self.class_hist is None else self.class_hist[index],
            learnt_scores=None if self.learnt_scores is None else self.learnt_scores[index],
        )

    def require_class_hist(self, purpose: str) -> IntArray:
        if self.class_hist is None:
            msg = (
                f"{purpose} needs the calibration cache's per-class confidence histograms, "
                "which this one lacks (format version 1); rebuild it with "
                "`python -m mess_ros.train.calibration CHECKPOINT CACHE.npz`"
            )
            raise SearchSpaceError(msg)
        return self.class_hist

    def require_learnt_scores(self) -> FloatArray:
        if self.learnt_scores is None:
            raise SearchSpaceError(
                "the learnt decision needs an exit model's scores (fit one first)"
            )
        return self.learnt_scores

    def candidate(self, exit_id: str) -> ExitCandidate:
        for candidate in self.candidates:
            if candidate.exit_id == exit_id:
                return candidate
        valid = ", ".join(c.exit_id for c in self.candidates) or "(none)"
        raise SearchSpaceError(f"unknown exit {exit_id!r}; candidate exits: {valid}")

    def exit_point(self, exit_id: str) -> str:
        return self.points[-1] if exit_id == FINAL_EXIT else self.candidate(exit_id).point

    def path_ms(self, active_exits: Sequence[str], taken: str, stat: StatName = "mean") -> float:
        """Cost of a frame that leaves at ``taken`` with ``active_exits`` (final implied) active.

        The same definition as the runtime latency table's ``path_ms``: the blocks
        up to ``taken``'s point, the heads of the active exits up to and
        including it, and its output.
        """
        costs = self.costs[stat]
        order = {point: index for index, point in enumerate(self.points)}
        active = [e for e in active_exits if e != FINAL_EXIT] + [FINAL_EXIT]
        if taken not in active:
            raise SearchSpaceError(f"exit {taken!r} is not among the active exits {active}")
        depth = order[self.exit_point(taken)]
        blocks = sum(costs.segment_ms[point] for point in self.points[: depth + 1])
        heads = sum(
            costs.head_ms[e] for e in active if order[self.exit_point(e)] < depth or e == taken
        )
        return float(blocks + heads + costs.output_ms[taken])


def confident_shares(counts: IntArray, totals: IntArray) -> FloatArray:
    """Share of confident pixels exactly as the engine's policy sees it.

    The engine computes the share as a float32 mean of 0/1 pixels (exact sum
    below 2**24 pixels, one correctly rounded division: bit-identical to
    ``count / total`` in float32) and hands it to the policy as a Python float,
    which compares it with the threshold in double precision. Reproducing both
    steps keeps predicted exit decisions identical to the engine's, ties included.
    """
    shares = np.asarray(counts, dtype=np.float32) / np.asarray(totals, dtype=np.float32)
    return np.asarray(shares, dtype=np.float64)


def _threshold_levels(shares: FloatArray, image_thresholds: FloatArray) -> Int16Array:
    """How many of the ascending image thresholds each share passes (``share >= t``)."""
    return np.searchsorted(image_thresholds, shares, side="right").astype(np.int16)


# --------------------------------------------------------------------------------------------
# Configurations and their exact evaluation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExitConfiguration:
    """Active intermediate exits (depth order, final implied), decision and its thresholds.

    ``image_thresholds`` has one value per exit in ``exits``; when they are all
    equal the parameter file writes a single shared value. ``class_thresholds``
    (one per class) are the ``class`` decision's; ``pixel_threshold`` is then
    the grid value they were derived from, and unused by ``learnt``.
    """

    exits: tuple[str, ...]
    pixel_threshold: float
    image_thresholds: tuple[float, ...]
    decision: DecisionName = "confidence"
    class_thresholds: tuple[float, ...] = ()

    @property
    def active_exits(self) -> tuple[str, ...]:
        return (*self.exits, FINAL_EXIT)

    @property
    def shared_threshold(self) -> bool:
        return len(set(self.image_thresholds)) <= 1

    def describe(self) -> str:
        if not self.exits:
            return "final exit only"
        what = "decision threshold" if self.decision == "learnt" else "image threshold"
        thresholds = (
            f"{what} {self.image_thresholds[0]:g}"
            if self.shared_threshold
            else f"{what}s " + "/".join(f"{t:g}" for t in self.image_thresholds)
        )
        if self.decision == "learnt":
            return f"exits {', '.join(self.exits)} + final; learnt decision; {thresholds}"
        if self.decision == "class":
            pixel = "class thresholds " + "/".join(f"{t:g}" for t in self.class_thresholds)
        else:
            pixel = f"pixel threshold {self.pixel_threshold:g}"
        return f"exits {', '.join(self.exits)} + final; {pixel}; {thresholds}"


@dataclass(frozen=True)
class ScoredConfiguration:
    """A configuration with its exact accuracy and predicted latency on the calibration images."""

    config: ExitConfiguration
    miou: float
    mean_ms: float
    p95_ms: float
    exit_counts: tuple[int, ...]
    """Images leaving at each active exit, final last."""

    def latency_ms(self, stat: StatName) -> float:
        return self.mean_ms if stat == "mean" else self.p95_ms

    @property
    def exit_shares(self) -> tuple[float, ...]:
        total = sum(self.exit_counts)
        return tuple(count / total for count in self.exit_counts) if total else ()

    def summary(self) -> str:
        """One line a person reads: accuracy, both latencies, the configuration."""
        return (
            f"mIoU {100.0 * self.miou:.2f}%, mean {self.mean_ms:.2f} ms, p95 {self.p95_ms:.2f} ms: "
            f"{self.config.describe()}"
        )


def pixel_bin(problem: SearchProblem, pixel_threshold: float) -> int:
    """Histogram bin of a pixel threshold; it must lie on the histogram grid to be exact."""
    scaled = pixel_threshold * problem.bins
    index = round(scaled)
    if not (0 <= index < problem.bins) or abs(scaled - index) > 1e-9:
        msg = (
            f"pixel threshold {pixel_threshold!r} is not a multiple of 1/{problem.bins} in "
            f"[0, {(problem.bins - 1) / problem.bins:g}]; only those are answered exactly by the "
            "calibration cache"
        )
        raise SearchSpaceError(msg)
    return int(index)


def class_bins(problem: SearchProblem, class_thresholds: Sequence[float]) -> list[int]:
    """Per-class histogram bins of class thresholds; they must lie on its grid to be exact."""
    hist = problem.require_class_hist("the class decision")
    bins = hist.shape[3]
    if len(class_thresholds) != problem.num_classes:
        msg = f"{len(class_thresholds)} class thresholds for {problem.num_classes} classes"
        raise SearchSpaceError(msg)
    result = []
    for threshold in class_thresholds:
        scaled = threshold * bins
        index = round(scaled)
        if not (0 <= index < bins) or abs(scaled - index) > 1e-9:
            msg = (
                f"class threshold {threshold!r} is not a multiple of 1/{bins} in "
                f"[0, {(bins - 1) / bins:g}]; only those are answered exactly by the cache"
            )
            raise SearchSpaceError(msg)
        result.append(int(index))
    return result


def decision_scores(problem: SearchProblem, config: ExitConfiguration) -> FloatArray:
    """[E+1, N]: every exit's score on every image under ``config``'s decision and settings.

    The numbers the engine compares with the image thresholds, computed the
    way it computes them (see :func:`confident_shares` and the module doc).
    """
    totals = problem.conf_hist.sum(axis=2)  # [N, E+1]
    if config.decision == "learnt":
        return np.ascontiguousarray(problem.require_learnt_scores().T)
    if config.decision == "class":
        hist = problem.require_class_hist("the class decision")
        bins = class_bins(problem, config.class_thresholds)
        passing = np.zeros(totals.shape, dtype=np.int64)
        for c, start in enumerate(bins):
            passing += hist[:, :, c, start:].sum(axis=2)
        return np.ascontiguousarray(confident_shares(passing, totals).T)
    bin_index = pixel_bin(problem, config.pixel_threshold)
    passing = problem.conf_hist[:, :, bin_index:].sum(axis=2)
    return np.ascontiguousarray(confident_shares(passing, totals).T)


def exit_decisions(problem: SearchProblem, config: ExitConfiguration) -> IntArray:
    """Per calibration image, the index in ``config.active_exits`` of the exit it leaves at."""
    columns = _config_columns(problem, config)
    decision = np.full(problem.num_images, len(config.exits), dtype=np.int64)
    if not config.exits:
        return decision
    scores = decision_scores(problem, config)
    undecided = np.ones(problem.num_images, dtype=bool)
    for index, (column, threshold) in enumerate(zip(columns, config.image_thresholds, strict=True)):
        passes = scores[column] >= threshold
        leaving = undecided & passes
        decision[leaving] = index
        undecided &= ~leaving
    return decision


def _config_columns(problem: SearchProblem, config: ExitConfiguration) -> list[int]:
    ids = problem.exit_ids
    columns = []
    for exit_id in config.exits:
        problem.candidate(exit_id)  # raises with the valid names
        columns.append(ids.index(exit_id))
    points = [problem.points.index(problem.exit_point(e)) for e in config.exits]
    if any(b <= a for a, b in itertools.pairwise(points)):
        msg = f"exits {list(config.exits)} must be at distinct points in depth order"
        raise SearchSpaceError(msg)
    if len(config.image_thresholds) != len(config.exits):
        msg = (
            f"{len(config.image_thresholds)} image thresholds for {len(config.exits)} exits; "
            "give one per intermediate exit"
        )
        raise SearchSpaceError(msg)
    return columns


def evaluate(problem: SearchProblem, config: ExitConfiguration) -> ScoredConfiguration:
    """Score one configuration directly (image by image), independently of the vectorised search.

    This is the reference the search's numbers are checked against and the
    prediction the verification step compares with the engine.
    """
    decision = exit_decisions(problem, config)
    columns = [*_config_columns(problem, config), len(problem.candidates)]
    images = np.arange(problem.num_images)
    confusion = problem.confusion[images, np.asarray(columns)[decision]].sum(axis=0)
    counts = np.bincount(decision, minlength=len(columns)).astype(np.int64)
    mean_costs = np.array(
        [problem.path_ms(config.exits, taken, "mean") for taken in config.active_exits]
    )
    tail_costs = np.array(
        [problem.path_ms(config.exits, taken, "p95") for taken in config.active_exits]
    )
    return ScoredConfiguration(
        config=config,
        miou=mean_iou(confusion),
        mean_ms=float(mean_latency(counts[None, :], mean_costs)[0]),
        p95_ms=float(p95_latency(counts[None, :], tail_costs)[0]),
        exit_counts=tuple(int(c) for c in counts),
    )


def mean_latency(counts: IntArray, costs: FloatArray) -> FloatArray:
    """Mean per-image cost given how many images leave at each exit (final last)."""
    return np.asarray((counts @ costs) / counts.sum(axis=1), dtype=np.float64)


def p95_latency(counts: IntArray, costs: FloatArray) -> FloatArray:
    """Nearest-rank 95th percentile of per-image costs given counts per exit (final last)."""
    order = np.argsort(costs, kind="stable")
    cumulative = np.cumsum(counts[:, order], axis=1)
    rank = np.ceil(P95_QUANTILE * cumulative[:, -1:] - 1e-9)
    first = np.argmax(cumulative >= rank, axis=1)
    return np.asarray(costs[order][first], dtype=np.float64)


def per_image_stats(problem: SearchProblem) -> tuple[IntArray, IntArray]:
    """Per image and exit: true positives and predicted pixels per class ([N, E+1, C] each).

    With the ground-truth counts (the same for every exit) they determine
    every class's IoU, so the search sums 2C numbers per image instead of C*C.
    """
    true_pos = np.diagonal(problem.confusion, axis1=2, axis2=3)
    predicted = problem.confusion.sum(axis=2)
    return np.asarray(true_pos, dtype=np.int64), np.asarray(predicted, dtype=np.int64)


def exit_levels(
    problem: SearchProblem,
    settings: Sequence[ExitConfiguration],
    image_thresholds: Sequence[float],
) -> Int16Array:
    """[E+1, P, N]: how many image thresholds each exit passes per setting and image.

    ``settings`` are configurations without exits that carry the decision and
    its pixel or class thresholds, one per value the search enumerates.
    """
    scores = np.stack([decision_scores(problem, setting) for setting in settings], axis=1)
    levels = _threshold_levels(scores, np.asarray(image_thresholds, dtype=np.float64))
    return np.ascontiguousarray(levels)
