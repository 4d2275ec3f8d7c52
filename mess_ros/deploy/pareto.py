"""Pareto front of exit configurations (mIoU against latency): computation, tables and plot.

The front is what a robot integrator looks at: every configuration on it is
the most accurate one at its latency, so choosing a deployment means choosing
a point on this curve. The search keeps only the front while it scores
millions of configurations; this module holds the one definition of
"dominated" both use, and renders the result for people (markdown, CSV, PNG).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from mess_ros.common.exits import exit_point
from mess_ros.deploy.errors import DeployError

if TYPE_CHECKING:
    from mess_ros.deploy.problem import ScoredConfiguration, StatName

FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.intp]


def pareto_indices(latency_ms: FloatArray, miou: FloatArray) -> IndexArray:
    """Indices of the non-dominated points, by increasing latency (and increasing mIoU).

    A point is dominated when another is at least as fast and at least as
    accurate. Among exact duplicates the earliest index survives, so the
    result is deterministic for a deterministic enumeration order. NaN mIoU
    (no class to score) never reaches the front.
    """
    latency_ms = np.asarray(latency_ms, dtype=np.float64)
    miou = np.asarray(miou, dtype=np.float64)
    if latency_ms.shape != miou.shape or latency_ms.ndim != 1:
        msg = f"latency and mIoU must be 1-D of equal length, got {latency_ms.shape}, {miou.shape}"
        raise ValueError(msg)
    valid = np.flatnonzero(~np.isnan(miou) & ~np.isnan(latency_ms))
    if valid.size == 0:
        return np.empty(0, dtype=np.intp)
    # Fastest first; at equal latency the most accurate first; then the earliest index.
    order = valid[np.lexsort((valid, -miou[valid], latency_ms[valid]))]
    sorted_miou = miou[order]
    best_before = np.maximum.accumulate(np.concatenate(([-np.inf], sorted_miou[:-1])))
    return np.asarray(order[sorted_miou > best_before], dtype=np.intp)


@dataclass(frozen=True)
class PlotPoint:
    """An extra labelled point on the plot, e.g. a separately trained single-exit network."""

    label: str
    latency_ms: float
    miou: float


def table_rows(
    front: Sequence[ScoredConfiguration], exact: bool = False
) -> tuple[list[str], list[list[str]]]:
    """Header and rows describing the front, shared by the markdown and CSV writers.

    ``exact`` writes numbers in full (for scripts) instead of rounded for reading.
    """

    def number(value: float, digits: int) -> str:
        return repr(float(value)) if exact else f"{value:.{digits}f}"

    header = ["rank", "miou", "mean_ms", "p95_ms", "exits", "heads", "decision", "pixel_thr"]
    header.append("image_thr")
    header.append("exit_shares")
    rows: list[list[str]] = []
    for rank, scored in enumerate(front, start=1):
        config = scored.config
        points = [exit_point(exit_id) for exit_id in config.exits]
        heads = [exit_id.partition(":")[2] for exit_id in config.exits]
        rows.append(
            [
                str(rank),
                number(scored.miou, 6),
                number(scored.mean_ms, 3),
                number(scored.p95_ms, 3),
                " ".join(points) or "-",
                " ".join(heads) or "-",
                config.decision if config.exits else "-",
                number(config.pixel_threshold, 2)
                if config.exits and config.decision != "learnt"
                else "-",
                " ".join(number(t, 3) for t in config.image_thresholds) or "-",
                " ".join(number(share, 3) for share in scored.exit_shares),
            ]
        )
    return header, rows


def front_markdown(front: Sequence[ScoredConfiguration]) -> str:
    """A markdown table of the front (fastest first)."""
    header, rows = table_rows(front)
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return "\n".join(lines) + "\n"


def front_csv(front: Sequence[ScoredConfiguration]) -> str:
    """The front as CSV text (one header line, fastest first, numbers in full)."""
    header, rows = table_rows(front, exact=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def plot_front(
    path: Path,
    front: Sequence[ScoredConfiguration],
    stat: StatName,
    chosen: ScoredConfiguration | None = None,
    baseline: ScoredConfiguration | None = None,
    extra_points: Sequence[PlotPoint] = (),
    budget_ms: float | None = None,
    min_miou: float | None = None,
    title: str = "",
) -> None:
    """Write a PNG of the front with the chosen configuration and the final-only baseline marked.

    The Agg backend is selected here so the tool runs on a headless robot or CI
    machine; matplotlib is imported only when a plot is asked for.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - matplotlib is a dependency
        raise DeployError(f"cannot write {str(path)!r}: matplotlib is not installed") from err

    def latency(scored: ScoredConfiguration) -> float:
        return scored.latency_ms(stat)

    fig: Any
    fig, ax = plt.subplots(figsize=(7.0, 4.5), dpi=120)
    try:
        if front:
            xs = [latency(s) for s in front]
            ys = [100.0 * s.miou for s in front]
            ax.step(xs, ys, where="post", color="tab:blue", alpha=0.5, linewidth=1.0)
            ax.scatter(xs, ys, s=14, color="tab:blue", label=f"Pareto front ({len(front)} configs)")
        if baseline is not None:
            ax.scatter(
                [latency(baseline)],
                [100.0 * baseline.miou],
                marker="s",
                s=60,
                color="tab:gray",
                label="single exit (final only)",
                zorder=3,
            )
        for point in extra_points:
            ax.scatter(
                [point.latency_ms], [100.0 * point.miou], marker="D", s=50, label=point.label
            )
        if chosen is not None:
            ax.scatter(
                [latency(chosen)],
                [100.0 * chosen.miou],
                marker="*",
                s=220,
                color="tab:red",
                label="chosen",
                zorder=4,
            )
        if budget_ms is not None:
            ax.axvline(budget_ms, color="tab:red", linestyle="--", linewidth=1.0, label="budget")
        if min_miou is not None:
            ax.axhline(
                100.0 * min_miou,
                color="tab:green",
                linestyle="--",
                linewidth=1.0,
                label="accuracy floor",
            )
        stat_label = "mean" if stat == "mean" else "p95"
        ax.set_xlabel(f"{stat_label} latency per frame (ms)")
        ax.set_ylabel("mIoU (%)")
        if title:
            ax.set_title(title, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)
