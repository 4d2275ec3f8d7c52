"""Speed of the exhaustive exit-configuration search, and its Pareto front against one exit.

Run from the repository root::

    python bench/search_speed.py [--model models/default.pt --cache models/default_calibration.npz
        | --run runs/default] [--latency-table table.json] [--single-exit runs/ablation_single_exit]

What it measures, on this machine:

* configurations scored per minute by :func:`mess_ros.deploy.search.search`
  (target: at least 100,000 per minute; the figure counts only configurations
  actually scored, not the ones pruned as provably dominated, so it is the
  conservative one) and the time of one full search of the model's whole
  candidate space (every point, every head, the default threshold grids,
  up to ``--max-exits`` exits): the paper needs under one GPU-hour, here it
  must take minutes on a CPU (target: at most 5 minutes);
* the Pareto front (mIoU against latency) and the paper's two headline
  ratios against the single-exit network at its own latency: the best mIoU
  reachable within the single-exit latency, and the lowest latency that
  reaches the single-exit mIoU (as a speed-up factor).

Two single-exit baselines are reported when available. The *final-only
configuration* of the same network is always on hand (its own final exit,
every intermediate head switched off). The *separately trained single-exit
network* (``mess_train --mode single_exit``) is what the paper compares
with; it has the same backbone and final head, hence the same latency as
the final-only configuration, and its mIoU is read from its own calibration
cache, which must cover the same images.

Without ``--latency-table`` the model is profiled here first
(:func:`mess_ros.deploy.profile.profile_checkpoint`, the ``mess_profile``
measurement) and the table is written next to the JSON results. Exit
status 0 unless an input is missing or inconsistent (2).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if not __package__:  # run as a file, not with -m: the package `bench` lives one level up
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench._common import (
    DEFAULT_MODEL,
    REPO_ROOT,
    REPORT_DIR,
    SINGLE_EXIT_RUN,
    BenchError,
    run_and_save,
)
from mess_ros.common.exits import FINAL_EXIT
from mess_ros.deploy.inputs import DeployInputs, load_inputs, run_paths
from mess_ros.deploy.pareto import PlotPoint, front_markdown, plot_front
from mess_ros.deploy.problem import STATS, ScoredConfiguration, StatName
from mess_ros.deploy.profile import format_table, profile_checkpoint
from mess_ros.deploy.search import THRESHOLD_MODES, SearchResult, SearchSpace, search
from mess_ros.model import Checkpoint, load_checkpoint
from mess_ros.train.calibration import CalibrationCache
from mess_ros.train.rundir import RunDir

DEFAULT_CACHE = REPO_ROOT / "models/default_calibration.npz"
DEFAULT_OUT = REPORT_DIR / "search_speed.json"
DEFAULT_PLOT = REPORT_DIR / "search_speed_pareto.png"

TARGET_PER_MINUTE = 100_000
TARGET_FULL_SEARCH_S = 300.0
PAPER_SPEEDUP = 2.83
PAPER_GAIN_PP = 5.33


@dataclass(frozen=True)
class Baseline:
    """A single-exit network: its accuracy on the calibration images and its latency."""

    name: str
    miou: float
    latency_ms: float


@dataclass(frozen=True)
class Headline:
    """The front against one baseline: same latency -> mIoU gain; same mIoU -> speed-up."""

    baseline: Baseline
    at_latency: ScoredConfiguration
    at_accuracy: ScoredConfiguration | None
    stat: StatName

    @property
    def gain_pp(self) -> float:
        return 100.0 * (self.at_latency.miou - self.baseline.miou)

    @property
    def speedup(self) -> float:
        if self.at_accuracy is None:
            return math.nan
        return self.baseline.latency_ms / self.at_accuracy.latency_ms(self.stat)

    def lines(self) -> list[str]:
        base = self.baseline
        lines = [
            f"{base.name}: mIoU {100 * base.miou:.2f}% at {base.latency_ms:.2f} ms",
            f"  best mIoU within {base.latency_ms:.2f} ms: {100 * self.at_latency.miou:.2f}% "
            f"({self.gain_pp:+.2f} points; paper: up to +{PAPER_GAIN_PP} points) "
            f"at {self.at_latency.latency_ms(self.stat):.2f} ms",
        ]
        if self.at_accuracy is None:
            lines.append(f"  no configuration reaches mIoU {100 * base.miou:.2f}%")
        else:
            lines.append(
                f"  lowest latency at mIoU >= {100 * base.miou:.2f}%: "
                f"{self.at_accuracy.latency_ms(self.stat):.2f} ms ({self.speedup:.2f}x faster; "
                f"paper: up to {PAPER_SPEEDUP}x), mIoU {100 * self.at_accuracy.miou:.2f}%"
            )
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": {
                "name": self.baseline.name,
                "miou": self.baseline.miou,
                "latency_ms": self.baseline.latency_ms,
            },
            "best_at_baseline_latency": _scored(self.at_latency),
            "miou_gain_pp": round(self.gain_pp, 4),
            "fastest_at_baseline_miou": (
                None if self.at_accuracy is None else _scored(self.at_accuracy)
            ),
            "speedup": None if math.isnan(self.speedup) else round(self.speedup, 4),
        }


def headline(front: Sequence[ScoredConfiguration], baseline: Baseline, stat: StatName) -> Headline:
    """The front's answer to "same latency?" and "same accuracy?" for one baseline.

    A tolerance of a microsecond on latency and 1e-9 on mIoU keeps the
    final-only configuration (equal to the baseline in both) on its own side.
    """
    within = [s for s in front if s.latency_ms(stat) <= baseline.latency_ms + 1e-6]
    if not within:
        msg = f"no configuration of the front is as fast as {baseline.name}"
        raise BenchError(msg)
    reaching = [s for s in front if s.miou >= baseline.miou - 1e-9]
    return Headline(
        baseline=baseline,
        at_latency=max(within, key=lambda s: (s.miou, -s.latency_ms(stat))),
        at_accuracy=min(reaching, key=lambda s: (s.latency_ms(stat), -s.miou))
        if reaching
        else None,
        stat=stat,
    )


def separate_single_exit(run_dir: Path, inputs: DeployInputs, latency_ms: float) -> Baseline:
    """The separately trained single-exit network on the same calibration images."""
    checkpoint_path, cache_path = run_paths(run_dir)
    for path in (checkpoint_path, cache_path):
        if not path.is_file():
            msg = f"{str(path)!r} does not exist; is {str(run_dir)!r} a finished single-exit run?"
            raise BenchError(msg)
    single: Checkpoint = load_checkpoint(checkpoint_path)
    ours, theirs = inputs.checkpoint.model.spec, single.model.spec
    if (ours.backbone, ours.final_head, ours.num_classes) != (
        theirs.backbone,
        theirs.final_head,
        theirs.num_classes,
    ):
        msg = (
            f"single-exit checkpoint {str(checkpoint_path)!r} has another backbone, final head "
            f"or class count than {str(inputs.checkpoint_path)!r}, so its latency is not the "
            "final-only one"
        )
        raise BenchError(msg)
    cache = CalibrationCache.load(cache_path)
    if cache.dataset != inputs.cache.dataset or cache.num_images != inputs.cache.num_images:
        msg = (
            f"calibration cache {str(cache_path)!r} covers other images ({cache.dataset}, "
            f"{cache.num_images} images) than {str(inputs.cache_path)!r} "
            f"({inputs.cache.dataset}, {inputs.cache.num_images} images)"
        )
        raise BenchError(msg)
    if tuple(cache.input_hw) != tuple(inputs.cache.input_hw):
        msg = f"calibration cache {str(cache_path)!r} was computed at another input size"
        raise BenchError(msg)
    return Baseline(
        "single-exit network (separately trained)", cache.exit_miou(FINAL_EXIT), latency_ms
    )


def _scored(scored: ScoredConfiguration) -> dict[str, Any]:
    config = scored.config
    return {
        "miou": scored.miou,
        "mean_ms": scored.mean_ms,
        "p95_ms": scored.p95_ms,
        "exits": list(config.exits),
        "pixel_threshold": config.pixel_threshold,
        "image_thresholds": list(config.image_thresholds),
        "exit_counts": list(scored.exit_counts),
    }


def search_figures(results: Sequence[SearchResult]) -> dict[str, Any]:
    """Every repetition's time and rate, and their medians (the figures quoted)."""
    first = results[0]
    median_s = max(statistics.median(r.elapsed_s for r in results), 1e-9)
    return {
        "repetitions": len(results),
        "configurations_in_space": first.configurations_in_space,
        "configurations_scored": first.configurations_scored,
        "exit_sets": first.exit_sets,
        "pruned_heads": [list(pair) for pair in first.pruned_heads],
        "search_s": [round(r.elapsed_s, 4) for r in results],
        "median_search_s": round(median_s, 4),
        "scored_per_minute": [round(60.0 * r.configurations_per_second) for r in results],
        "median_scored_per_minute": round(60.0 * first.configurations_scored / median_s),
        "median_space_per_minute": round(60.0 * first.configurations_in_space / median_s),
        "front_size": len(first.front),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Configurations scored per minute, time of a full search, and the Pareto "
        "front against the single-exit network."
    )
    parser.add_argument("--run", type=Path, help="training run dir (instead of --model/--cache)")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="checkpoint")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="calibration cache")
    parser.add_argument(
        "--latency-table", type=Path, help="latency table (default: profile the model here)"
    )
    parser.add_argument(
        "--single-exit",
        type=Path,
        default=SINGLE_EXIT_RUN,
        help="separately trained single-exit run dir (left out with a note when unfinished)",
    )
    parser.add_argument("--stat", default="mean", choices=STATS, help="latency statistic")
    parser.add_argument("--max-exits", type=int, default=SearchSpace().max_exits)
    parser.add_argument("--thresholds", default="per_exit", choices=THRESHOLD_MODES)
    parser.add_argument("--repeats", type=int, default=1, help="full searches timed")
    parser.add_argument("--device", default="cpu", help="device to profile on")
    parser.add_argument("--profile-repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results")
    parser.add_argument("--plot", type=Path, default=DEFAULT_PLOT, help="Pareto front PNG")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def load(args: argparse.Namespace) -> tuple[DeployInputs, bool]:
    """The three inputs, checked together; True when the table was profiled here."""
    if args.run is not None:
        checkpoint_path, cache_path = run_paths(args.run)
    else:
        checkpoint_path, cache_path = args.model, args.cache
    for path, what in ((checkpoint_path, "checkpoint"), (cache_path, "calibration cache")):
        if not Path(path).is_file():
            raise BenchError(f"{what} {str(path)!r} does not exist")
    table_path = args.latency_table
    profiled = table_path is None
    if table_path is None:
        cache = CalibrationCache.load(cache_path)
        print(f"profiling {checkpoint_path} at {cache.input_hw[0]}x{cache.input_hw[1]} ...")
        table = profile_checkpoint(
            str(checkpoint_path),
            cache.input_hw,
            args.device,
            repeats=args.profile_repeats,
            threads=args.threads,
            progress=not args.no_progress,
        )
        table_path = args.out.with_name(args.out.stem + "_latency.json")
        table_path.parent.mkdir(parents=True, exist_ok=True)
        table.save(table_path)
        print(format_table(table))
    return load_inputs(checkpoint_path, cache_path, table_path), profiled


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.repeats < 1:
        raise BenchError(f"--repeats must be >= 1, got {args.repeats}")
    inputs, profiled = load(args)
    stat: StatName = args.stat
    problem = inputs.problem()
    space = SearchSpace(max_exits=args.max_exits, thresholds=args.thresholds)
    print(
        f"\ncandidate space: {len(problem.candidates)} intermediate exits at "
        f"{len(problem.points) - 1} points, {problem.num_images} calibration images, "
        f"up to {space.max_exits} exits, {len(space.pixel_thresholds)} pixel x "
        f"{len(space.image_thresholds)} image thresholds ({space.thresholds})"
    )
    results = []
    for repetition in range(args.repeats):
        result = search(problem, space, stat, progress=not args.no_progress and repetition == 0)
        results.append(result)
        print(
            f"search {repetition + 1}/{args.repeats}: {result.elapsed_s:.2f} s, "
            f"{60 * result.configurations_per_second:,.0f} configurations scored per minute"
        )
    result = results[0]
    print(result.report())
    figures = search_figures(results)

    final_only = result.baseline
    baselines = [
        Baseline(
            "final-only configuration (same network)", final_only.miou, final_only.latency_ms(stat)
        )
    ]
    single_checkpoint = RunDir(args.single_exit).checkpoint_path
    if single_checkpoint.is_file():
        try:
            baselines.append(
                separate_single_exit(args.single_exit, inputs, final_only.latency_ms(stat))
            )
        except BenchError as err:
            if args.single_exit != SINGLE_EXIT_RUN:
                raise
            # `make ablation` leaves a single-exit run of another scale at the default path.
            print(f"note: {err}; the baseline is the final-only configuration of the same network")
    else:
        print(
            f"note: no finished single-exit run at {args.single_exit} ({single_checkpoint} is "
            "missing); the baseline is the final-only configuration of the same network"
        )
    headlines = [headline(result.front, baseline, stat) for baseline in baselines]

    print(f"\nPareto front ({stat} latency, {len(result.front)} configurations):")
    print(front_markdown(result.front))
    for item in headlines:
        print("\n".join(item.lines()))

    per_minute = figures["median_scored_per_minute"]
    full_s = figures["median_search_s"]
    checks = [
        {
            "name": "configurations scored per minute",
            "target": f">= {TARGET_PER_MINUTE:,}",
            "measured": f"{per_minute:,} ({figures['median_space_per_minute']:,} of the space "
            "decided per minute, pruned ones included)",
            "passed": per_minute >= TARGET_PER_MINUTE,
        },
        {
            "name": "full search of the candidate space",
            "target": f"<= {TARGET_FULL_SEARCH_S:g} s",
            "measured": f"{full_s:.2f} s",
            "passed": full_s <= TARGET_FULL_SEARCH_S,
        },
    ]
    print()
    for check in checks:
        verdict = "PASS" if check["passed"] else "FAIL"
        print(f"[{verdict}] {check['name']}: {check['measured']} ({check['target']})")

    extra = [PlotPoint(b.name, b.latency_ms, b.miou) for b in baselines[1:]]
    for item in headlines[-1:]:
        extra.append(
            PlotPoint(
                "best at single-exit latency",
                item.at_latency.latency_ms(stat),
                item.at_latency.miou,
            )
        )
        if item.at_accuracy is not None:
            extra.append(
                PlotPoint(
                    "fastest at single-exit mIoU",
                    item.at_accuracy.latency_ms(stat),
                    item.at_accuracy.miou,
                )
            )
    plot_front(
        args.plot,
        result.front,
        stat,
        baseline=final_only,
        extra_points=extra,
        title=f"{inputs.table.device_name}: Pareto front vs single exit",
    )
    return {
        "benchmark": "search_speed",
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        },
        "inputs": {
            "checkpoint": str(inputs.checkpoint_path),
            "cache": str(inputs.cache_path),
            "latency_table": str(inputs.table_path),
            "latency_table_profiled_here": profiled,
            "device_name": inputs.table.device_name,
            "input_hw": list(inputs.cache.input_hw),
            "calibration_images": problem.num_images,
            "candidates": len(problem.candidates),
        },
        "space": {
            "max_exits": space.max_exits,
            "thresholds": space.thresholds,
            "pixel_thresholds": list(space.pixel_thresholds),
            "image_thresholds": list(space.image_thresholds),
            "stat": stat,
        },
        "search": figures,
        "front": [_scored(s) for s in result.front],
        "headlines": [item.to_dict() for item in headlines],
        "checks": checks,
        "all_passed": all(bool(check["passed"]) for check in checks),
        "plot": str(args.plot),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def timed_run() -> dict[str, Any]:
        started = time.perf_counter()
        results = run(args)
        results["elapsed_s"] = round(time.perf_counter() - started, 2)
        return results

    return run_and_save("search_speed", timed_run, args.out, args.plot)


if __name__ == "__main__":
    sys.exit(main())
