"""Turning a chosen configuration into what a robot runs: parameter file and pruned checkpoint.

The parameter file is produced by :class:`mess_ros.config.SegmentationConfig`
(the same dataclasses the node declares its parameters from), so its names
cannot drift from the node's. The comment header is for the person who opens
the file on the robot months later: where the configuration came from and
what it was promised to achieve.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mess_ros.common.exits import FINAL_EXIT
from mess_ros.common.latency_table import LatencyTable
from mess_ros.config import SegmentationConfig
from mess_ros.deploy.errors import DeployError
from mess_ros.deploy.pareto import PlotPoint, front_csv, front_markdown, plot_front
from mess_ros.deploy.problem import ExitConfiguration, ScoredConfiguration
from mess_ros.deploy.search import SearchResult, Target
from mess_ros.model import Checkpoint, prune_checkpoint


def apply_configuration(
    config: ExitConfiguration,
    table: LatencyTable,
    model_path: str,
    latency_table_path: str = "",
    base: SegmentationConfig | None = None,
    exit_model_path: str = "",
    cameras: Sequence[str] | None = None,
) -> SegmentationConfig:
    """Node parameters that run ``config`` with the confidence policy on the table's device.

    The learnt decision names its exit model file (``exit_model_path``), the
    class decision writes its per-class thresholds. ``cameras`` (when given)
    become ``cameras.names``: one node then serves them all with one model;
    per-camera deadlines or priorities of ``base`` must match their number.

    Engine settings that the latency depends on (device, backend, input size,
    precision, memory format, CPU threads when recorded) come from the latency
    table, so the robot runs what was priced. Everything else is taken from ``base``.
    """
    params = copy.deepcopy(base) if base is not None else SegmentationConfig()
    engine = params.engine
    engine.model_path = model_path
    engine.device = table.device
    engine.input_height, engine.input_width = (int(v) for v in table.input_hw)
    engine.precision = table.precision
    engine.backend = table.backend
    engine.channels_last = bool(table.notes.get("channels_last", False))
    engine.latency_table = latency_table_path
    threads = table.notes.get("cpu_threads")
    if table.device == "cpu" and isinstance(threads, int) and threads > 0:
        engine.num_threads = threads
    policy = params.policy
    policy.active_exits = [*config.exits, FINAL_EXIT]
    policy.class_thresholds = []
    policy.exit_model = ""
    if config.exits and config.decision == "learnt":
        if not exit_model_path:
            raise DeployError("a learnt-decision configuration needs its exit model file")
        policy.exit_model = exit_model_path
    elif config.exits and config.decision == "class":
        policy.class_thresholds = [float(t) for t in config.class_thresholds]
    if config.exits:
        policy.name = "confidence"
        policy.pixel_threshold = float(config.pixel_threshold)
        thresholds = [float(t) for t in config.image_thresholds]
        policy.image_thresholds = thresholds[:1] if config.shared_threshold else thresholds
    else:
        policy.name = "final"
    if cameras is not None:
        params.cameras.names = list(cameras)
    params.validate()
    return params


def configuration_from_parameters(params: SegmentationConfig) -> ExitConfiguration:
    """The exit configuration a parameter set runs (inverse of :func:`apply_configuration`)."""
    policy = params.policy
    exits = tuple(e for e in policy.active_exits if e != FINAL_EXIT)
    if policy.name == "final" or not exits:
        return ExitConfiguration((), 0.0, ())
    if policy.name != "confidence":
        raise DeployError(f"policy {policy.name!r} is not the confidence policy the search models")
    thresholds = list(policy.image_thresholds)
    image = tuple(
        float(t) for t in (thresholds * len(exits) if len(thresholds) == 1 else thresholds)
    )
    if policy.exit_model:
        return ExitConfiguration(exits, 0.0, image, "learnt")
    if policy.class_thresholds:
        classes = tuple(float(t) for t in policy.class_thresholds)
        return ExitConfiguration(exits, float(policy.pixel_threshold), image, "class", classes)
    return ExitConfiguration(exits, float(policy.pixel_threshold), image)


@dataclass(frozen=True)
class Provenance:
    """Where a configuration came from, for the parameter file's header and the summary JSON."""

    source: str
    checkpoint_fingerprint: str
    latency_table: str
    num_images: int
    tool_version: str = ""
    fit_images: int = 0
    """Calibration images the decisions were fitted and chosen on (the rest are held out)."""


def header_comment(
    robot: str,
    chosen: ScoredConfiguration,
    baseline: ScoredConfiguration,
    target: Target,
    table: LatencyTable,
    provenance: Provenance,
    pruned_checkpoint: str,
    fitted: ScoredConfiguration | None = None,
) -> str:
    """The human-readable summary written as comments at the top of the parameter file.

    ``chosen`` and ``baseline`` hold the figures on the held-out images
    (``provenance.num_images``); ``fitted`` the chosen one's on the images it
    was chosen on, said beside them so nobody mistakes one for the other.
    """
    estimated = table.notes.get("estimated")
    device = f"{table.device_name} ({table.device}, {table.precision})"
    hw = f"{table.input_hw[0]}x{table.input_hw[1]}"
    shares = ", ".join(
        f"{exit_id} {share:.0%}"
        for exit_id, share in zip(chosen.config.active_exits, chosen.exit_shares, strict=True)
    )
    lines = [
        f"mess_ros parameters for robot '{robot}', written by mess_configure "
        f"on {datetime.date.today().isoformat()}.",
        f"Source run: {provenance.source} (checkpoint {provenance.checkpoint_fingerprint}).",
        f"Latency table: {provenance.latency_table}, {device}, input {hw}, "
        f"stage quantile {table.quantile:g}.",
    ]
    if estimated:
        lines.append(f"ESTIMATED latencies, not measured on the robot: {estimated}")
    lines += [
        f"Target: {target.describe()}.",
    ]
    held_out = f" held-out (fitted and chosen on {provenance.fit_images} others)"
    lines += [
        f"Predicted on {provenance.num_images}{held_out if provenance.fit_images else ''} "
        f"calibration images: mIoU {100 * chosen.miou:.2f}%, mean {chosen.mean_ms:.2f} ms, "
        f"p95 {chosen.p95_ms:.2f} ms.",
    ]
    if fitted is not None:
        lines.append(
            f"On the {provenance.fit_images} fitting images: mIoU {100 * fitted.miou:.2f}%, "
            f"mean {fitted.mean_ms:.2f} ms."
        )
    lines += [
        f"Configuration: {chosen.config.describe()}.",
        f"Exit taken: {shares}.",
        f"Final exit only (single-exit baseline): mIoU {100 * baseline.miou:.2f}%, mean "
        f"{baseline.mean_ms:.2f} ms, p95 {baseline.p95_ms:.2f} ms.",
        f"Pruned checkpoint: {pruned_checkpoint}.",
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class ExportPaths:
    """Files written for one robot."""

    params: Path
    checkpoint: Path
    latency_table: Path
    pareto_png: Path
    pareto_md: Path
    pareto_csv: Path
    summary_json: Path
    exit_model: Path

    @classmethod
    def for_robot(
        cls,
        out_dir: Path,
        robot: str,
        report_dir: Path | None = None,
        model_dir: Path | None = None,
    ) -> ExportPaths:
        reports = report_dir or out_dir
        models = model_dir or out_dir
        return cls(
            params=out_dir / f"{robot}.yaml",
            checkpoint=models / f"{robot}.pt",
            latency_table=models / f"{robot}.latency.json",
            pareto_png=reports / f"{robot}_pareto.png",
            pareto_md=reports / f"{robot}_pareto.md",
            pareto_csv=reports / f"{robot}_pareto.csv",
            summary_json=reports / f"{robot}_search.json",
            exit_model=models / f"{robot}.exit_model.json",
        )

    def all(self, learnt: bool = False) -> list[Path]:
        """Every file written; the exit model only for a learnt-decision configuration."""
        return [
            self.params,
            self.checkpoint,
            self.latency_table,
            *([self.exit_model] if learnt else []),
            self.pareto_png,
            self.pareto_md,
            self.pareto_csv,
            self.summary_json,
        ]

    def staged_in(self, directory: Path) -> ExportPaths:
        """The same files written into ``directory`` first (see :func:`install_files`)."""
        return ExportPaths(
            **{f.name: directory / getattr(self, f.name).name for f in dataclasses.fields(self)}
        )

    def artefact_path(self, artefact: Path) -> str:
        """How the parameter file names ``artefact``: relative to the file's own directory.

        The node resolves it there, whatever directory it is started from; and
        a colcon or pip install keeps ``config/`` and ``models/`` side by side
        under ``share/mess_ros``, so the relative path holds there too.
        """
        return os.path.relpath(artefact.resolve(), self.params.parent.resolve())


def install_files(staged: ExportPaths, final: ExportPaths, *, learnt: bool = False) -> None:
    """Move what was written into a staging directory to its final place, file by file.

    Each file is copied next to its target and renamed over it, so a reader
    never sees half a file; nothing reaches the final place before every
    file was written (and, with ``--verify``, verified).
    """
    for source, target in zip(staged.all(learnt), final.all(learnt), strict=True):
        if not source.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        try:
            shutil.copyfile(source, partial)
            partial.replace(target)
        except OSError as err:
            partial.unlink(missing_ok=True)
            raise DeployError(f"cannot write {target}: {err}") from err


def write_pruned_checkpoint(
    checkpoint_path: Path, config: ExitConfiguration, dst: Path
) -> Checkpoint:
    """A copy of the checkpoint holding only the configuration's heads (and the final one)."""
    return prune_checkpoint(checkpoint_path, dst, list(config.exits))


def write_reports(
    paths: ExportPaths,
    result: SearchResult,
    chosen: ScoredConfiguration | None,
    target: Target,
    title: str,
    extra_points: Sequence[PlotPoint] = (),
) -> None:
    """The Pareto table (markdown and CSV) and plot (``chosen`` None: no target was met)."""
    paths.pareto_md.parent.mkdir(parents=True, exist_ok=True)
    paths.pareto_md.write_text(front_markdown(result.front), encoding="utf-8")
    paths.pareto_csv.write_text(front_csv(result.front), encoding="utf-8")
    plot_front(
        paths.pareto_png,
        result.front,
        result.stat,
        chosen=chosen,
        baseline=result.baseline,
        extra_points=extra_points,
        budget_ms=target.budget_ms,
        min_miou=target.min_miou,
        title=title,
    )


def scored_to_dict(scored: ScoredConfiguration) -> dict[str, Any]:
    """JSON form of a scored configuration (summary files, scripts)."""
    return {
        "exits": list(scored.config.exits),
        "decision": scored.config.decision,
        "pixel_threshold": scored.config.pixel_threshold,
        "class_thresholds": list(scored.config.class_thresholds),
        "image_thresholds": list(scored.config.image_thresholds),
        "miou": scored.miou,
        "mean_ms": scored.mean_ms,
        "p95_ms": scored.p95_ms,
        "exit_counts": list(scored.exit_counts),
    }


def write_summary(
    path: Path,
    result: SearchResult,
    chosen: ScoredConfiguration,
    target: Target,
    provenance: Provenance,
    verification: dict[str, Any] | None = None,
    held_out: dict[str, Any] | None = None,
) -> None:
    """Machine-readable record of the search: inputs, speed, front, choice (and verification).

    ``held_out`` holds the chosen and baseline figures on the held-out images.
    """
    data = {
        "source": provenance.source,
        "checkpoint_fingerprint": provenance.checkpoint_fingerprint,
        "latency_table": provenance.latency_table,
        "calibration_images": provenance.num_images,
        "fit_images": provenance.fit_images,
        "held_out": held_out,
        "target": {"budget_ms": target.budget_ms, "min_miou": target.min_miou, "stat": target.stat},
        "search": {
            "configurations_in_space": result.configurations_in_space,
            "configurations_scored": result.configurations_scored,
            "configurations_per_second": result.configurations_per_second,
            "exit_sets": result.exit_sets,
            "elapsed_s": result.elapsed_s,
            "pruned_heads": [list(pair) for pair in result.pruned_heads],
        },
        "chosen": scored_to_dict(chosen),
        "baseline": scored_to_dict(result.baseline),
        "front": [scored_to_dict(s) for s in result.front],
        "verification": verification,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
