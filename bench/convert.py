"""A single-exit DeepLabV3 network converted with mess_convert: what the exits buy against it.

The method's promise for networks people already have: add exits to a
trained segmentation network without training it again, then let the
deployment search trade latency for accuracy. In one run, on this machine:

1. the source: a single-exit DeepLabV3 trained here on the synthetic
   scenes, with torchvision's ``DeepLabHead`` layout (``deeplabv3tv_c64``) on
   the ablation preset's backbone (ResNet-18 of base width 16, output stride
   8, 64x128 input) for ``--source-steps`` steps (1200 by default, the
   ablation's backbone budget). ``--source RUN`` takes a finished
   single-exit run instead (``make ablation`` leaves one in
   ``runs/ablation_single_exit``). The scale is the ablation's because
   torchvision's DeepLabV3-ResNet50 costs 38 times its multiply-adds at this
   input (hours of training on two CPU cores); this one trains in minutes.
2. the conversion, as ``mess_convert RUN`` does it: backbone and final head
   frozen, the run's head pool trained at every candidate point by stage 2
   (``--stage2-steps``, 2000 by default as in the ablation), calibration on
   the run's validation scenes;
3. latency tables of both networks measured here, and two picks of the
   deployment search on the converted network's calibration cache: the
   fastest configuration within ``--miou-margin`` of its final exit (the
   speed-up at the source's accuracy) and the most accurate one within the
   final exit's predicted latency (the gain at the source's latency);
4. the held-out test split (``--images`` scenes of the ``test`` seed, mixed
   difficulty) through the real engine, frame by frame interleaved: the
   source network, the converted network's final exit, and both picks.

Targets: the converted final exit's masks equal the source's on every
image, and the speed pick stays within 0.5 mIoU points of the source.

    python bench/convert.py [--source runs/ablation_single_exit] [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Final

if not __package__:  # run as a file, not with -m: the package `bench` lives one level up
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from bench._common import (
    REPO_ROOT,
    REPORT_DIR,
    BenchError,
    Choice,
    EngineRun,
    LoadedModel,
    base_config,
    configuration_for,
    environment,
    format_usage,
    load_calibration,
    load_model,
    model_info,
    print_target,
    profile_table,
    run_main,
    run_test_split,
    search_front,
    test_split,
    usage,
    with_policy,
    write_json,
)
from mess_ros.common.exits import FINAL_EXIT
from mess_ros.common.latency_table import LatencyTable
from mess_ros.deploy.export import scored_to_dict
from mess_ros.deploy.search import Target
from mess_ros.runtime.engine import SegmentationEngine, SegmentationResult
from mess_ros.train.config import preset
from mess_ros.train.convert import conversion_config, read_source
from mess_ros.train.rundir import RunDir
from mess_ros.train.trainer import train

NAME: Final = "convert"
SOURCE_HEAD: Final = "deeplabv3tv_c64"
MAX_MIOU_DROP: Final = 0.005
"""Largest accepted mIoU loss of the speed pick against the source on the test split."""


def train_source(args: argparse.Namespace, work: Path, progress: bool) -> Path:
    """The single-exit source network (or the given run), as a finished run directory."""
    if args.source is not None:
        if not RunDir(args.source).checkpoint_path.is_file():
            raise BenchError(f"--source {str(args.source)!r} is not a finished training run")
        return Path(args.source)
    config = dataclasses.replace(
        preset("ablation"),
        mode="single_exit",
        final_head=SOURCE_HEAD,
        stage1_steps=args.source_steps,
    )
    out = work / "source"
    shutil.rmtree(out, ignore_errors=True)
    print(f"training the source network ({config.stage1_steps} steps) into {out}")
    train(config, out, progress=progress)
    return out


def convert(args: argparse.Namespace, source_run: Path, work: Path, progress: bool) -> Path:
    """What ``mess_convert SOURCE_RUN --stage2-steps N`` does, into ``work/converted``."""
    source = read_source(source_run)
    if source.config is None:
        raise BenchError(f"{source_run} has no training config to convert with")
    config = conversion_config(source.config, source, source_run)
    config = dataclasses.replace(config, stage2_steps=args.stage2_steps)
    config.validate("bench/convert.py")
    out = work / "converted"
    shutil.rmtree(out, ignore_errors=True)
    print(f"converting {source.description} into {out} ({config.stage2_steps} stage-2 steps)")
    train(config, out, progress=progress)
    return out


def main(args: argparse.Namespace) -> int:
    if args.images < 1 or args.source_steps < 1 or args.stage2_steps < 1:
        raise BenchError("--images, --source-steps and --stage2-steps must be >= 1")
    progress = not args.no_progress
    started = time.monotonic()
    work = Path(args.work)
    source_run = train_source(args, work, progress)
    converted_run = convert(args, source_run, work, progress)

    source = load_model(str(RunDir(source_run).checkpoint_path))
    converted = load_model(str(RunDir(converted_run).checkpoint_path))
    cache, cache_path = load_calibration(converted)
    source_table = profile_table(source, args.device, args.profile_repeats, progress)
    table = profile_table(converted, args.device, args.profile_repeats, progress)

    result = search_front(converted, cache, table, max_exits=args.max_exits, progress=progress)
    baseline = result.baseline
    picks = {
        "speed": configuration_for(
            converted,
            result,
            table,
            Target(min_miou=max(0.0, baseline.miou - args.miou_margin)),
            args.threads,
        ),
        "accuracy": configuration_for(
            converted, result, table, Target(budget_ms=baseline.mean_ms), args.threads
        ),
    }
    print(f"\nsearch on {cache_path} ({cache.num_images} images):")
    print(f"  final only: {baseline.summary()}")
    for name, choice in picks.items():
        print(f"  {name:<9} : {choice.chosen.summary()}")

    engines = {
        "source": final_engine(source, source_table, args),
        "final": final_engine(converted, table, args),
        **{
            name: SegmentationEngine(choice.config, converted.checkpoint, latency_table=table)
            for name, choice in picks.items()
        },
    }
    runs, identical = compare_final_masks(engines, args, converted)
    figures = report(args, source, converted, runs, identical, picks)
    figures["search"].update(calibration_cache=str(cache_path), calibration_images=cache.num_images)
    figures["elapsed_s"] = round(time.monotonic() - started, 1)
    print(f"whole run: {figures['elapsed_s'] / 60:.1f} min")
    write_json(args.out, figures)
    return 0


def final_engine(
    model: LoadedModel, table: LatencyTable, args: argparse.Namespace
) -> SegmentationEngine:
    config = with_policy(
        base_config(model, args.device, args.threads), "final", active_exits=[FINAL_EXIT]
    )
    return SegmentationEngine(config, model.checkpoint, latency_table=table)


def compare_final_masks(
    engines: dict[str, SegmentationEngine], args: argparse.Namespace, converted: LoadedModel
) -> tuple[dict[str, EngineRun], int]:
    """Every engine on the test split; also counts frames whose final masks are identical."""
    height, width = converted.input_hw
    identical = 0

    def count(results: dict[str, SegmentationResult]) -> None:
        nonlocal identical
        identical += int(np.array_equal(results["source"].mask, results["final"].mask))

    dataset = test_split(args.images, height, width)
    runs = run_test_split(
        engines, dataset, warmup=args.warmup, progress=not args.no_progress, on_frame=count
    )
    return runs, identical


def report(
    args: argparse.Namespace,
    source: LoadedModel,
    converted: LoadedModel,
    runs: dict[str, EngineRun],
    identical: int,
    picks: dict[str, Choice],
) -> dict[str, Any]:
    """Print the comparison and return the figures for the JSON file."""
    env = environment(args.device)
    height, width = converted.input_hw
    print(
        f"\ntest split: {args.images} synthetic images {height}x{width} (seed of 'test', mixed "
        f"difficulty) on {env['device_name']}, {env['torch_threads']} torch thread(s)"
    )
    labels = {
        "source": "source network (single exit)",
        "final": "converted, final exit",
        "speed": "converted, speed pick",
        "accuracy": "converted, accuracy pick",
    }
    print(f"{'network':<28} {'mIoU %':>8} {'mean ms':>9} {'p90 ms':>8}")
    for name, run in runs.items():
        p90 = float(np.quantile(run.latency_ms, 0.9))
        print(f"{labels[name]:<28} {100 * run.miou:>8.2f} {run.mean_ms:>9.2f} {p90:>8.2f}")
    exit_order = list(converted.exit_ids)
    for name, choice in picks.items():
        shares = usage(runs[name].exits, choice.config.policy.active_exits)
        print(f"{name} pick exit usage: {format_usage(shares)}")

    base, speed, accurate = runs["source"], runs["speed"], runs["accuracy"]
    speedup = base.mean_ms / speed.mean_ms
    speed_delta = speed.miou - base.miou
    gain = accurate.miou - base.miou
    latency_ratio = accurate.mean_ms / base.mean_ms
    same_masks = identical == args.images
    same_accuracy = runs["final"].miou == base.miou
    within = speed_delta >= -MAX_MIOU_DROP
    print()
    print_target(
        "final exit",
        same_masks and same_accuracy,
        f"{identical}/{args.images} masks identical to the source network's "
        f"(mIoU {100 * runs['final'].miou:.2f} against {100 * base.miou:.2f})",
    )
    print_target(
        "speed-up at the source's mIoU",
        within,
        f"{speedup:.2f}x mean latency, mIoU {100 * speed_delta:+.2f} points "
        f"(target: within {100 * MAX_MIOU_DROP:.1f})",
    )
    print(
        f"      mIoU gain at the source's latency: {100 * gain:+.2f} points at "
        f"{latency_ratio:.2f}x its mean latency"
    )
    return {
        "benchmark": NAME,
        "target": {"max_miou_drop": MAX_MIOU_DROP},
        "passed": same_masks and same_accuracy and within,
        "identical_final_masks": identical,
        "speedup_at_source_miou": speedup,
        "speed_pick_miou_delta": speed_delta,
        "miou_gain_at_source_latency": gain,
        "accuracy_pick_latency_ratio": latency_ratio,
        "source": model_info(source),
        "converted": model_info(converted),
        "environment": env,
        "search": {
            "miou_margin": args.miou_margin,
            "max_exits": args.max_exits,
            "picks": {name: scored_to_dict(choice.chosen) for name, choice in picks.items()},
            "baseline": scored_to_dict(picks["speed"].baseline),
        },
        "test_split": {"images": args.images, "height": height, "width": width},
        "networks": {name: run.to_dict(exit_order) for name, run in runs.items()},
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"bench/{NAME}.py",
        description=__doc__.split("\n\n")[0] if __doc__ else NAME,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--source", type=Path, help="a finished single-exit run (default: train one)")
    p.add_argument("--source-steps", type=int, default=1200, help="steps of the source network")
    p.add_argument("--stage2-steps", type=int, default=2000, help="stage-2 steps of the conversion")
    p.add_argument(
        "--work", default=str(REPO_ROOT / "runs" / "bench_convert"), help="where the runs go"
    )
    p.add_argument("--images", type=int, default=300, help="images of the held-out test split")
    p.add_argument(
        "--miou-margin",
        type=float,
        default=0.004,
        help="the speed pick's floor = final-exit mIoU on the cache minus this (fraction)",
    )
    p.add_argument("--max-exits", type=int, default=4, help="most exits of a configuration")
    p.add_argument("--profile-repeats", type=int, default=20, help="passes of each latency profile")
    p.add_argument("--warmup", type=int, default=5, help="untimed frames per engine first")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--out", type=Path, default=REPORT_DIR / f"{NAME}.json", help="JSON figures")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


if __name__ == "__main__":
    sys.exit(run_main(main, parser()))
