"""Speed-up of the exit decisions over the single-exit baseline at the same accuracy, beside
the per-image oracle's.

This is the paper's headline claim measured end to end on this machine:

1. the deployment search (what ``mess_configure`` runs) fits each exit
   decision on half of the model's calibration cache (validation split) and
   picks exits and thresholds as the fastest configuration whose mIoU there
   stays within a margin of the final exit's (0.4 points by default); the
   other half gives held-out figures. Decisions: ``confidence`` (the paper's
   confident-pixel share), ``class`` (per-class pixel thresholds) and
   ``learnt`` (an exit model fitted on the cache);
2. the real engine then segments a held-out synthetic split (``test``, its
   own seed, mixed difficulty) frame by frame, interleaved: the ``final``
   policy (the original single-exit network) and the ``confidence`` policy
   with each decision;
3. on the same frames, every exit's mask is scored, and the per-image oracle
   takes the cheapest exit whose per-image mIoU is within a tolerance of the
   final exit's. Beside each policy it prints the oracle's speed-up at that
   policy's accuracy (the largest tolerance whose oracle is at least as
   accurate) and that tolerance. The oracle's latency is each exit's path in
   the latency table profiled in this run (blocks, its head, its output), so
   its speed-up is compared with the policies' "table" speed-up: each
   frame's path (blocks, heads evaluated, output) priced with the same table,
   which a busy CPU does not distort.
   ``--latency-table`` prices the search and the oracle with a table
   profiled on a quiet machine instead.

Latency is the whole ``infer`` call (preprocessing, blocks, heads, decisions,
output mask at the frame's size); "stages" leaves out preprocessing, as the
table does. Targets: the best policy >= 3.0x lower mean latency than
``final``, mIoU within 0.5 points of it. Figures per difficulty level follow.

    python bench/policy_speedup.py [--model models/default.pt] [--images 300] [--test-seed 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

if (
    not __package__
):  # run as a file (python bench/policy_speedup.py): the package lives one level up
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import numpy.typing as npt

from bench._common import (
    BenchError,
    Choice,
    base_config,
    base_parser,
    choose_configuration,
    environment,
    format_usage,
    latency_summary,
    level_name,
    load_calibration,
    load_model,
    model_info,
    print_target,
    profile_table,
    run_main,
    run_test_split,
    test_split,
    usage,
    with_policy,
    write_json,
)
from mess_ros.common.exits import FINAL_EXIT
from mess_ros.common.latency_table import LatencyTable
from mess_ros.common.metrics import mean_iou, per_image_miou
from mess_ros.deploy.export import scored_to_dict
from mess_ros.deploy.problem import DECISIONS
from mess_ros.runtime.engine import SegmentationEngine, SegmentationResult
from mess_ros.runtime.exit_model import ExitPredictor
from mess_ros.train.calibration import CalibrationCache, iter_exit_outcomes

NAME: Final = "policy_speedup"
MIN_SPEEDUP: Final = 3.0
MAX_MIOU_DROP: Final = 0.005
"""Largest accepted mIoU loss against ``final`` on the test split (0.5 points)."""
ORACLE_TOLERANCES: Final = tuple(round(0.0005 * k, 4) for k in range(101))
"""Per-image mIoU tolerances the oracle is tried at (0 to 5 points)."""

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Oracle:
    """Every exit's confusion per test frame and its path cost: the per-image oracle's inputs."""

    exit_ids: list[str]
    confusion: IntArray  # [N, E, C, C]
    path_ms: npt.NDArray[np.float64]  # [E]

    def choose(self, tolerance: float) -> IntArray:
        """Per frame, the cheapest exit within ``tolerance`` per-image mIoU of the final one."""
        miou = np.nan_to_num(per_image_miou(self.confusion), nan=1.0)
        final = self.exit_ids.index(FINAL_EXIT)
        good = miou >= miou[:, final : final + 1] - tolerance - 1e-12
        cost = np.where(good, self.path_ms[None, :], np.inf)
        return np.asarray(cost.argmin(axis=1), dtype=np.int64)

    def at(self, tolerance: float, frames: npt.NDArray[np.bool_]) -> tuple[float, float]:
        """(mIoU, speed-up over the final exit's path) on the selected frames."""
        chosen = self.choose(tolerance)[frames]
        index = np.flatnonzero(frames)
        miou = mean_iou(self.confusion[index, chosen].sum(axis=0))
        final_ms = self.path_ms[self.exit_ids.index(FINAL_EXIT)]
        return miou, float(final_ms / self.path_ms[chosen].mean())

    def matching(self, miou: float, frames: npt.NDArray[np.bool_]) -> tuple[float, float, float]:
        """The fastest tried tolerance whose oracle is at least ``miou`` accurate.

        Returns (tolerance, oracle mIoU, oracle speed-up).
        """
        best = (0.0, *self.at(0.0, frames))
        for tolerance in ORACLE_TOLERANCES:
            oracle_miou, speedup = self.at(tolerance, frames)
            if oracle_miou >= miou and speedup > best[2]:
                best = (tolerance, oracle_miou, speedup)
        return best


def fixed_path_ms(table: LatencyTable, exit_id: str, points: list[str], point: str) -> float:
    """Mean cost of running straight to one exit: blocks to its point, its head, its output."""
    blocks = sum(table.segments[p].mean_ms for p in points[: points.index(point) + 1])
    return float(blocks + table.heads[exit_id].mean_ms + table.outputs[exit_id].mean_ms)


def _decision_time_us(choice: Choice, cache: CalibrationCache) -> float | None:
    """Mean time of one learnt decision on the cache's histograms (features + scorer), in µs."""
    path = choice.config.policy.exit_model
    if not path or cache.class_hist is None:
        return None
    predictor = ExitPredictor.load(Path(path))
    exit_id = choice.chosen.config.exits[0]
    histograms = cache.class_hist[:, cache.exit_index(exit_id)]
    started = time.perf_counter()
    for image in histograms:
        predictor.score(exit_id, image)
    return (time.perf_counter() - started) / len(histograms) * 1e6


def main(args: argparse.Namespace) -> int:
    if args.images < 1 or args.warmup < 0:
        raise BenchError("--images must be >= 1 and --warmup >= 0")
    progress = not args.no_progress
    model = load_model(args.model, args.input_size)
    cache, cache_path = load_calibration(model, args.calibration)
    cache.require_class_hist("bench/policy_speedup.py", str(cache_path))
    height, width = model.input_hw
    print(f"model {model.path} ({model.checkpoint.fingerprint}), input {height}x{width}")
    print(f"calibration cache {cache_path}: {cache.num_images} images of {cache.dataset}")

    if args.latency_table:
        table = LatencyTable.load(Path(args.latency_table))
        print(f"latency table {args.latency_table} ({table.device_name}) prices the search")
    else:
        table = profile_table(model, args.device, args.profile_repeats, progress)
    choices: dict[str, Choice] = {}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # Absolute: the engine resolves a relative exit model beside a parameter file.
    exit_model_path = args.out.resolve().with_name(f"{args.out.stem}.exit_model.json")
    limits = {"miou_margin": args.miou_margin, "max_exits": args.max_exits}
    for decision in DECISIONS:
        choices[decision] = choose_configuration(
            model, cache, table, threads=args.threads, progress=progress, decision=decision,
            exit_model_path=exit_model_path, **limits,
        )  # fmt: skip
    any_choice = next(iter(choices.values()))
    split = any_choice.held.split
    print(
        f"\nsearch fitted on {split.fit.size} calibration images, checked on the "
        f"{split.held_out.size} held out (floor: final exit minus {100 * args.miou_margin:.2f} "
        "points on the fitting images)"
    )
    base, held_base = any_choice.baseline, any_choice.held.held_out_baseline
    print(f"  final only  fit {base.summary()}")
    print(f"              held-out {held_base.summary()}")
    for name, choice in choices.items():
        fit, held = choice.chosen, choice.held_out
        print(
            f"  {name:<11} fit {base.mean_ms / fit.mean_ms:.2f}x "
            f"{100 * (fit.miou - base.miou):+.2f}"
            f" | held-out {held_base.mean_ms / held.mean_ms:.2f}x "
            f"{100 * (held.miou - held_base.miou):+.2f}: {fit.config.describe()}"
        )

    final_config = with_policy(
        base_config(model, args.device, args.threads), "final", active_exits=[FINAL_EXIT]
    )
    engines = {"final": SegmentationEngine(final_config, model.checkpoint, latency_table=table)}
    for name, choice in choices.items():
        engines[name] = SegmentationEngine(choice.config, model.checkpoint, latency_table=table)

    height = args.frame_height or int(cache.dataset.get("height", height))
    width = args.frame_width or int(cache.dataset.get("width", width))
    dataset = test_split(args.images, height, width, seed=args.test_seed)
    num_classes = model.checkpoint.model.spec.num_classes
    ignore = engines["final"].labels.ignore_index
    difficulty = np.array([dataset[i].difficulty for i in range(len(dataset))])
    # Each frame's path priced with the latency table (load-free), as the search and oracle do.
    pricing = any_choice.held.fit_problem
    active = {
        name: [e for e in engine.active_exits if e != FINAL_EXIT]
        for name, engine in engines.items()
    }
    priced: dict[str, list[float]] = {name: [] for name in engines}

    def price(results: dict[str, SegmentationResult]) -> None:
        for name, result in results.items():
            priced[name].append(pricing.path_ms(active[name], result.exit_id))

    runs = run_test_split(engines, dataset, warmup=args.warmup, progress=progress, on_frame=price)

    network = model.checkpoint.model
    exit_ids = list(network.exit_ids)
    points = list(network.block_points)
    samples = (dataset[i] for i in range(len(dataset)))
    outcomes = iter_exit_outcomes(network, samples, model.input_hw, engines["final"].device,
                                  num_classes, ignore)  # fmt: skip
    oracle = Oracle(
        exit_ids=exit_ids,
        confusion=np.stack([o.confusion for o in outcomes]),
        path_ms=np.array(
            [fixed_path_ms(table, e, points, network.exit_point(e)) for e in exit_ids]
        ),
    )

    env = environment(args.device)
    seed_text = "the split's own seed" if args.test_seed is None else f"seed {args.test_seed}"
    print(
        f"\ntest split: {len(dataset)} synthetic images {height}x{width} ({seed_text}, mixed "
        f"difficulty) on {env['device_name']}, {env['torch_threads']} torch thread(s)"
    )
    groups: dict[str, npt.NDArray[np.bool_]] = {"all": np.ones(len(dataset), dtype=bool)}
    for level in sorted(set(difficulty.tolist())):
        groups[level_name(level)] = difficulty == level
    figures: dict[str, Any] = {}
    final = runs["final"]
    for group, frames in groups.items():
        count = int(frames.sum())
        print(f"\n{group} ({count} frames)")
        print(
            f"{'policy':<12} {'mIoU %':>7} {'Δ pts':>6} {'mean ms':>8} {'speed-up':>8} "
            f"{'stages':>7} {'table':>7} {'oracle at same mIoU':>22}"
        )
        rows: dict[str, Any] = {}
        for name, run in runs.items():
            miou = run.miou_of(frames)
            speedup = final.mean_ms_of(frames) / run.mean_ms_of(frames)
            stages = final.stages_mean_ms_of(frames) / run.stages_mean_ms_of(frames)
            table_ratio = float(
                np.mean(np.asarray(priced["final"])[frames])
                / np.mean(np.asarray(priced[name])[frames])
            )
            tolerance, oracle_miou, oracle_speedup = oracle.matching(miou, frames)
            delta = 100 * (miou - final.miou_of(frames))
            print(
                f"{name:<12} {100 * miou:>7.2f} {delta:>+6.2f} {run.mean_ms_of(frames):>8.2f} "
                f"{speedup:>7.2f}x {stages:>6.2f}x {table_ratio:>6.2f}x {oracle_speedup:>8.2f}x "
                f"(tol {100 * tolerance:.2f})"
            )
            rows[name] = {
                "miou": miou,
                "miou_delta": miou - final.miou_of(frames),
                "latency": latency_summary(list(np.asarray(run.latency_ms)[frames])),
                "speedup": speedup,
                "stage_speedup": stages,
                "table_speedup": table_ratio,
                "oracle": {
                    "tolerance": tolerance,
                    "miou": oracle_miou,
                    "speedup": oracle_speedup,
                },
            }
        target_miou = final.miou_of(frames) - MAX_MIOU_DROP
        tolerance, oracle_miou, oracle_speedup = oracle.matching(target_miou, frames)
        print(
            f"oracle at final - {100 * MAX_MIOU_DROP:.1f} points: {oracle_speedup:.2f}x "
            f"(per-image tolerance {100 * tolerance:.2f} points, mIoU {100 * oracle_miou:.2f}%)"
        )
        rows["oracle_at_target"] = {
            "tolerance": tolerance,
            "miou": oracle_miou,
            "speedup": oracle_speedup,
        }
        figures[group] = {"frames": count, "policies": rows}

    exit_order = [e for e in exit_ids if any(e in run.exits for run in runs.values())]
    for name, run in runs.items():
        if name != "final":
            print(f"{name} exit usage: {format_usage(usage(run.exits, exit_order))}")
    decision_us = _decision_time_us(choices["learnt"], cache)
    if decision_us is not None:
        print(f"learnt decision (features + scorer, numpy): {decision_us:.1f} µs per exit")

    overall = figures["all"]["policies"]
    passing = [
        name
        for name in DECISIONS
        if overall[name]["speedup"] >= MIN_SPEEDUP and overall[name]["miou_delta"] >= -MAX_MIOU_DROP
    ]
    within = [n for n in DECISIONS if overall[n]["miou_delta"] >= -MAX_MIOU_DROP]
    best = max(within or list(DECISIONS), key=lambda n: overall[n]["speedup"])
    print()
    print_target(
        "speed-up",
        overall[best]["speedup"] >= MIN_SPEEDUP,
        f"best policy within the accuracy target: {best}, {overall[best]['speedup']:.2f}x mean "
        f"latency final/{best} (target >= {MIN_SPEEDUP}x; oracle at its mIoU "
        f"{overall[best]['oracle']['speedup']:.2f}x on network stages, the policy "
        f"{overall[best]['stage_speedup']:.2f}x)",
    )
    print_target(
        "accuracy",
        overall[best]["miou_delta"] >= -MAX_MIOU_DROP,
        f"{best}: mIoU {100 * overall[best]['miou_delta']:+.2f} points vs final "
        f"(target >= {-100 * MAX_MIOU_DROP:.1f})",
    )
    write_json(
        args.out,
        {
            "benchmark": NAME,
            "target": {"min_speedup": MIN_SPEEDUP, "max_miou_drop": MAX_MIOU_DROP},
            "passed": bool(passing),
            "best": best,
            "model": model_info(model),
            "environment": env,
            "search": {
                "calibration_cache": str(cache_path),
                "calibration_images": cache.num_images,
                "fit_images": int(split.fit.size),
                "held_out_images": int(split.held_out.size),
                "miou_margin": args.miou_margin,
                "max_exits": args.max_exits,
                "baseline": scored_to_dict(base),
                "held_out_baseline": scored_to_dict(held_base),
                "chosen": {d: scored_to_dict(c.chosen) for d, c in choices.items()},
                "held_out": {d: scored_to_dict(c.held_out) for d, c in choices.items()},
            },
            "test_split": {
                "images": len(dataset),
                "height": height,
                "width": width,
                "seed": args.test_seed,
            },
            "learnt_decision_us": decision_us,
            "figures": figures,
        },
    )
    return 0


def parser() -> argparse.ArgumentParser:
    p = base_parser(NAME, __doc__.split("\n\n")[0] if __doc__ else NAME)
    p.add_argument("--images", type=int, default=300, help="images of the held-out test split")
    p.add_argument(
        "--test-seed",
        type=int,
        default=None,
        help="seed of the test scenes (default: the test split's own)",
    )
    p.add_argument("--calibration", default="", help="calibration cache ('' = the model's own)")
    p.add_argument(
        "--miou-margin",
        type=float,
        default=0.004,
        help="accuracy floor of the search = final-exit mIoU on the fitting images minus this "
        "(fraction)",
    )
    p.add_argument(
        "--max-exits", type=int, default=4, help="most exits a configuration may have (incl. final)"
    )
    p.add_argument("--profile-repeats", type=int, default=20, help="passes of the latency profile")
    p.add_argument(
        "--latency-table",
        default="",
        help="price the search and the oracle with this table instead of profiling now "
        "(a profile taken on a busy CPU misprices the exits)",
    )
    p.add_argument("--warmup", type=int, default=5, help="untimed frames per policy first")
    p.add_argument(
        "--frame-height", type=int, default=0, help="test frame height (0 = calibration images')"
    )
    p.add_argument(
        "--frame-width", type=int, default=0, help="test frame width (0 = calibration images')"
    )
    return p


if __name__ == "__main__":
    sys.exit(run_main(main, parser()))
