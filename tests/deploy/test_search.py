"""The exhaustive search on constructed caches: exact scores, Pareto front, limits, pruning."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from mess_ros.common.exits import FINAL_EXIT
from mess_ros.common.metrics import mean_iou
from mess_ros.deploy.errors import (
    InputMismatchError,
    SearchSpaceError,
    UnreachableTargetError,
)
from mess_ros.deploy.problem import (
    ComponentCosts,
    ExitCandidate,
    ExitConfiguration,
    SearchProblem,
    evaluate,
    exit_decisions,
)
from mess_ros.deploy.search import SearchSpace, Target, dominated_heads, search, select
from tests.deploy.constructed import all_configurations, brute_force_front, constructed_problem

# Shares are k/16 in the constructed caches: 0.25, 0.5 and 0.75 make ties with the
# image thresholds (a share equal to its threshold lets the image leave).
SMALL_SPACE = SearchSpace(
    max_exits=3, pixel_thresholds=(0.5, 0.7, 0.9), image_thresholds=(0.25, 0.4, 0.5, 0.75)
)


def naive_score(
    problem: SearchProblem, config: ExitConfiguration
) -> tuple[float, float, float, list[int]]:
    """mIoU, mean and p95 latency and per-image exit, one image and one exit at a time."""
    ids = problem.exit_ids
    bins = problem.bins
    pixel_bin = round(config.pixel_threshold * bins)
    costs = problem.costs
    confusion = np.zeros((problem.num_classes,) * 2, dtype=np.int64)
    mean_costs: list[float] = []
    tail_costs: list[float] = []
    taken_exits: list[int] = []
    for n in range(problem.num_images):
        taken = len(config.exits)
        for position, (exit_id, threshold) in enumerate(
            zip(config.exits, config.image_thresholds, strict=True)
        ):
            hist = problem.conf_hist[n, ids.index(exit_id)]
            share = np.float32(hist[pixel_bin:].sum()) / np.float32(hist.sum())
            if float(share) >= threshold:
                taken = position
                break
        taken_id = config.active_exits[taken]
        confusion += problem.confusion[n, ids.index(taken_id)]
        taken_exits.append(taken)
        depth = problem.points.index(problem.exit_point(taken_id))
        for stat, out in (("mean", mean_costs), ("p95", tail_costs)):
            table = costs[stat]  # type: ignore[index]
            total = sum(table.segment_ms[p] for p in problem.points[: depth + 1])
            total += sum(table.head_ms[e] for e in config.active_exits[: taken + 1])
            out.append(total + table.output_ms[taken_id])
    rank = math.ceil(0.95 * problem.num_images)
    return (
        mean_iou(confusion),
        sum(mean_costs) / problem.num_images,
        sorted(tail_costs)[rank - 1],
        taken_exits,
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_evaluate_is_exact_against_an_image_by_image_reference(seed: int) -> None:
    problem = constructed_problem(seed)
    rng = np.random.default_rng(seed)
    configs = all_configurations(problem, SMALL_SPACE)
    for index in rng.choice(len(configs), size=40, replace=False):
        config = configs[index]
        scored = evaluate(problem, config)
        miou, mean_ms, p95_ms, taken = naive_score(problem, config)
        assert scored.miou == miou
        assert scored.mean_ms == mean_ms
        assert scored.p95_ms == p95_ms
        assert exit_decisions(problem, config).tolist() == taken
        assert scored.exit_counts == tuple(np.bincount(taken, minlength=len(config.exits) + 1))


def test_path_cost_follows_the_engine_definition() -> None:
    problem = constructed_problem(0)
    first, second = problem.candidates[0], problem.candidates[-1]
    costs = problem.costs["mean"]
    active = [first.exit_id, second.exit_id]
    blocks = sum(
        costs.segment_ms[p] for p in problem.points[: problem.points.index(second.point) + 1]
    )
    expected = blocks + costs.head_ms[first.exit_id] + costs.head_ms[second.exit_id]
    expected += costs.output_ms[second.exit_id]
    assert problem.path_ms(active, second.exit_id) == expected
    everything = sum(costs.segment_ms.values()) + sum(
        costs.head_ms[e] for e in [*active, FINAL_EXIT]
    )
    assert problem.path_ms(active, FINAL_EXIT) == everything + costs.output_ms[FINAL_EXIT]


@pytest.mark.parametrize("thresholds", ["per_exit", "shared"])
@pytest.mark.parametrize("stat", ["mean", "p95"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_front_equals_brute_force(seed: int, stat: str, thresholds: str) -> None:
    problem = constructed_problem(seed)
    space = dataclasses.replace(SMALL_SPACE, thresholds=thresholds)  # type: ignore[arg-type]
    result = search(problem, space, stat)  # type: ignore[arg-type]
    expected, every = brute_force_front(problem, space, stat)  # type: ignore[arg-type]
    assert [(s.latency_ms(result.stat), s.miou) for s in result.front] == expected
    assert result.configurations_in_space == len(every)
    assert 0 < result.configurations_scored <= len(every)
    assert result.baseline.config.exits == ()
    assert result.baseline.exit_counts == (problem.num_images,)


def test_front_respects_limits() -> None:
    problem = constructed_problem(3, points=6)
    params = sorted(c.params for c in problem.candidates)
    space = dataclasses.replace(
        SMALL_SPACE, allowed_heads=frozenset({"linear"}), max_head_params=params[-1] + params[-2]
    )
    result = search(problem, space, "mean")
    expected, every = brute_force_front(problem, space, "mean")
    assert [(s.mean_ms, s.miou) for s in result.front] == expected
    assert result.configurations_in_space == len(every)
    for scored in result.front:
        chosen = [problem.candidate(e) for e in scored.config.exits]
        assert all(c.arch == "linear" for c in chosen)
        assert sum(c.params for c in chosen) <= params[-1] + params[-2]


def test_single_exit_space_is_the_final_exit() -> None:
    problem = constructed_problem(0)
    result = search(problem, dataclasses.replace(SMALL_SPACE, max_exits=1))
    assert [s.config.exits for s in result.front] == [()]
    assert result.configurations_in_space == result.configurations_scored == 1
    final = problem.confusion[:, -1].sum(axis=0)
    assert result.front[0].miou == mean_iou(final)


def with_copy_of_head(
    problem: SearchProblem,
    source: str,
    extra_ms: float,
    extra_params: int,
    better_on: int | None = None,
    doubtful_on: int | None = None,
) -> tuple[SearchProblem, str]:
    """``problem`` plus a head ``<point>:zz`` that behaves like ``source`` except for its
    head time and size, and optionally is better on one image (a false positive turned
    into a true positive) or less confident on one image (every pixel in the lowest bin)."""
    original = problem.candidate(source)
    copy = ExitCandidate(
        f"{original.point}:zz", original.point, "zz", original.params + extra_params
    )
    candidates = sorted(
        [*problem.candidates, copy], key=lambda c: (problem.points.index(c.point), c.exit_id)
    )
    columns = [problem.exit_ids.index(c.exit_id if c is not copy else source) for c in candidates]
    columns.append(len(problem.candidates))
    column = candidates.index(copy)
    confusion = problem.confusion[:, columns].copy()
    if better_on is not None:
        matrix = confusion[better_on, column]
        row = int(np.argmax(matrix.sum(axis=1) - np.diag(matrix)))
        wrong = int(np.argmax(np.where(np.arange(len(matrix)) == row, -1, matrix[row])))
        assert matrix[row, wrong] > 0
        matrix[row, wrong] -= 1
        matrix[row, row] += 1
    hist = problem.conf_hist[:, columns].copy()
    if doubtful_on is not None:
        pixels = hist[doubtful_on, column].sum()
        hist[doubtful_on, column] = 0
        hist[doubtful_on, column, 0] = pixels

    def with_copy(costs: ComponentCosts) -> ComponentCosts:
        heads = {**costs.head_ms, copy.exit_id: costs.head_ms[source] + extra_ms}
        outputs = {**costs.output_ms, copy.exit_id: costs.output_ms[source]}
        return ComponentCosts(costs.segment_ms, heads, outputs)

    extended = SearchProblem(
        points=problem.points,
        candidates=tuple(candidates),
        confusion=confusion,
        conf_hist=hist,
        costs={stat: with_copy(c) for stat, c in problem.costs.items()},
    )
    return extended, copy.exit_id


def test_a_slower_copy_of_a_head_is_pruned_without_changing_the_front() -> None:
    base = constructed_problem(4)
    source = base.candidates[2].exit_id
    problem, copy = with_copy_of_head(base, source, extra_ms=0.5, extra_params=5)
    pruned = search(problem, SMALL_SPACE)
    assert pruned.pruned_heads == ((copy, source),)
    unpruned = search(problem, dataclasses.replace(SMALL_SPACE, prune_dominated_heads=False))
    assert unpruned.pruned_heads == ()
    front = [(s.mean_ms, s.miou) for s in pruned.front]
    assert front == [(s.mean_ms, s.miou) for s in unpruned.front]
    assert front == brute_force_front(problem, SMALL_SPACE, "mean")[0]


def test_a_slower_head_that_is_better_on_one_image_is_kept() -> None:
    base = constructed_problem(4)
    source = base.candidates[2].exit_id
    problem, _ = with_copy_of_head(base, source, extra_ms=0.5, extra_params=5, better_on=0)
    space = dataclasses.replace(SMALL_SPACE, pixel_thresholds=(0.05,), image_thresholds=(0.05,))
    assert dominated_heads(problem, space) == {}
    result = search(problem, space)
    assert result.pruned_heads == ()
    assert [(s.mean_ms, s.miou) for s in result.front] == brute_force_front(problem, space, "mean")[
        0
    ]


def test_a_better_head_that_is_less_confident_on_one_image_does_not_dominate() -> None:
    base = constructed_problem(4)
    source = base.candidates[2].exit_id
    space = dataclasses.replace(SMALL_SPACE, pixel_thresholds=(0.05,), image_thresholds=(0.05,))
    better, copy = with_copy_of_head(base, source, extra_ms=-0.25, extra_params=-5, better_on=1)
    index = {c.exit_id: i for i, c in enumerate(better.candidates)}
    assert dominated_heads(better, space) == {index[source]: index[copy]}
    # The same head, but it would send image 0 deeper, where the outcome depends on the
    # exits that follow: no longer provably better.
    doubtful, _ = with_copy_of_head(
        base, source, extra_ms=-0.25, extra_params=-5, better_on=1, doubtful_on=0
    )
    assert dominated_heads(doubtful, space) == {}


def test_select_meets_the_target_or_reports_the_closest() -> None:
    result = search(constructed_problem(1), SMALL_SPACE)
    front = result.front
    middle = front[len(front) // 2]
    chosen = select(result, Target(budget_ms=middle.mean_ms))
    assert chosen == middle
    assert select(result, Target(min_miou=middle.miou)) == middle
    with pytest.raises(UnreachableTargetError) as info:
        select(result, Target(budget_ms=front[0].mean_ms * 0.5))
    assert info.value.closest == front[0]
    assert f"{front[0].mean_ms:.2f} ms" in str(info.value)
    with pytest.raises(UnreachableTargetError) as info:
        select(result, Target(min_miou=1.0))
    assert info.value.closest == front[-1]
    with pytest.raises(SearchSpaceError, match="searched on mean"):
        select(result, Target(budget_ms=10.0, stat="p95"))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_exits": 0}, "max exits"),
        ({"pixel_thresholds": (0.5, 0.525)}, "not a multiple of 1/20"),
        ({"pixel_thresholds": (0.9, 0.5)}, "increasing"),
        ({"image_thresholds": ()}, "non-empty"),
        ({"image_thresholds": (0.5, 1.5)}, r"\[0, 1\]"),
        ({"allowed_heads": frozenset({"deeplabv3"})}, "match no candidate"),
        ({"thresholds": "sometimes"}, "threshold mode"),
    ],
)
def test_bad_search_spaces_are_refused(changes: dict[str, object], message: str) -> None:
    space = dataclasses.replace(SMALL_SPACE, **changes)  # type: ignore[arg-type]
    with pytest.raises(SearchSpaceError, match=message):
        search(constructed_problem(0), space)


def test_bad_targets_are_refused() -> None:
    with pytest.raises(SearchSpaceError, match="exactly one"):
        Target()
    with pytest.raises(SearchSpaceError, match="exactly one"):
        Target(budget_ms=10.0, min_miou=0.5)
    with pytest.raises(SearchSpaceError, match="> 0 ms"):
        Target(budget_ms=-1.0)


def test_inconsistent_problems_are_refused() -> None:
    problem = constructed_problem(0)
    confusion = problem.confusion.copy()
    confusion[0, 1, 0, 0] += 1  # exit 1 now sees a ground-truth pixel exit 0 does not
    with pytest.raises(InputMismatchError, match="disagree on its ground truth"):
        dataclasses.replace(problem, confusion=confusion)
    mean = problem.costs["mean"]
    heads = {k: v for k, v in mean.head_ms.items() if k != FINAL_EXIT}
    costs = dict(problem.costs)
    costs["mean"] = ComponentCosts(mean.segment_ms, heads, mean.output_ms)
    with pytest.raises(InputMismatchError, match="no mean head latency for \\['final'\\]"):
        dataclasses.replace(problem, costs=costs)
    with pytest.raises(InputMismatchError, match="not a candidate point"):
        dataclasses.replace(
            problem, candidates=(*problem.candidates[:-1], ExitCandidate("x:y", "x", "y"))
        )


def test_at_least_100k_configurations_per_minute() -> None:
    problem = constructed_problem(
        5, images=200, points=8, heads=("a", "b", "c", "d"), classes=8, bins=100, pixels=64
    )
    result = search(problem, SearchSpace(max_exits=3))
    assert result.configurations_scored > 10_000
    assert result.configurations_per_second * 60 >= 100_000
    assert "configurations scored per second" in result.report()
