"""Constructed search problems and a brute-force reference for the deployment tests.

The constructed caches are random but structurally valid: every exit of an
image agrees on its ground truth, deeper exits tend to be more accurate and
more confident, and latencies are multiples of 1/4 ms so that sums are exact
in floating point and Pareto fronts can be compared with ``==``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from mess_ros.deploy.pareto import pareto_indices
from mess_ros.deploy.problem import (
    ComponentCosts,
    ExitCandidate,
    ExitConfiguration,
    ScoredConfiguration,
    SearchProblem,
    StatName,
    evaluate,
)
from mess_ros.deploy.search import SearchSpace


def quarter(value: float) -> float:
    return float(np.round(value * 4) / 4)


def constructed_problem(
    seed: int = 0,
    images: int = 32,
    points: int = 5,
    heads: Sequence[str] = ("fcn", "linear"),
    classes: int = 4,
    bins: int = 20,
    pixels: int = 16,
) -> SearchProblem:
    """A random but consistent problem: ``points`` blocks, ``heads`` at every candidate point."""
    rng = np.random.default_rng(seed)
    names = tuple(f"layer{i // 2 + 1}_{i % 2}" for i in range(points))
    candidates = tuple(
        ExitCandidate(f"{point}:{head}", point, head, int(rng.integers(10, 100)))
        for point in names[:-1]
        for head in sorted(heads)
    )
    exits = len(candidates) + 1
    ground_truth = rng.integers(0, 6, size=(images, classes))
    ground_truth[:, 0] += 1
    confusion = np.zeros((images, exits, classes, classes), dtype=np.int64)
    hist = np.zeros((images, exits, bins), dtype=np.int64)
    for n in range(images):
        for e in range(exits):
            for c in range(classes):
                weights = np.ones(classes)
                weights[c] += 1 + 3 * e / exits + 3 * rng.random()
                confusion[n, e, c] = rng.multinomial(ground_truth[n, c], weights / weights.sum())
            skew = rng.random() * 8 * (e + 1) / exits
            bin_weights = (np.arange(bins) + 1.0) ** skew
            hist[n, e] = rng.multinomial(pixels, bin_weights / bin_weights.sum())
    ids = [c.exit_id for c in candidates] + ["final"]
    segments = {p: quarter(rng.uniform(1, 5)) for p in names}
    heads_ms = {e: quarter(rng.uniform(0.25, 2)) for e in ids}
    outputs_ms = {e: quarter(rng.uniform(0.25, 2)) for e in ids}
    tail = ComponentCosts(
        {k: v + 0.5 for k, v in segments.items()},
        {k: v + 0.25 for k, v in heads_ms.items()},
        {k: v + 0.25 for k, v in outputs_ms.items()},
    )
    return SearchProblem(
        points=names,
        candidates=candidates,
        confusion=confusion,
        conf_hist=hist,
        costs={"mean": ComponentCosts(segments, heads_ms, outputs_ms), "p95": tail},
    )


def all_configurations(problem: SearchProblem, space: SearchSpace) -> list[ExitConfiguration]:
    """Every configuration of ``space``, enumerated naively (no pruning of any kind)."""
    allowed = [c for c in problem.candidates if space.admits(c)]
    configs = [ExitConfiguration((), 0.0, ())]
    for k in range(1, space.max_exits):
        for combo in itertools.combinations(allowed, k):
            if len({c.point for c in combo}) < k:
                continue
            limit = space.max_head_params
            if limit is not None and sum(c.params for c in combo) > limit:
                continue
            exits = tuple(c.exit_id for c in combo)
            if space.thresholds == "shared":
                grids = [(t,) * k for t in space.image_thresholds]
            else:
                grids = list(itertools.product(space.image_thresholds, repeat=k))
            for pixel in space.pixel_thresholds:
                configs.extend(ExitConfiguration(exits, pixel, tuple(g)) for g in grids)
    return configs


def brute_force_front(
    problem: SearchProblem, space: SearchSpace, stat: StatName
) -> tuple[list[tuple[float, float]], list[ScoredConfiguration]]:
    """(latency, mIoU) of the front over every configuration, and every scored configuration."""
    scored = [evaluate(problem, config) for config in all_configurations(problem, space)]
    latency = np.array([s.latency_ms(stat) for s in scored])
    miou = np.array([s.miou for s in scored])
    return [(float(latency[i]), float(miou[i])) for i in pareto_indices(latency, miou)], scored
