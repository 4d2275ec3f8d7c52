"""Reports of an evaluation: JSON for machines, Markdown and PNG plots for people.

The JSON holds everything (settings, read statistics, per-configuration
summaries and every frame record) so other tools can recompute any figure.
The Markdown summary answers the usual questions at a glance: how accurate,
how fast, how often late or dropped, which exits were used and how accurate
each was. The plots show how that evolved over the bag.

Plots are drawn on :class:`matplotlib.figure.Figure` objects directly (no
pyplot state), so reports can be written from threads and tests without a
display.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from mess_ros.eval.errors import EvalError
from mess_ros.eval.results import Evaluation, RunResult, RunSummary, exit_order
from mess_ros.textfiles import read_text

JSON_NAME: Final = "report.json"
MARKDOWN_NAME: Final = "report.md"
PLOT_NAMES: Final = {
    "latency": "latency.png",
    "exits": "exits.png",
    "histogram": "latency_histogram.png",
    "iou": "iou_per_class.png",
    "examples": "examples.png",
}
DPI: Final = 110


@dataclass(frozen=True)
class ReportFiles:
    """Where a report was written."""

    directory: Path
    json: Path
    markdown: Path
    plots: dict[str, Path] = field(default_factory=dict)


def write_report(evaluation: Evaluation, out_dir: str | Path) -> ReportFiles:
    """Write ``report.json``, ``report.md`` and the PNG plots into ``out_dir``."""
    directory = Path(out_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise EvalError(f"cannot create report directory {directory}: {err}") from err
    plots = {
        "latency": plot_latency(evaluation, directory / PLOT_NAMES["latency"]),
        "exits": plot_exits(evaluation, directory / PLOT_NAMES["exits"]),
        "histogram": plot_latency_histogram(evaluation, directory / PLOT_NAMES["histogram"]),
    }
    if _scored(evaluation):
        plots["iou"] = plot_iou_per_class(evaluation, directory / PLOT_NAMES["iou"])
    if evaluation.examples:
        plots["examples"] = plot_examples(evaluation, directory / PLOT_NAMES["examples"])
    json_path = directory / JSON_NAME
    markdown_path = directory / MARKDOWN_NAME
    try:
        json_path.write_text(
            json.dumps(evaluation.to_dict(), indent=1, allow_nan=False) + "\n", encoding="utf-8"
        )
        markdown_path.write_text(
            markdown_summary(evaluation, {k: p.name for k, p in plots.items()}), encoding="utf-8"
        )
    except OSError as err:
        raise EvalError(f"cannot write report into {directory}: {err}") from err
    return ReportFiles(directory, json_path, markdown_path, plots)


# ---------------------------------------------------------------------------------------------
# Markdown


def _fmt(value: float | None, digits: int = 1, scale: float = 1.0, suffix: str = "") -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value * scale:.{digits}f}{suffix}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _scored(evaluation: Evaluation) -> bool:
    """Whether any configuration has a frame scored against ground truth."""
    return any(run.confusions for run in evaluation.runs)


def ground_truth_notes(evaluation: Evaluation) -> list[str]:
    """What kept frames out of the accuracy figures, one sentence each (empty: nothing did).

    The report and the console say the same: a frame left out of the mIoU
    must never pass silently for a frame without ground truth.
    """
    read = evaluation.read
    topic = evaluation.topics.get("ground_truth")
    labels = evaluation.labels
    notes = []
    invalid = max((run.invalid_gt for run in evaluation.runs), default=0)
    if invalid:
        ids = sorted(set().union(*(run.invalid_gt_ids for run in evaluation.runs)))
        notes.append(
            f"{invalid} of {read.get('frames', 0)} frames have ground truth with class ids "
            f"{ids} outside label set '{labels.name}' (0..{labels.num_classes - 1}, ignore "
            f"{labels.ignore_index}); they are left out of the mIoU (--strict makes this an error)"
        )
    bad = read.get("bad_gt") or {}
    if bad:
        reasons = ", ".join(f"{reason}: {count}" for reason, count in bad.items())
        notes.append(
            f"{sum(bad.values())} frames have unusable ground truth on {topic} ({reasons}); "
            "they count for latency and exits only"
        )
    unmatched = int(read.get("unmatched_gt", 0))
    if unmatched:
        notes.append(
            f"{unmatched} ground-truth messages on {topic} matched no camera frame (their header "
            "stamps equal no frame's); they were not used"
        )
    candidates = evaluation.topics.get("gt_candidates") or []
    if topic is None and candidates:
        names = ", ".join(candidates)
        notes.append(
            f"no ground-truth topic was recognised, but {names} holds mono8 images: if that is "
            f"ground truth, pass --gt-topic {candidates[0]}"
        )
    return notes


def markdown_summary(evaluation: Evaluation, plots: dict[str, str] | None = None) -> str:
    """The human summary: what was read, one row per configuration, exits and classes."""
    read = evaluation.read
    summaries = [run.summary() for run in evaluation.runs]
    lines = [
        f"# Evaluation of `{Path(evaluation.bag).name}`",
        "",
        f"- mode: **{evaluation.mode}**; camera topic `{evaluation.topics.get('camera')}`, "
        f"ground truth `{evaluation.topics.get('ground_truth') or 'none'}`, "
        f"load `{evaluation.topics.get('load') or 'none'}`",
        f"- frames: {read.get('frames', 0)} used, {read.get('skipped_total', 0)} skipped, "
        f"{read.get('without_gt', 0)} without ground truth; label set "
        f"`{evaluation.labels.name}` ({evaluation.labels.num_classes} classes)",
    ]
    skipped = read.get("skipped") or {}
    if skipped:
        reasons = ", ".join(f"{reason}: {count}" for reason, count in skipped.items())
        lines.append(f"- skipped frames by reason: {reasons}")
    lines += [f"- **ground truth**: {note}" for note in ground_truth_notes(evaluation)]
    lines += ["", "## Configurations", ""]
    lines += _table(
        [
            "configuration",
            "mIoU %",
            "pixel acc %",
            "latency p50 / p95 / p99 ms",
            "deadline ms",
            "missed",
            "dropped",
            "frames/s",
        ],
        [_summary_row(s) for s in summaries],
    )
    common = evaluation.common_processed()
    if len(evaluation.runs) > 1 and any(run.confusions for run in evaluation.runs):
        lines += [
            "",
            f"mIoU on the {len(common)} frames every configuration segmented: "
            + ", ".join(f"{run.name} {_fmt(run.miou(common), 2, 100)}%" for run in evaluation.runs),
        ]
    lines += ["", "## Exits", ""]
    lines += _table(
        ["configuration", "exit", "frames", "share %", "mIoU %"],
        [row for s in summaries for row in _exit_rows(s)],
    )
    lines += ["", "## IoU per class (%)", ""]
    if _scored(evaluation):
        lines += _table(
            ["class", *(s.name for s in summaries)],
            [
                [name, *(_fmt(s.iou_per_class.get(name), 1, 100) for s in summaries)]
                for name in evaluation.labels.class_names
            ],
        )
        lines += ["", "– : the class is in neither the ground truth nor the masks (no IoU)."]
    else:
        lines.append("No frame was scored against ground truth: accuracy was not measured.")
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{key}]({name})" for key, name in plots.items()]
    return "\n".join(lines) + "\n"


def _summary_row(s: RunSummary) -> list[str]:
    latency = s.latency_ms
    missed = "–"
    if s.deadline_miss_rate is not None:
        missed = f"{s.deadline_misses} ({_fmt(s.deadline_miss_rate, 1, 100)}%)"
    dropped = f"{s.dropped} ({_fmt(s.drop_rate, 1, 100)}%)"
    return [
        s.name,
        _fmt(s.miou, 2, 100),
        _fmt(s.pixel_accuracy, 2, 100),
        " / ".join(_fmt(latency.get(k)) for k in ("p50", "p95", "p99")),
        _fmt(s.deadline_ms, 0),
        missed,
        dropped,
        _fmt(s.frames_per_s, 1),
    ]


def _exit_rows(s: RunSummary) -> list[list[str]]:
    total = sum(s.exit_usage.values())
    return [
        [
            s.name,
            f"`{exit_id}`",
            str(count),
            _fmt(count / total if total else None, 1, 100),
            _fmt(s.miou_per_exit.get(exit_id), 2, 100),
        ]
        for exit_id, count in s.exit_usage.items()
    ]


# ---------------------------------------------------------------------------------------------
# Plots


def _save(fig: Figure, path: Path) -> Path:
    try:
        fig.savefig(path, dpi=DPI)
    except OSError as err:
        raise EvalError(f"cannot write plot {path}: {err}") from err
    return path


def _processed(run: RunResult) -> tuple[np.ndarray, np.ndarray]:
    points = [(r.arrival_ms, r.latency_ms) for r in run.records if r.latency_ms is not None]
    if not points:
        return np.zeros(0), np.zeros(0)
    data = np.asarray(points, dtype=np.float64)
    return data[:, 0] / 1000.0, data[:, 1]


def plot_latency(evaluation: Evaluation, path: Path) -> Path:
    """End-to-end latency over the bag's time, the deadline line and the load behind it."""
    fig = Figure(figsize=(10, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for index, run in enumerate(evaluation.runs):
        t_s, latency = _processed(run)
        (line,) = ax.plot(t_s, latency, marker=".", markersize=3, linewidth=0.8, label=run.name)
        dropped = [r.arrival_ms / 1000.0 for r in run.records if not r.processed]
        if dropped:
            ax.plot(
                dropped,
                np.zeros(len(dropped)),
                linestyle="none",
                marker="x",
                color=line.get_color(),
                label=f"{run.name} dropped",
            )
        # Each configuration's deadline in its own colour and dash: several may coincide.
        for deadline in _deadlines(run):
            ax.axhline(
                deadline,
                color=line.get_color(),
                linestyle=_DASHES[index % len(_DASHES)],
                linewidth=1.2,
                label=f"{run.name} deadline {deadline:g} ms",
            )
    ax.set_xlabel("time in bag (s)")
    ax.set_ylabel("latency (ms)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    loads = [
        (r.arrival_ms / 1000.0, r.load) for r in evaluation.runs[0].records if r.load is not None
    ]
    if loads:
        load_ax = ax.twinx()
        data = np.asarray(loads, dtype=np.float64)
        load_ax.fill_between(data[:, 0], data[:, 1], step="post", color="grey", alpha=0.2)
        load_ax.set_ylim(0, 1)
        load_ax.set_ylabel("system load")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title("End-to-end latency per frame")
    return _save(fig, path)


_DASHES: Final = ("--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)))


def _deadlines(run: RunResult) -> list[float]:
    return sorted({r.deadline_ms for r in run.records if r.deadline_ms})


def plot_exits(evaluation: Evaluation, path: Path) -> Path:
    """Which exit every frame took, one panel per configuration."""
    runs = evaluation.runs
    exits = exit_order([r for run in runs for r in run.records])
    fig = Figure(figsize=(10, 1.2 + 1.3 * len(runs)), layout="constrained")
    axes = fig.subplots(len(runs), 1, sharex=True, squeeze=False)[:, 0]
    for ax, run in zip(axes, runs, strict=True):
        points = [
            (r.arrival_ms / 1000.0, exits.index(r.exit_id))
            for r in run.records
            if r.exit_id is not None and r.processed
        ]
        if points:
            data = np.asarray(points, dtype=np.float64)
            ax.step(data[:, 0], data[:, 1], where="post", linewidth=0.8)
            ax.plot(data[:, 0], data[:, 1], linestyle="none", marker=".", markersize=3)
        ax.set_yticks(range(len(exits)), exits, fontsize=7)
        ax.set_ylim(-0.5, max(len(exits) - 0.5, 0.5))
        ax.set_title(run.name, fontsize=9, loc="left")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("time in bag (s)")
    fig.suptitle("Exit taken per frame")
    return _save(fig, path)


def plot_latency_histogram(evaluation: Evaluation, path: Path) -> Path:
    """Distribution of end-to-end latency per configuration, with the deadline."""
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.add_subplot()
    values = [_processed(run)[1] for run in evaluation.runs]
    non_empty = [v for v in values if v.size]
    bins = None
    if non_empty:
        everything = np.concatenate(non_empty)
        bins = np.linspace(0.0, float(everything.max()) * 1.05 + 1e-6, 40).tolist()
    cycle = [entry["color"] for entry in matplotlib.rcParams["axes.prop_cycle"]]
    for index, (run, latency) in enumerate(zip(evaluation.runs, values, strict=True)):
        color = cycle[index % len(cycle)]
        if latency.size and bins is not None:
            ax.hist(latency, bins=bins, alpha=0.5, label=run.name, color=color)
        for deadline in _deadlines(run):
            ax.axvline(
                deadline,
                color=color,
                linestyle=_DASHES[index % len(_DASHES)],
                linewidth=1.2,
                label=f"{run.name} deadline {deadline:g} ms",
            )
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("frames")
    ax.legend(fontsize=8)
    ax.set_title("Latency histogram")
    return _save(fig, path)


def plot_iou_per_class(evaluation: Evaluation, path: Path) -> Path:
    """IoU of every class, one bar per configuration.

    A class with IoU 0 (present, never hit) gets a "0" on the axis; a class
    without an IoU (in neither ground truth nor masks) a hatched grey column:
    drawn alike, a miss and a class never seen would read the same.
    """
    names = evaluation.labels.class_names
    summaries = [run.summary() for run in evaluation.runs]
    fig = Figure(figsize=(max(6.0, 0.6 * len(names) * max(1, len(summaries)) / 1.5), 4.5))
    fig.set_layout_engine("constrained")
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(summaries))
    x = np.arange(len(names))
    no_iou_label = "no IoU (class in neither ground truth nor masks)"
    for i, summary in enumerate(summaries):
        positions = x + (i - (len(summaries) - 1) / 2) * width
        values = [summary.iou_per_class.get(n) for n in names]
        heights = [100.0 * v if v is not None else 0.0 for v in values]
        bars = ax.bar(positions, heights, width, label=summary.name)
        color = bars.patches[0].get_facecolor() if bars.patches else None
        for position, value in zip(positions, values, strict=True):
            if value is None:
                ax.bar(
                    position,
                    100.0,
                    width,
                    color="none",
                    edgecolor="lightgrey",
                    hatch="//",
                    linewidth=0,
                    label=no_iou_label,
                )
                no_iou_label = "_nolegend_"
            elif value == 0.0:
                ax.annotate(
                    "0",
                    (position, 0.0),
                    textcoords="offset points",
                    xytext=(0, 2),
                    ha="center",
                    fontsize=7,
                    color=color,
                )
    ax.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("IoU per class")
    return _save(fig, path)


def plot_examples(evaluation: Evaluation, path: Path) -> Path:
    """A strip of example frames: image, ground truth, and each configuration's mask."""
    labels = evaluation.labels
    runs = [run.name for run in evaluation.runs]
    examples = evaluation.examples
    columns = 2 + len(runs)
    height, width = examples[0].image.shape[:2]
    aspect = height / max(width, 1)
    fig = Figure(figsize=(2.4 * columns, 2.4 * aspect * len(examples) + 0.6), layout="constrained")
    axes = fig.subplots(len(examples), columns, squeeze=False)
    blank = np.zeros((height, width, 3), dtype=np.uint8)
    for row, example in zip(axes, examples, strict=True):
        panels: list[tuple[np.ndarray, str]] = [(example.image, f"frame {example.index}")]
        gt = labels.colorize(example.gt) if example.gt is not None else blank
        panels.append((gt, "ground truth" if example.gt is not None else "no ground truth"))
        for name in runs:
            mask = example.masks.get(name)
            if mask is None:
                panels.append((blank, f"{name}: dropped"))
            else:
                title = f"{name}: {example.exits.get(name, '')}"
                panels.append((labels.colorize(mask), title))
        for ax, (image, title) in zip(row, panels, strict=True):
            ax.imshow(image, interpolation="nearest")
            ax.set_title(title, fontsize=7)
            ax.set_axis_off()
    # The colour key: a mask without it shows colours, not classes.
    handles = [
        Patch(
            facecolor=(color[0] / 255.0, color[1] / 255.0, color[2] / 255.0),
            edgecolor="black",
            linewidth=0.3,
            label=name,
        )
        for name, color in zip(labels.class_names, labels.colors, strict=True)
    ]
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncol=min(len(handles), 6),
        fontsize=7,
        title=f"label set {labels.name}",
        title_fontsize=7,
    )
    fig.suptitle("Examples (masks coloured by the label set)")
    return _save(fig, path)


def load_report(path: str | Path) -> dict[str, Any]:
    """A written ``report.json`` back as a dict; :class:`EvalError` names a bad file."""
    source = Path(path)
    text = read_text(source, "report", f"a {JSON_NAME} written by mess_evaluate", EvalError)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise EvalError(f"cannot read report {source}: {err}") from err
    if not isinstance(data, dict) or "runs" not in data:
        raise EvalError(f"report {source} is not an evaluation report (no 'runs')")
    return data
