"""Figures and report of ``mess_demo``: per-phase statistics, plots and a Markdown summary.

Kept apart from the orchestration in :mod:`mess_ros.ros.demo` so the numbers
can be checked from recorded frames alone, without starting any process.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from mess_ros.common.metrics import mean_iou

PHASES: Final = ("idle", "loaded")


@dataclass(frozen=True)
class FrameRecord:
    """One frame of the camera: what ``exit_info`` said and what the subscriber saw.

    ``end_to_end_ms`` runs from the frame's stamp to its mask at the
    subscriber (NaN when no mask came: ``dropped``); ``met_deadline`` is
    judged there too. Times are relative to the first frame. ``camera`` is
    "" with one camera.
    """

    t_s: float
    phase: str
    exit_id: str
    exit_index: int
    num_exits: int
    measured_ms: float
    end_to_end_ms: float
    predicted_ms: float
    met_deadline: bool | None
    load: float | None
    dropped: bool
    infeasible: bool = False
    camera: str = ""


@dataclass(frozen=True)
class PhaseSummary:
    """Statistics of the frames of one phase (or of all of them)."""

    name: str
    masks: int
    unanswered: int  # frames whose mask never reached the subscriber (dropped or lost)
    exits: dict[str, int]
    latency_p50_ms: float
    latency_p90_ms: float
    latency_p99_ms: float
    end_to_end_p50_ms: float
    end_to_end_p95_ms: float
    deadline_frames: int
    deadline_misses: int
    infeasible_misses: int
    mean_exit_index: float
    mean_load: float
    miou: float
    scored_masks: int

    @property
    def miss_rate(self) -> float:
        return self.deadline_misses / self.deadline_frames if self.deadline_frames else 0.0

    @property
    def avoidable_misses(self) -> int:
        """Misses of frames some exit could have brought in on time (the policy's share)."""
        return self.deadline_misses - self.infeasible_misses


@dataclass
class DemoSummary:
    """Everything the demo prints and writes to ``summary.json``."""

    duration_s: float
    rate_hz: float
    frames_published: int
    masks_received: int
    warmup_masks: int
    deadline_ms: float
    deadline_source: str
    load_started_s: float | None
    load_processes: int
    policy: str
    device: str
    phases: list[PhaseSummary]
    overall: PhaseSummary
    exit_codes: dict[str, int] = field(default_factory=dict)
    cameras: list[PhaseSummary] = field(default_factory=list)  # per camera, when several

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for phase in [*data["phases"], data["overall"], *data["cameras"]]:
            phase["miss_rate"] = (
                phase["deadline_misses"] / phase["deadline_frames"]
                if phase["deadline_frames"]
                else 0.0
            )
            phase["avoidable_misses"] = phase["deadline_misses"] - phase["infeasible_misses"]
        finite: dict[str, Any] = _finite(data)
        return finite


def summarize_phase(
    name: str,
    records: Sequence[FrameRecord],
    confusion: npt.NDArray[np.int64] | None,
    scored_masks: int,
) -> PhaseSummary:
    """Percentiles, exits, misses and mIoU of ``records``."""
    served = [r for r in records if not r.dropped]
    measured = np.array([r.measured_ms for r in served], dtype=np.float64)
    end_to_end = np.array([r.end_to_end_ms for r in served], dtype=np.float64)
    judged = [r for r in records if r.met_deadline is not None]
    missed = [r for r in judged if r.met_deadline is False]
    loads = [r.load for r in records if r.load is not None]
    return PhaseSummary(
        name=name,
        masks=len(served),
        unanswered=len(records) - len(served),
        exits=dict(Counter(r.exit_id for r in served).most_common()),
        latency_p50_ms=_percentile(measured, 50),
        latency_p90_ms=_percentile(measured, 90),
        latency_p99_ms=_percentile(measured, 99),
        end_to_end_p50_ms=_percentile(end_to_end, 50),
        end_to_end_p95_ms=_percentile(end_to_end, 95),
        deadline_frames=len(judged),
        deadline_misses=len(missed),
        infeasible_misses=sum(r.infeasible for r in missed),
        mean_exit_index=float(np.mean([r.exit_index for r in served])) if served else math.nan,
        mean_load=float(np.mean(loads)) if loads else math.nan,
        miou=mean_iou(confusion) if confusion is not None and confusion.sum() else math.nan,
        scored_masks=scored_masks,
    )


def format_summary(summary: DemoSummary) -> str:
    """The text the demo prints at the end."""
    lines = [
        f"mess_demo: {summary.duration_s:.0f} s at {summary.rate_hz:g} Hz"
        + (f" per camera, {len(summary.cameras)} cameras" if summary.cameras else "")
        + f", policy "
        f"{summary.policy}, device {summary.device}, deadline {summary.deadline_ms:.1f} ms "
        f"({summary.deadline_source})",
        f"frames published {summary.frames_published}, masks received "
        f"{summary.masks_received}"
        + (
            f", background load from t = {summary.load_started_s:.1f} s "
            f"({summary.load_processes} CPU-bound processes)"
            if summary.load_started_s is not None
            else ""
        ),
        f"not counted: {summary.warmup_masks} masks of the warm-up (model loading, the first "
        "latency measurements, and the frames before the deadline was set)",
        "",
        f"{'phase':<8} {'masks':>6} {'p50 ms':>7} {'p90 ms':>7} {'e2e p50':>8} {'e2e p95':>8} "
        f"{'misses':>9} {'infeas.':>7} {'avoid.':>6} {'load':>5} {'mIoU':>6}  exits used",
    ]
    for phase in [*summary.phases, summary.overall, *summary.cameras]:
        exits = ", ".join(f"{k} {v}" for k, v in phase.exits.items()) or "-"
        lines.append(
            f"{phase.name:<8} {phase.masks:>6} {_f(phase.latency_p50_ms):>7} "
            f"{_f(phase.latency_p90_ms):>7} {_f(phase.end_to_end_p50_ms):>8} "
            f"{_f(phase.end_to_end_p95_ms):>8} "
            f"{f'{phase.deadline_misses}/{phase.deadline_frames}':>9} "
            f"{phase.infeasible_misses:>7} {phase.avoidable_misses:>6} "
            f"{_f(phase.mean_load, 2):>5} {_f(phase.miou * 100, 1):>6}  {exits}"
        )
    lines += [
        "",
        "p50/p90: engine time in the node; e2e: stamp to mask at this subscriber. A frame misses "
        "when its mask arrives here after stamp + deadline, or never. infeas.: misses no exit "
        "could have avoided (the node found the earliest exit too slow before running it); "
        "avoid.: the others."
        + (" The last rows count each camera alone." if summary.cameras else ""),
    ]
    return "\n".join(lines)


def write_report(
    out_dir: Path,
    summary: DemoSummary,
    records: Sequence[FrameRecord],
    loads: Sequence[tuple[float, float]],
) -> list[Path]:
    """``summary.json``, ``report.md``, ``timeline.png`` and ``exits.png`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "summary.json", out_dir / "report.md"]
    written[0].write_text(json.dumps(summary.to_dict(), indent=2) + "\n", encoding="utf-8")
    plots = _plot(out_dir, summary, records, loads)
    written[1].write_text(_markdown(summary, [p.name for p in plots]), encoding="utf-8")
    return written + plots


def _plot(
    out_dir: Path,
    summary: DemoSummary,
    records: Sequence[FrameRecord],
    loads: Sequence[tuple[float, float]],
) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    served = [r for r in records if not r.dropped]
    exit_names = sorted({r.exit_id for r in served}, key=lambda e: _exit_order(served, e))
    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.9, max(len(exit_names), 1)))
    figure, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    latency_ax, exit_ax, load_ax = axes
    for name, color in zip(exit_names, colors, strict=False):
        chosen = [r for r in served if r.exit_id == name]
        latency_ax.scatter(
            [r.t_s for r in chosen], [r.end_to_end_ms for r in chosen], s=8, color=color, label=name
        )
    infeasible = [r for r in records if r.infeasible]
    if infeasible:
        latency_ax.scatter(
            [r.t_s for r in infeasible],
            [r.end_to_end_ms if not r.dropped else summary.deadline_ms for r in infeasible],
            s=18,
            marker="x",
            color="tab:red",
            label="infeasible",
        )
    if summary.deadline_ms > 0:
        latency_ax.axhline(summary.deadline_ms, color="red", linestyle="--", label="deadline")
    latency_ax.set_ylabel("stamp to mask [ms]")
    latency_ax.legend(loc="upper left", fontsize=7, ncol=2)
    exit_ax.step([r.t_s for r in served], [r.exit_index for r in served], where="post")
    exit_ax.set_ylabel("exit index")
    if served:
        exit_ax.set_yticks(range(served[0].num_exits))
    if loads:
        load_ax.plot([t for t, _ in loads], [v for _, v in loads], color="tab:orange")
    load_ax.set_ylim(-0.05, 1.05)
    load_ax.set_ylabel("reported load")
    load_ax.set_xlabel("time [s]")
    for ax in axes:
        if summary.load_started_s is not None:
            ax.axvline(summary.load_started_s, color="grey", linestyle=":")
    figure.suptitle("mess_demo: stamp-to-mask time at the subscriber, exit taken and load")
    figure.tight_layout()
    timeline = out_dir / "timeline.png"
    figure.savefig(timeline, dpi=100)
    plt.close(figure)

    figure, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(len(summary.phases), 1)
    positions = np.arange(len(exit_names))
    for i, phase in enumerate(summary.phases):
        total = max(phase.masks, 1)
        shares = [phase.exits.get(name, 0) / total for name in exit_names]
        ax.bar(positions + i * width, shares, width, label=f"{phase.name} ({phase.masks} masks)")
    ax.set_xticks(positions + width * (len(summary.phases) - 1) / 2)
    ax.set_xticklabels(exit_names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("share of masks")
    ax.legend()
    ax.set_title("exits used, without and with background load")
    figure.tight_layout()
    exits = out_dir / "exits.png"
    figure.savefig(exits, dpi=100)
    plt.close(figure)
    return [timeline, exits]


def _exit_order(records: Sequence[FrameRecord], exit_id: str) -> int:
    return next(r.exit_index for r in records if r.exit_id == exit_id)


def _markdown(summary: DemoSummary, plots: Sequence[str]) -> str:
    rows = [
        "| phase | masks | p50 ms | p90 ms | p99 ms | end-to-end p95 ms | deadline misses "
        "| infeasible | avoidable | mean load | mIoU % | exits used |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for phase in [*summary.phases, summary.overall, *summary.cameras]:
        exits = ", ".join(f"`{k}` {v}" for k, v in phase.exits.items()) or "-"
        rows.append(
            f"| {phase.name} | {phase.masks} | {_f(phase.latency_p50_ms)} | "
            f"{_f(phase.latency_p90_ms)} | {_f(phase.latency_p99_ms)} | "
            f"{_f(phase.end_to_end_p95_ms)} | {phase.deadline_misses}/{phase.deadline_frames} | "
            f"{phase.infeasible_misses} | {phase.avoidable_misses} | "
            f"{_f(phase.mean_load, 2)} | {_f(phase.miou * 100, 1)} | {exits} |"
        )
    load_text = (
        f"A background CPU load ({summary.load_processes} busy processes) started at "
        f"{summary.load_started_s:.1f} s; the demo reported the share of the CPU used by "
        "processes other than the node on `system_load`."
        if summary.load_started_s is not None
        else "No background load was started."
    )
    parts = [
        "# mess_demo report",
        "",
        f"{summary.duration_s:.0f} s of synthetic camera frames at {summary.rate_hz:g} Hz "
        f"through `segmentation_node` (policy `{summary.policy}`, device `{summary.device}`, "
        f"deadline {summary.deadline_ms:.1f} ms, {summary.deadline_source}). {load_text}",
        "",
        f"Frames published: {summary.frames_published}; masks received: "
        f"{summary.masks_received}; {summary.warmup_masks} masks of the warm-up are not "
        "counted. Latency is the engine time per frame; end-to-end runs from the frame's "
        "stamp to its mask at the demo's subscriber, where deadlines are judged: a frame "
        "misses when its mask arrives after stamp + deadline, or never. Infeasible misses "
        "are frames whose earliest exit the node predicted too slow before running it; "
        "avoidable ones are the policy's. mIoU is against the camera's ground truth, matched "
        "by stamp.",
        "",
        *rows,
        "",
        *(f"![{name}]({name})" for name in plots),
        "",
    ]
    return "\n".join(parts)


def _percentile(values: npt.NDArray[np.float64], q: float) -> float:
    return float(np.percentile(values, q)) if values.size else math.nan


def _f(value: float, digits: int = 1) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def _finite(value: Any) -> Any:
    """JSON has no NaN: unknown figures become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
