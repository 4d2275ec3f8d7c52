"""Fitting the exit decisions on some calibration images and reporting them on others.

A threshold or an exit model chosen on the images it is then scored on
promises more than it keeps: the search finds the configuration that is
luckiest on those images. So the calibration images are split in two
(:func:`split_images`, the same share of every difficulty level in each):
exit models, class-threshold offsets and the search's choice come from the
*fit* part, and every figure a robot file states is an exact evaluation on
the *held-out* part, with the very exit model that ships.

Three decisions are searched (see :mod:`mess_ros.deploy.problem`):
``confidence`` (the paper's), ``class`` (per-class pixel thresholds: each
class's threshold is the searched pixel threshold shifted by how much less or
more confident that class's pixels typically are) and ``learnt`` (a logistic
regression per exit on the exit's output, :mod:`mess_ros.runtime.exit_model`,
trained to say whether the exit's mask is within ``tolerance`` per-image mIoU
of the final exit's).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from mess_ros.common.metrics import per_image_miou
from mess_ros.deploy.errors import SearchSpaceError
from mess_ros.deploy.pareto import pareto_indices
from mess_ros.deploy.problem import (
    DecisionName,
    ExitConfiguration,
    FloatArray,
    IntArray,
    ScoredConfiguration,
    SearchProblem,
    StatName,
    evaluate,
)
from mess_ros.deploy.search import (
    DEFAULT_DECISION_THRESHOLDS,
    SearchResult,
    SearchSpace,
    search,
)
from mess_ros.runtime.exit_model import ExitPredictor, ExitScorer, exit_features

DEFAULT_HOLDOUT_SHARE = 0.5
DEFAULT_TOLERANCE = 0.01
"""Per-image mIoU an exit may lose against the final exit and still count as good enough."""
DEFAULT_L2 = 1.0
CLASS_PIXEL_THRESHOLDS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
"""Pixel thresholds the class decision shifts per class (multiples of its 0.05 grid)."""
_NEWTON_STEPS = 100


@dataclass(frozen=True)
class ImageSplit:
    """Indices of the calibration images fitted on and of those reported on (disjoint)."""

    fit: npt.NDArray[np.intp]
    held_out: npt.NDArray[np.intp]


def split_images(difficulty: IntArray, holdout_share: float = DEFAULT_HOLDOUT_SHARE) -> ImageSplit:
    """Every difficulty level split alike, deterministically, by position within its level."""
    if not 0.0 < holdout_share < 1.0:
        raise SearchSpaceError(f"held-out share must lie in (0, 1), got {holdout_share}")
    held_out = np.zeros(len(difficulty), dtype=bool)
    for level in np.unique(difficulty):
        members = np.flatnonzero(difficulty == level)
        rank = np.arange(len(members))
        held_out[members] = np.floor((rank + 1) * holdout_share) > np.floor(rank * holdout_share)
    split = ImageSplit(np.flatnonzero(~held_out), np.flatnonzero(held_out))
    if split.fit.size == 0 or split.held_out.size == 0:
        msg = f"{len(difficulty)} calibration images cannot be split {holdout_share:g} held out"
        raise SearchSpaceError(msg)
    return split


# --------------------------------------------------------------------------------------------
# The learnt decision
# --------------------------------------------------------------------------------------------


def good_enough(problem: SearchProblem, tolerance: float) -> npt.NDArray[np.bool_]:
    """[N, E+1]: the exit's per-image mIoU is at most ``tolerance`` below the final exit's."""
    miou = per_image_miou(problem.confusion)
    return np.asarray(miou >= miou[:, -1:] - tolerance - 1e-12, dtype=bool)


def image_features(problem: SearchProblem, column: int) -> FloatArray:
    """[N, F]: :func:`exit_features` of one exit on every image."""
    hist = problem.require_class_hist("the learnt decision")
    return np.stack([exit_features(hist[n, column]) for n in range(problem.num_images)])


def fit_logistic(features: FloatArray, target: npt.NDArray[np.bool_], l2: float) -> ExitScorer:
    """L2-regularised logistic regression by Newton's method: deterministic, no learning rate."""
    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    design = np.concatenate(((features - mean) / scale, np.ones((len(features), 1))), axis=1)
    labels = target.astype(np.float64)
    penalty = np.full(design.shape[1], l2)
    penalty[-1] = 0.0  # the bias is not shrunk
    weights = np.zeros(design.shape[1])
    for _ in range(_NEWTON_STEPS):
        probability = 1.0 / (1.0 + np.exp(-(design @ weights)))
        gradient = design.T @ (probability - labels) + penalty * weights
        curvature = probability * (1.0 - probability)
        hessian = (design * curvature[:, None]).T @ design + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        weights = weights - step
        if float(np.abs(step).max()) < 1e-10:
            break
    return ExitScorer(
        weights=tuple(float(w) for w in weights[:-1]),
        bias=float(weights[-1]),
        mean=tuple(float(m) for m in mean),
        scale=tuple(float(s) for s in scale),
    )


def fit_exit_predictor(
    problem: SearchProblem,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    l2: float = DEFAULT_L2,
    checkpoint_fingerprint: str = "",
    fit_images: Sequence[int] = (),
) -> ExitPredictor:
    """One logistic regression per candidate exit, trained on every image of ``problem``.

    ``fit_images`` (indices into the whole cache) is only recorded in the file.
    """
    hist = problem.require_class_hist("the learnt decision")
    targets = good_enough(problem, tolerance)
    scorers = {
        candidate.exit_id: fit_logistic(image_features(problem, column), targets[:, column], l2)
        for column, candidate in enumerate(problem.candidates)
    }
    return ExitPredictor(
        class_names=problem.class_names or tuple(f"class{c}" for c in range(problem.num_classes)),
        bins=int(hist.shape[3]),
        tolerance=tolerance,
        checkpoint_fingerprint=checkpoint_fingerprint,
        scorers=scorers,
        fit={"images": len(targets), "l2": l2, "image_indices": [int(i) for i in fit_images]},
    )


def with_learnt_scores(problem: SearchProblem, predictor: ExitPredictor) -> SearchProblem:
    """``problem`` with every candidate exit scored on every image by the engine's own code."""
    hist = problem.require_class_hist("the learnt decision")
    scores = np.full((problem.num_images, len(problem.candidates) + 1), np.nan)
    for column, candidate in enumerate(problem.candidates):
        for n in range(problem.num_images):
            scores[n, column] = predictor.score(candidate.exit_id, hist[n, column])
    return replace(problem, learnt_scores=scores)


# --------------------------------------------------------------------------------------------
# The class decision
# --------------------------------------------------------------------------------------------


def class_offsets(problem: SearchProblem) -> FloatArray:
    """Per class: how much its pixels' median top-1 probability lies above all pixels' median.

    Taken over every candidate exit and image of ``problem``, on the
    histogram's bin centres.
    """
    hist = problem.require_class_hist("the class decision")[:, :-1]
    per_class = hist.sum(axis=(0, 1)).astype(np.float64)  # [C, B]
    bins = per_class.shape[1]
    centres = (np.arange(bins) + 0.5) / bins

    def median(counts: FloatArray) -> float:
        cumulative = np.cumsum(counts)
        if cumulative[-1] <= 0:
            return float("nan")
        return float(centres[np.searchsorted(cumulative, cumulative[-1] / 2.0)])

    overall = median(per_class.sum(axis=0))
    offsets = np.array([median(row) - overall for row in per_class], dtype=np.float64)
    return np.asarray(np.nan_to_num(offsets, nan=0.0), dtype=np.float64)


def class_threshold_grid(
    problem: SearchProblem, pixel_thresholds: Sequence[float] = CLASS_PIXEL_THRESHOLDS
) -> tuple[tuple[float, ...], ...]:
    """Per pixel threshold, per-class thresholds shifted by :func:`class_offsets`, on the grid."""
    hist = problem.require_class_hist("the class decision")
    bins = hist.shape[3]
    offsets = class_offsets(problem)
    return tuple(
        tuple(float(min(max(round((pixel + o) * bins), 0), bins - 1) / bins) for o in offsets)
        for pixel in pixel_thresholds
    )


# --------------------------------------------------------------------------------------------
# Held-out search
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeldOutSearch:
    """The search on the fit images, and every front configuration scored on the held-out ones.

    ``held_out[i]`` is ``result.front[i]`` evaluated on the held-out images;
    ``predictor`` is the exit model the learnt configurations run with.
    """

    result: SearchResult
    held_out: tuple[ScoredConfiguration, ...]
    held_out_baseline: ScoredConfiguration
    split: ImageSplit
    fit_problem: SearchProblem
    held_out_problem: SearchProblem
    predictor: ExitPredictor | None

    def on_held_out(self, scored: ScoredConfiguration) -> ScoredConfiguration:
        """The held-out figures of a configuration of the front (or of any configuration)."""
        return evaluate(self.held_out_problem, scored.config)


def decision_space(
    base: SearchSpace, decision: DecisionName, fit_problem: SearchProblem
) -> SearchSpace:
    """``base`` for one decision: its settings grid and its thresholds grid."""
    if decision == "learnt":
        image = base.image_thresholds
        if image == SearchSpace().image_thresholds:
            image = DEFAULT_DECISION_THRESHOLDS
        return replace(base, decision="learnt", pixel_thresholds=(0.0,), image_thresholds=image)
    if decision == "class":
        pixels = CLASS_PIXEL_THRESHOLDS
        grid = class_threshold_grid(fit_problem, pixels)
        return replace(base, decision="class", pixel_thresholds=pixels, class_thresholds=grid)
    return replace(base, decision="confidence", class_thresholds=())


def search_held_out(
    problem: SearchProblem,
    split: ImageSplit,
    decisions: Sequence[DecisionName] = ("confidence",),
    space: SearchSpace | None = None,
    stat: StatName = "mean",
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    checkpoint_fingerprint: str = "",
    progress: bool = False,
) -> HeldOutSearch:
    """Fit and search on ``split.fit``; score the front on ``split.held_out``.

    With several decisions, each is searched exhaustively and the fronts are
    merged into one (a configuration of any decision that another does not
    beat on the fit images stays).
    """
    if not decisions:
        raise SearchSpaceError("give at least one exit decision to search")
    started = time.perf_counter()
    space = space or SearchSpace()
    fit_problem = problem.subset(split.fit)
    held_problem = problem.subset(split.held_out)
    predictor = None
    if "learnt" in decisions:
        predictor = fit_exit_predictor(
            fit_problem,
            tolerance=tolerance,
            checkpoint_fingerprint=checkpoint_fingerprint,
            fit_images=[int(i) for i in split.fit],
        )
        fit_problem = with_learnt_scores(fit_problem, predictor)
        held_problem = with_learnt_scores(held_problem, predictor)
    results = [
        search(fit_problem, decision_space(space, d, fit_problem), stat, progress=progress)
        for d in dict.fromkeys(decisions)
    ]
    result = merge_results(results, time.perf_counter() - started)
    return HeldOutSearch(
        result=result,
        held_out=tuple(evaluate(held_problem, s.config) for s in result.front),
        held_out_baseline=evaluate(held_problem, result.baseline.config),
        split=split,
        fit_problem=fit_problem,
        held_out_problem=held_problem,
        predictor=predictor,
    )


def merge_results(results: Sequence[SearchResult], elapsed_s: float) -> SearchResult:
    """One front from the fronts of several searches on the same images."""
    first = results[0]
    front = [s for r in results for s in r.front]
    keep = pareto_indices(
        np.array([s.latency_ms(first.stat) for s in front]), np.array([s.miou for s in front])
    )
    return SearchResult(
        front=tuple(front[i] for i in keep),
        baseline=first.baseline,
        stat=first.stat,
        configurations_scored=sum(r.configurations_scored for r in results),
        configurations_in_space=sum(r.configurations_in_space for r in results),
        exit_sets=sum(r.exit_sets for r in results),
        pruned_heads=tuple(p for r in results for p in r.pruned_heads),
        elapsed_s=elapsed_s,
    )


def final_only() -> ExitConfiguration:
    """The single-exit baseline configuration."""
    return ExitConfiguration((), 0.0, ())
