"""Pareto front definition, tables and plot."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest

from mess_ros.deploy.pareto import (
    PlotPoint,
    front_csv,
    front_markdown,
    pareto_indices,
    plot_front,
)
from mess_ros.deploy.search import SearchSpace, search
from tests.deploy.constructed import constructed_problem


def quadratic_front(latency: np.ndarray, miou: np.ndarray) -> list[int]:
    """Indices not weakly dominated by any other point (earliest of exact duplicates kept)."""
    keep = []
    for i in range(len(latency)):
        if np.isnan(miou[i]):
            continue
        dominated = False
        for j in range(len(latency)):
            if j == i or np.isnan(miou[j]):
                continue
            no_worse = latency[j] <= latency[i] and miou[j] >= miou[i]
            better = latency[j] < latency[i] or miou[j] > miou[i]
            if no_worse and (better or j < i):
                dominated = True
                break
        if not dominated:
            keep.append(i)
    return sorted(keep, key=lambda i: (latency[i], miou[i]))


@pytest.mark.parametrize("seed", range(5))
def test_front_equals_quadratic_definition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Coarse values so that ties in latency, in mIoU and exact duplicates all occur.
    latency = rng.integers(0, 12, size=60).astype(float)
    miou = rng.integers(0, 12, size=60) / 12
    miou[rng.integers(0, 60, size=3)] = np.nan
    assert pareto_indices(latency, miou).tolist() == quadratic_front(latency, miou)


def test_front_of_nothing_is_empty() -> None:
    assert pareto_indices(np.array([]), np.array([])).size == 0
    assert pareto_indices(np.array([1.0]), np.array([np.nan])).size == 0
    with pytest.raises(ValueError, match="equal length"):
        pareto_indices(np.zeros(2), np.zeros(3))


def test_tables_and_plot(tmp_path: Path) -> None:
    result = search(
        constructed_problem(2),
        SearchSpace(max_exits=3, pixel_thresholds=(0.5, 0.8), image_thresholds=(0.3, 0.6)),
    )
    markdown = front_markdown(result.front)
    lines = markdown.strip().splitlines()
    assert len(lines) == len(result.front) + 2
    assert lines[0].startswith("| rank | miou | mean_ms")
    rows = list(csv.DictReader(io.StringIO(front_csv(result.front))))
    assert [float(r["mean_ms"]) for r in rows] == [s.mean_ms for s in result.front]
    assert [float(r["miou"]) for r in rows] == [s.miou for s in result.front]
    assert all(r["exits"] for r in rows)

    png = tmp_path / "plots" / "front.png"
    plot_front(
        png,
        result.front,
        "mean",
        chosen=result.front[-1],
        baseline=result.baseline,
        extra_points=[PlotPoint("single-exit network", 12.0, 0.4)],
        budget_ms=result.front[-1].mean_ms,
        title="test",
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000
