"""Exhaustive search of exit configurations, scored exactly from the calibration cache.

What a configuration is, and how its accuracy and latency are defined, is in
:mod:`mess_ros.deploy.problem`; this module enumerates every configuration of
a search space and keeps the Pareto front of mIoU against latency.

Speed comes from three things. Exit sets are enumerated as a prefix tree in
depth order, so extending a configuration by a deeper exit only touches the
images that are still undecided. All thresholds of a node are scored at once
with numpy (one row per threshold combination; mIoU needs only per-class true
positives and predictions, since ground-truth counts do not depend on the
exit). And configurations that cannot be on the Pareto front are skipped
without being scored, each for a reason that is a proof, not a heuristic:

* an exit that no image leaves at adds latency and changes no outcome, so the
  configuration is dominated by the same configuration without that exit,
  which is enumerated anyway; as thresholds only rise, every threshold above
  the largest share of the undecided images is skipped (*monotone thresholds*);
* per-exit thresholds that let exactly the same images leave are the same
  configuration; one representative (the strictest threshold) is scored;
* a head is dropped when another head at the same point is provably at least
  as good for every image and every threshold and no slower or bigger
  (:func:`dominated_heads`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from mess_ros.common.exits import FINAL_EXIT
from mess_ros.deploy.errors import SearchSpaceError, UnreachableTargetError
from mess_ros.deploy.pareto import pareto_indices
from mess_ros.deploy.problem import (
    DECISIONS,
    STATS,
    DecisionName,
    ExitCandidate,
    ExitConfiguration,
    FloatArray,
    Int16Array,
    IntArray,
    ScoredConfiguration,
    SearchProblem,
    StatName,
    class_bins,
    evaluate,
    exit_levels,
    mean_latency,
    p95_latency,
    per_image_stats,
    pixel_bin,
)

ThresholdMode = Literal["shared", "per_exit"]
THRESHOLD_MODES: tuple[ThresholdMode, ...] = get_args(ThresholdMode)

DEFAULT_PIXEL_THRESHOLDS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.98)
DEFAULT_IMAGE_THRESHOLDS = (0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
DEFAULT_DECISION_THRESHOLDS = (
    0.3, 0.4, 0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.875, 0.9, 0.925, 0.95, 0.975, 0.99,
)  # fmt: skip
"""Grid of the learnt decision's thresholds (on its predicted probability)."""

BoolArray = npt.NDArray[np.bool_]
DeltaArray = npt.NDArray[np.float32] | npt.NDArray[np.float64]

_CHUNK_ELEMENTS = 1 << 21
"""Rows x images per vectorised block: bounds memory (16 MB per float64 block) at any depth."""


# --------------------------------------------------------------------------------------------
# Search space, target and result
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchSpace:
    """What the search enumerates and the robot's limits.

    ``max_exits`` counts the final exit. ``allowed_heads`` holds head
    architectures (``"fcn"``) or full head names (``"fcn_c64_k2_d1"``).
    ``max_head_params`` bounds the parameters of the chosen intermediate
    heads, which is what a configuration adds to the robot's memory.
    ``decision`` says what the image thresholds threshold (see
    :mod:`mess_ros.deploy.problem`): the ``class`` decision enumerates
    ``class_thresholds`` (one vector per pixel threshold, the grid value it
    was derived from); ``learnt`` ignores the pixel thresholds.
    """

    max_exits: int = 4
    allowed_heads: frozenset[str] | None = None
    max_head_params: int | None = None
    pixel_thresholds: tuple[float, ...] = DEFAULT_PIXEL_THRESHOLDS
    image_thresholds: tuple[float, ...] = DEFAULT_IMAGE_THRESHOLDS
    thresholds: ThresholdMode = "per_exit"
    prune_dominated_heads: bool = True
    decision: DecisionName = "confidence"
    class_thresholds: tuple[tuple[float, ...], ...] = ()

    def settings(self) -> list[ExitConfiguration]:
        """The decision settings the search enumerates besides the image thresholds."""
        if self.decision == "learnt":
            return [ExitConfiguration((), 0.0, (), "learnt")]
        if self.decision == "class":
            return [
                ExitConfiguration((), pixel, (), "class", tuple(classes))
                for pixel, classes in zip(self.pixel_thresholds, self.class_thresholds, strict=True)
            ]
        return [ExitConfiguration((), pixel, ()) for pixel in self.pixel_thresholds]

    def check(self, problem: SearchProblem) -> None:
        """SearchSpaceError naming the offending setting and what is allowed."""
        if self.max_exits < 1:
            raise SearchSpaceError(f"max exits must be >= 1 (the final exit), got {self.max_exits}")
        if self.max_head_params is not None and self.max_head_params < 0:
            raise SearchSpaceError(f"max head parameters must be >= 0, got {self.max_head_params}")
        if self.thresholds not in THRESHOLD_MODES:
            msg = f"threshold mode {self.thresholds!r} is not one of {list(THRESHOLD_MODES)}"
            raise SearchSpaceError(msg)
        for name, grid in (("pixel", self.pixel_thresholds), ("image", self.image_thresholds)):
            if not grid or list(grid) != sorted(set(grid)):
                msg = f"{name} thresholds must be a non-empty increasing list, got {list(grid)}"
                raise SearchSpaceError(msg)
        if not all(0.0 <= t <= 1.0 for t in self.image_thresholds):
            msg = f"image thresholds must lie in [0, 1], got {list(self.image_thresholds)}"
            raise SearchSpaceError(msg)
        if self.decision not in DECISIONS:
            msg = f"exit decision {self.decision!r} is not one of {list(DECISIONS)}"
            raise SearchSpaceError(msg)
        if self.decision == "confidence":
            for threshold in self.pixel_thresholds:
                pixel_bin(problem, threshold)
        elif self.decision == "class":
            if len(self.class_thresholds) != len(self.pixel_thresholds):
                msg = (
                    f"{len(self.class_thresholds)} class threshold vectors for "
                    f"{len(self.pixel_thresholds)} pixel thresholds; give one per pixel threshold"
                )
                raise SearchSpaceError(msg)
            for classes in self.class_thresholds:
                class_bins(problem, classes)
        else:
            problem.require_learnt_scores()
        if self.allowed_heads is not None:
            known = {c.arch for c in problem.candidates} | {c.head_name for c in problem.candidates}
            unknown = sorted(set(self.allowed_heads) - known)
            if unknown:
                msg = (
                    f"allowed heads {unknown} match no candidate exit; the checkpoint offers "
                    f"{', '.join(sorted(known)) or '(no intermediate exit)'}"
                )
                raise SearchSpaceError(msg)

    def admits(self, candidate: ExitCandidate) -> bool:
        """Whether the robot's limits allow this head at all (architecture and memory)."""
        if self.allowed_heads is not None and not (
            candidate.arch in self.allowed_heads or candidate.head_name in self.allowed_heads
        ):
            return False
        return self.max_head_params is None or candidate.params <= self.max_head_params


@dataclass(frozen=True)
class Target:
    """Either the most accurate configuration within a latency budget, or the fastest one
    meeting an accuracy floor; ``stat`` says which latency the budget bounds."""

    budget_ms: float | None = None
    min_miou: float | None = None
    stat: StatName = "mean"

    def __post_init__(self) -> None:
        if (self.budget_ms is None) == (self.min_miou is None):
            raise SearchSpaceError("give exactly one target: a latency budget or an accuracy floor")
        if self.stat not in STATS:
            raise SearchSpaceError(f"latency statistic {self.stat!r} is not one of {list(STATS)}")
        if self.budget_ms is not None and not self.budget_ms > 0.0:
            raise SearchSpaceError(f"latency budget must be > 0 ms, got {self.budget_ms}")
        if self.min_miou is not None and not 0.0 <= self.min_miou <= 1.0:
            raise SearchSpaceError(f"accuracy floor is an mIoU in [0, 1], got {self.min_miou}")

    def describe(self) -> str:
        if self.budget_ms is not None:
            return f"max mIoU with {self.stat} latency <= {self.budget_ms:g} ms"
        return f"min {self.stat} latency with mIoU >= {self.min_miou:g}"


@dataclass(frozen=True)
class SearchResult:
    """The Pareto front (fastest first) and how the search went."""

    front: tuple[ScoredConfiguration, ...]
    baseline: ScoredConfiguration
    stat: StatName
    configurations_scored: int
    configurations_in_space: int
    exit_sets: int
    pruned_heads: tuple[tuple[str, str], ...]
    """(dropped head, head that dominates it) pairs."""
    elapsed_s: float

    @property
    def configurations_per_second(self) -> float:
        return self.configurations_scored / self.elapsed_s if self.elapsed_s > 0 else math.inf

    @property
    def fastest(self) -> ScoredConfiguration:
        return self.front[0]

    @property
    def most_accurate(self) -> ScoredConfiguration:
        return self.front[-1]

    def report(self) -> str:
        """Human-readable lines on the size and speed of the search."""
        pruned = self.configurations_in_space - self.configurations_scored
        lines = [
            f"configurations in the space: {self.configurations_in_space:,}",
            f"configurations scored: {self.configurations_scored:,} "
            f"({max(pruned, 0):,} skipped as provably dominated or identical)",
            f"exit sets visited: {self.exit_sets:,}",
            f"search time: {self.elapsed_s:.2f} s "
            f"({self.configurations_per_second:,.0f} configurations scored per second)",
            f"Pareto front: {len(self.front)} configurations ({self.stat} latency)",
        ]
        lines.extend(
            f"dropped head {dropped} (dominated by {by})" for dropped, by in self.pruned_heads
        )
        return "\n".join(lines)


def select(result: SearchResult, target: Target) -> ScoredConfiguration:
    """The configuration on the front that meets the target best.

    Raises UnreachableTargetError carrying the closest configuration (the
    fastest for a budget, the most accurate for a floor) when none meets it.
    """
    if target.stat != result.stat:
        msg = f"the target bounds {target.stat} latency but the front was searched on {result.stat}"
        raise SearchSpaceError(msg)
    stat = result.stat
    if target.budget_ms is not None:
        feasible = [s for s in result.front if s.latency_ms(stat) <= target.budget_ms]
        if not feasible:
            fastest = result.fastest
            msg = (
                f"no configuration meets the {stat} latency budget of {target.budget_ms:g} ms; "
                f"the fastest reachable one takes {fastest.latency_ms(stat):.2f} ms: "
                f"{fastest.summary()}"
            )
            raise UnreachableTargetError(msg, fastest)
        return max(feasible, key=lambda s: (s.miou, -s.latency_ms(stat)))
    assert target.min_miou is not None
    meeting = [s for s in result.front if s.miou >= target.min_miou]
    if not meeting:
        best = result.most_accurate
        msg = (
            f"no configuration reaches mIoU {target.min_miou:g}; the most accurate one reaches "
            f"{best.miou:.4f}: {best.summary()}"
        )
        raise UnreachableTargetError(msg, best)
    return min(meeting, key=lambda s: (s.latency_ms(stat), -s.miou))


# --------------------------------------------------------------------------------------------
# The vectorised search
# --------------------------------------------------------------------------------------------


@dataclass
class _Rows:
    """Threshold combinations of one exit set, one row each, with their partial outcomes."""

    pixel: npt.NDArray[np.intp]  # [M] pixel-threshold index
    thresholds: Int16Array  # [M, k] image-threshold index per exit (one column if shared)
    undecided: BoolArray  # [M, N] images not yet taken by an active exit
    stats: FloatArray  # [M, 2C] true positives then predictions per class, summed over images
    counts: IntArray  # [M, k] images taken by each active exit

    def __len__(self) -> int:
        return int(self.pixel.shape[0])

    def take(self, index: npt.NDArray[np.intp]) -> _Rows:
        return _Rows(
            self.pixel[index],
            self.thresholds[index],
            self.undecided[index],
            self.stats[index],
            self.counts[index],
        )

    def extend(
        self,
        rows: npt.NDArray[np.intp],
        taken: BoolArray,
        taken_count: IntArray,
        delta: DeltaArray,
        threshold: Int16Array | None,
        leaf: bool,
    ) -> _Rows:
        """Rows ``rows`` with one more exit that takes the images ``taken`` ([m, N]).

        ``delta`` ([N, 2C]) is that exit's per-image stats minus the final
        exit's; ``threshold`` its image-threshold index per row (None when shared).
        Rows of a ``leaf`` exit set carry no undecided images (nothing follows).
        """
        thresholds = self.thresholds[rows]
        if threshold is not None:
            thresholds = np.concatenate((thresholds, threshold[:, None]), axis=1)
        none_left = np.empty((len(rows), 0), dtype=bool)
        undecided = none_left if leaf else self.undecided[rows] & ~taken
        return _Rows(
            pixel=self.pixel[rows],
            thresholds=thresholds,
            undecided=undecided,
            stats=self.stats[rows] + np.matmul(taken.astype(delta.dtype), delta),
            counts=np.concatenate((self.counts[rows], taken_count[:, None]), axis=1),
        )


@dataclass(frozen=True)
class _Node:
    """An exit set (candidate indices in depth order) and its costs for the searched statistic."""

    exits: tuple[int, ...] = ()
    exit_costs_ms: tuple[float, ...] = ()  # cost of leaving at each active intermediate exit
    head_sum_ms: float = 0.0  # heads of the active intermediate exits (paid on the way to final)
    params: int = 0


_Key = tuple[tuple[int, ...], int, tuple[int, ...]]
"""A scored configuration as (candidate indices, pixel-threshold index, image-threshold indices)."""


@dataclass
class _Front:
    """The running Pareto front: latency ascending, mIoU strictly increasing."""

    latency_ms: FloatArray = field(default_factory=lambda: np.empty(0))
    miou: FloatArray = field(default_factory=lambda: np.empty(0))
    keys: list[_Key] = field(default_factory=list)

    def offer(self, latency_ms: FloatArray, miou: FloatArray, key: Callable[[int], _Key]) -> None:
        if self.keys:
            position = np.searchsorted(self.latency_ms, latency_ms, side="right") - 1
            best = np.where(position >= 0, self.miou[np.maximum(position, 0)], -np.inf)
            survivors = np.flatnonzero(miou > best)
        else:
            survivors = np.flatnonzero(~np.isnan(miou))
        if survivors.size == 0:
            return
        local = survivors[pareto_indices(latency_ms[survivors], miou[survivors])]
        all_latency = np.concatenate((self.latency_ms, latency_ms[local]))
        all_miou = np.concatenate((self.miou, miou[local]))
        all_keys = self.keys + [key(int(i)) for i in local]
        keep = pareto_indices(all_latency, all_miou)
        self.latency_ms, self.miou = all_latency[keep], all_miou[keep]
        self.keys = [all_keys[i] for i in keep]


class _Search:
    """One run of the exhaustive search (see the module docstring for what is enumerated)."""

    def __init__(self, problem: SearchProblem, space: SearchSpace, stat: StatName) -> None:
        space.check(problem)
        if stat not in STATS:
            raise SearchSpaceError(f"latency statistic {stat!r} is not one of {list(STATS)}")
        self.problem, self.space, self.stat = problem, space, stat
        self.n_images = problem.num_images
        self.classes = problem.num_classes
        self.shared = space.thresholds == "shared"
        self.grid = len(space.image_thresholds)
        self.settings = space.settings()

        true_pos, predicted = per_image_stats(problem)
        stats = np.concatenate((true_pos, predicted), axis=2).astype(np.float64)  # [N, E+1, 2C]
        final = stats[:, -1]
        self.base = final.sum(axis=0)
        # An image leaving early replaces the final exit's numbers by its exit's.
        delta = np.ascontiguousarray((stats[:, :-1] - final[:, None]).transpose(1, 0, 2))
        # Sums of these integers are exact in float32 while every partial sum stays below
        # 2**24 in magnitude, whatever order the matrix product adds in: then the faster
        # float32 product gives the same numbers as float64.
        bound = float(np.abs(delta).sum(axis=1).max()) if delta.size else 0.0
        self.delta: DeltaArray = delta.astype(np.float32) if bound < 2**24 else delta
        self.ground_truth = problem.confusion[:, 0].sum(axis=(0, 2)).astype(np.float64)
        self.levels = exit_levels(problem, self.settings, space.image_thresholds)[:-1]

        costs = problem.costs[stat]
        self.depth = [problem.points.index(c.point) for c in problem.candidates]
        self.params = [c.params for c in problem.candidates]
        self.segment_cum = np.cumsum([costs.segment_ms[p] for p in problem.points])
        self.head_ms = [costs.head_ms[c.exit_id] for c in problem.candidates]
        self.output_ms = [costs.output_ms[c.exit_id] for c in problem.candidates]
        self.final_ms = (
            float(self.segment_cum[-1]) + costs.head_ms[FINAL_EXIT] + costs.output_ms[FINAL_EXIT]
        )

        self.admitted = [i for i, c in enumerate(problem.candidates) if space.admits(c)]
        dropped = (
            dominated_heads(problem, space, self.admitted) if space.prune_dominated_heads else {}
        )
        self.pruned = tuple(
            (problem.candidates[a].exit_id, problem.candidates[b].exit_id)
            for a, b in dropped.items()
        )
        self.active = [i for i in self.admitted if i not in dropped]
        self.max_intermediate = space.max_exits - 1
        self.scored = 0
        self.front = _Front()

    # -- sizes -----------------------------------------------------------------------------------

    def _sets_by_size(self, indices: Sequence[int], size: int, limit: int | None) -> list[int]:
        return _count_exit_sets(
            [self.depth[i] for i in indices], [self.params[i] for i in indices], size, limit
        )

    def space_size(self) -> int:
        """Configurations in the user's space (limits applied, before any pruning)."""
        sets = self._sets_by_size(self.admitted, self.max_intermediate, self.space.max_head_params)
        per_threshold = len(self.settings)
        total = 1  # the final exit alone
        for k in range(1, len(sets)):
            total += sets[k] * per_threshold * (self.grid if self.shared else self.grid**k)
        return total

    def _subtree_sizes(self) -> dict[int, int]:
        """Exit sets whose first exit is each active candidate (the progress bar's weights)."""
        limit = self.space.max_head_params
        sizes: dict[int, int] = {}
        for index in self.active:
            if self.max_intermediate == 0 or (limit is not None and self.params[index] > limit):
                sizes[index] = 0
                continue
            deeper = [j for j in self.active if self.depth[j] > self.depth[index]]
            rest = None if limit is None else limit - self.params[index]
            sizes[index] = sum(self._sets_by_size(deeper, self.max_intermediate - 1, rest))
        return sizes

    # -- enumeration -----------------------------------------------------------------------------

    def run(self, progress: bool) -> int:
        """Score every exit set; returns the number of exit sets visited."""
        final_only = self._root(1)
        self._score(_Node(), final_only, np.array([self.final_ms]))
        pixels = len(self.settings)
        root = self._root(pixels * self.grid if self.shared else pixels)
        if self.shared:
            root.pixel = np.repeat(np.arange(pixels), self.grid)
            root.thresholds = np.tile(np.arange(self.grid, dtype=np.int16), pixels)[:, None]
        else:
            root.pixel = np.arange(pixels)
        subtree = self._subtree_sizes()
        visited = 1
        with tqdm(
            total=sum(subtree.values()) + 1, desc="search", unit="exit set", disable=not progress
        ) as bar:
            bar.update(1)
            if self.max_intermediate > 0:
                for index in self.active:
                    visited += self._visit(_Node(), root, index)
                    bar.update(subtree[index])
                    bar.set_postfix(scored=f"{self.scored:,}", front=len(self.front.keys))
        return visited

    def _root(self, rows: int) -> _Rows:
        return _Rows(
            pixel=np.zeros(rows, dtype=np.intp),
            thresholds=np.zeros((rows, 0), dtype=np.int16),
            undecided=np.ones((rows, self.n_images), dtype=bool),
            stats=np.tile(self.base, (rows, 1)),
            counts=np.zeros((rows, 0), dtype=np.int64),
        )

    def _visit(self, parent: _Node, rows: _Rows, index: int) -> int:
        """Add candidate ``index`` to ``parent``, score the new exit set, recurse deeper."""
        params = parent.params + self.params[index]
        limit = self.space.max_head_params
        if limit is not None and params > limit:
            return 0
        head_sum = parent.head_sum_ms + self.head_ms[index]
        leave_ms = float(self.segment_cum[self.depth[index]]) + head_sum + self.output_ms[index]
        node = _Node(
            exits=(*parent.exits, index),
            exit_costs_ms=(*parent.exit_costs_ms, leave_ms),
            head_sum_ms=head_sum,
            params=params,
        )
        costs = np.array((*node.exit_costs_ms, self.final_ms + head_sum))
        deeper = [
            j
            for j in self.active
            if self.depth[j] > self.depth[index]
            and (limit is None or params + self.params[j] <= limit)
        ]
        if len(node.exits) == self.max_intermediate:
            deeper = []
        visited = 1
        for child in self._expand(rows, index, leaf=not deeper):
            self._score(node, child, costs)
            for nxt in deeper:
                visited += self._visit(node, child, nxt)
        return visited

    def _expand(self, rows: _Rows, index: int, leaf: bool) -> Iterator[_Rows]:
        """Rows of the exit set extended by ``index``, in blocks of bounded size.

        Rows where the new exit takes no image are dropped (dominated by the
        parent); with per-exit thresholds, thresholds that let exactly the same
        images leave collapse into the strictest of them (identical outcome).
        A ``leaf`` exit set is never extended, so its undecided images are not kept.
        """
        block = max(1, _CHUNK_ELEMENTS // self.n_images)
        levels = self.levels[index]
        delta = self.delta[index]
        for start in range(0, len(rows), block):
            part = rows.take(np.arange(start, min(start + block, len(rows))))
            # Thresholds passed by each undecided image; decided images pass none.
            level = np.where(part.undecided, levels[part.pixel], 0)
            if self.shared:
                taken = level > part.thresholds[:, :1]
                taken_count = taken.sum(axis=1)
                keep = np.flatnonzero(taken_count > 0)
                for sel in _blocks(keep, block):
                    yield part.extend(sel, taken[sel], taken_count[sel], delta, None, leaf)
                continue
            passing = _passing_counts(level, self.grid)  # [m, T]: images passing threshold t
            stricter = np.concatenate((passing[:, 1:], np.zeros((len(part), 1), np.int64)), axis=1)
            row, threshold = np.nonzero((passing > 0) & (passing != stricter))
            for sel in _blocks(np.arange(row.size), block):
                r, t = row[sel], threshold[sel].astype(np.int16)
                taken = level[r] > t[:, None]
                yield part.extend(r, taken, passing[r, t], delta, t, leaf)

    def _score(self, node: _Node, rows: _Rows, costs: FloatArray) -> None:
        classes = self.classes
        true_pos, predicted = rows.stats[:, :classes], rows.stats[:, classes:]
        union = self.ground_truth + predicted - true_pos
        present = union > 0
        iou = np.divide(true_pos, union, out=np.zeros_like(union), where=present)
        miou = iou.sum(axis=1) / present.sum(axis=1)
        undecided = self.n_images - rows.counts.sum(axis=1)
        counts = np.concatenate((rows.counts, undecided[:, None]), axis=1)
        latency = (mean_latency if self.stat == "mean" else p95_latency)(counts, costs)
        self.scored += len(rows)

        def key(row: int) -> _Key:
            return node.exits, int(rows.pixel[row]), tuple(int(t) for t in rows.thresholds[row])

        self.front.offer(latency, miou, key)

    def configuration(self, key: _Key) -> ExitConfiguration:
        exits, pixel, thresholds = key
        grid = self.space.image_thresholds
        if self.shared:
            image = tuple(grid[thresholds[0]] for _ in exits) if exits else ()
        else:
            image = tuple(grid[t] for t in thresholds)
        if not exits:
            return ExitConfiguration((), 0.0, ())
        setting = self.settings[pixel]
        return ExitConfiguration(
            exits=tuple(self.problem.candidates[i].exit_id for i in exits),
            pixel_threshold=setting.pixel_threshold,
            image_thresholds=image,
            decision=setting.decision,
            class_thresholds=setting.class_thresholds,
        )


def _passing_counts(level: Int16Array, grid: int) -> IntArray:
    """Per row, how many images pass each threshold: images whose level exceeds its index."""
    rows = level.shape[0]
    offsets = np.arange(rows)[:, None] * (grid + 1)
    per_level = np.bincount((level + offsets).ravel(), minlength=rows * (grid + 1))
    per_level = per_level.reshape(rows, grid + 1)
    return np.asarray(np.cumsum(per_level[:, :0:-1], axis=1)[:, ::-1], dtype=np.int64)


def _count_exit_sets(
    depths: Sequence[int], params: Sequence[int], size: int, limit: int | None
) -> list[int]:
    """Exit sets (at most one exit per point) of each size 0..size within a parameter limit.

    ``depths`` must be non-decreasing (candidates in depth order).
    """
    following = [
        next((n for n in range(j + 1, len(depths)) if depths[n] > depths[j]), len(depths))
        for j in range(len(depths))
    ]

    @cache
    def count(start: int, left: int, budget: int | None) -> tuple[int, ...]:
        totals = [1] + [0] * left
        for j in range(start, len(depths)):
            if left == 0 or (budget is not None and params[j] > budget):
                continue
            rest = None if budget is None else budget - params[j]
            for k, sets in enumerate(count(following[j], left - 1, rest)):
                totals[k + 1] += sets
        return tuple(totals)

    return list(count(0, size, limit))


def _blocks(indices: npt.NDArray[np.intp], size: int) -> Iterator[npt.NDArray[np.intp]]:
    for start in range(0, indices.size, size):
        yield indices[start : start + size]


def dominated_heads(
    problem: SearchProblem, space: SearchSpace, indices: Sequence[int] | None = None
) -> dict[int, int]:
    """Candidates (by index) that another head at the same point provably dominates.

    Head ``b`` dominates head ``a`` when swapping ``a`` for ``b`` in any
    configuration, with the same thresholds, can only lower every image's
    latency and raise every class's IoU:

    * ``b`` is no bigger and neither its head nor its output is slower (mean and quantile);
    * on every image, wherever ``a`` lets it leave (any grid threshold), ``b`` does too,
      with at least as many true positives and at most as many false positives per class
      (IoU = TP / (GT + FP) then cannot drop for any class);
    * on images ``b`` lets leave while ``a`` does not, ``b`` is at least that good against
      every deeper exit the image could otherwise reach, and its output costs no more than
      the cheapest continuation to a deeper exit.

    Returns ``{dropped: dominating}``; of two identical heads the later one is dropped.
    """
    indices = list(range(len(problem.candidates))) if indices is None else list(indices)
    if not indices:
        return {}
    levels = exit_levels(problem, space.settings(), space.image_thresholds)  # [E+1, P, N]
    true_pos, predicted = per_image_stats(problem)
    false_pos = predicted - true_pos
    depth = {c.point: problem.points.index(c.point) for c in problem.candidates}
    final_column = len(problem.candidates)

    def continuation_ms(stat: StatName, point: str) -> float:
        costs = problem.costs[stat]
        cum = np.cumsum([costs.segment_ms[p] for p in problem.points])
        here = depth[point]
        options = [
            float(cum[-1] - cum[here]) + costs.head_ms[FINAL_EXIT] + costs.output_ms[FINAL_EXIT]
        ]
        for j in indices:
            other = problem.candidates[j]
            if depth[other.point] > here:
                gap = float(cum[depth[other.point]] - cum[here])
                options.append(gap + costs.head_ms[other.exit_id] + costs.output_ms[other.exit_id])
        return min(options)

    def no_slower(b: ExitCandidate, a: ExitCandidate) -> bool:
        return all(
            problem.costs[s].head_ms[b.exit_id] <= problem.costs[s].head_ms[a.exit_id]
            and problem.costs[s].output_ms[b.exit_id] <= problem.costs[s].output_ms[a.exit_id]
            for s in STATS
        )

    def better(b: int, against: int, images: BoolArray) -> bool:
        return bool(
            (true_pos[images, b] >= true_pos[images, against]).all()
            and (false_pos[images, b] <= false_pos[images, against]).all()
        )

    def dominates(b: int, a: int) -> bool:
        cand_a, cand_b = problem.candidates[a], problem.candidates[b]
        if cand_b.params > cand_a.params or not no_slower(cand_b, cand_a):
            return False
        level_a, level_b = levels[a], levels[b]
        if (level_b < level_a).any():
            return False  # a lets some image leave where b would not
        leaves_a = (level_a > 0).any(axis=0)
        if not better(b, a, leaves_a):
            return False
        extra = (level_b > level_a).any(axis=0)
        if not extra.any():
            return True
        deeper = [j for j in indices if depth[problem.candidates[j].point] > depth[cand_a.point]]
        if not all(better(b, q, extra) for q in [*deeper, final_column]):
            return False
        return all(
            problem.costs[s].output_ms[cand_b.exit_id] <= continuation_ms(s, cand_a.point)
            for s in STATS
        )

    dropped: dict[int, int] = {}
    for a in indices:
        for b in indices:
            if b == a or b in dropped or problem.candidates[b].point != problem.candidates[a].point:
                continue
            if dominates(b, a):
                dropped[a] = b
                break
    return dropped


def search(
    problem: SearchProblem,
    space: SearchSpace | None = None,
    stat: StatName = "mean",
    progress: bool = False,
) -> SearchResult:
    """Score every configuration of ``space``; return the front of mIoU against ``stat`` latency.

    The front's numbers are recomputed one configuration at a time with
    :func:`evaluate`, so what is reported is exact, not the vectorised estimate.
    ``elapsed_s`` and ``configurations_per_second`` time the whole call.
    """
    started = time.perf_counter()
    space = space or SearchSpace()
    run = _Search(problem, space, stat)
    exit_sets = run.run(progress)
    exact = [evaluate(problem, run.configuration(key)) for key in run.front.keys]
    keep = pareto_indices(
        np.array([s.latency_ms(stat) for s in exact]), np.array([s.miou for s in exact])
    )
    baseline = evaluate(problem, ExitConfiguration((), 0.0, ()))
    return SearchResult(
        front=tuple(exact[i] for i in keep),
        baseline=baseline,
        stat=stat,
        configurations_scored=run.scored,
        configurations_in_space=run.space_size(),
        exit_sets=exit_sets,
        pruned_heads=run.pruned,
        elapsed_s=time.perf_counter() - started,
    )
