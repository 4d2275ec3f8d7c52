"""Speed-up of the ``confidence`` policy over the single-exit baseline at the same accuracy.

This is the paper's headline claim measured end to end on this machine:

1. the deployment search (what ``mess_configure`` runs) picks exits and
   confidence thresholds on the model's calibration cache (validation split),
   as the fastest configuration whose mIoU stays within a margin of the final
   exit's own mIoU there (0.4 points by default);
2. the real engine then segments a held-out synthetic split (``test``, its
   own seed, mixed difficulty) twice, frame by frame interleaved: once with
   the ``final`` policy (the original single-exit network) and once with the
   ``confidence`` policy and the chosen thresholds;
3. mIoU and mean latency of the two are compared.

Latency is the whole ``infer`` call (preprocessing, blocks, heads,
confidences, output mask at the frame's size). Targets: speed-up >= 2.5x,
mIoU within 0.5 points of ``final``.

    python bench/policy_speedup.py [--model models/default.pt] [--images 300]
"""

from __future__ import annotations

import argparse
import sys
from typing import Final

import numpy as np
from _common import (
    BenchError,
    base_config,
    base_parser,
    choose_configuration,
    environment,
    format_usage,
    latency_summary,
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

from mess_ros.deploy.export import scored_to_dict
from mess_ros.model import FINAL_EXIT
from mess_ros.runtime.engine import SegmentationEngine

NAME: Final = "policy_speedup"
MIN_SPEEDUP: Final = 2.5
MAX_MIOU_DROP: Final = 0.005
"""Largest accepted mIoU loss against ``final`` on the test split (0.5 points)."""


def main(args: argparse.Namespace) -> int:
    if args.images < 1 or args.warmup < 0:
        raise BenchError("--images must be >= 1 and --warmup >= 0")
    progress = not args.no_progress
    model = load_model(args.model, args.input_size)
    cache, cache_path = load_calibration(model, args.calibration)
    height, width = model.input_hw
    print(f"model {model.path} ({model.checkpoint.fingerprint}), input {height}x{width}")
    print(f"calibration cache {cache_path}: {cache.num_images} images of {cache.dataset}")

    table = profile_table(model, args.device, args.profile_repeats, progress)
    choice = choose_configuration(
        model,
        cache,
        table,
        miou_margin=args.miou_margin,
        max_exits=args.max_exits,
        threads=args.threads,
        progress=progress,
    )
    chosen, baseline = choice.chosen, choice.baseline
    predicted_speedup = baseline.mean_ms / chosen.mean_ms
    print(f"\nsearch on the calibration cache ({choice.result.configurations_scored:,} scored):")
    print(f"  final only : {baseline.summary()}")
    print(f"  floor      : mIoU >= {100 * choice.floor_miou:.2f}%")
    print(f"  chosen     : {chosen.summary()}")
    print(f"  predicted speed-up {predicted_speedup:.2f}x")
    if not chosen.config.exits:
        print("  (no intermediate exit meets the floor: the confidence policy equals final)")

    confidence_config = choice.config
    final_config = with_policy(
        base_config(model, args.device, args.threads), "final", active_exits=[FINAL_EXIT]
    )
    engines = {
        "final": SegmentationEngine(final_config, model.checkpoint, latency_table=table),
        "confidence": SegmentationEngine(confidence_config, model.checkpoint, latency_table=table),
    }
    exit_order = list(engines["confidence"].active_exits)

    height = args.frame_height or int(cache.dataset.get("height", height))
    width = args.frame_width or int(cache.dataset.get("width", width))
    dataset = test_split(args.images, height, width)
    runs = run_test_split(engines, dataset, warmup=args.warmup, progress=progress)

    final, confident = runs["final"], runs["confidence"]
    speedup = final.mean_ms / confident.mean_ms
    miou_delta = confident.miou - final.miou
    speed_ok = speedup >= MIN_SPEEDUP
    accuracy_ok = miou_delta >= -MAX_MIOU_DROP
    env = environment(args.device)
    print(
        f"\ntest split: {len(dataset)} synthetic images {height}x{width} (seed of 'test', mixed "
        f"difficulty) on {env['device_name']}, {env['torch_threads']} torch thread(s)"
    )
    print(f"{'policy':<12} {'mIoU %':>8} {'mean ms':>9} {'p90 ms':>8} {'stages ms':>10}")
    for run in runs.values():
        stats = latency_summary(run.latency_ms)
        mean_ms, p90_ms = stats["mean_ms"], stats["p90_ms"]
        stages_ms = float(np.mean(run.stages_ms))
        print(
            f"{run.name:<12} {100 * run.miou:>8.2f} {mean_ms:>9.2f} {p90_ms:>8.2f} "
            f"{stages_ms:>10.2f}"
        )
    stage_speedup = float(np.mean(final.stages_ms) / np.mean(confident.stages_ms))
    print(f"confidence exit usage: {format_usage(usage(confident.exits, exit_order))}")
    print()
    print_target(
        "speed-up",
        speed_ok,
        f"{speedup:.2f}x mean latency final/confidence (target >= {MIN_SPEEDUP}x; "
        f"network stages only {stage_speedup:.2f}x, predicted {predicted_speedup:.2f}x)",
    )
    print_target(
        "accuracy",
        accuracy_ok,
        f"mIoU {100 * miou_delta:+.2f} points vs final (target >= {-100 * MAX_MIOU_DROP:.1f})",
    )
    write_json(
        args.out,
        {
            "benchmark": NAME,
            "target": {"min_speedup": MIN_SPEEDUP, "max_miou_drop": MAX_MIOU_DROP},
            "passed": speed_ok and accuracy_ok,
            "speedup": speedup,
            "miou_delta": miou_delta,
            "stage_speedup": stage_speedup,
            "model": model_info(model),
            "environment": env,
            "search": {
                "calibration_cache": str(cache_path),
                "calibration_images": cache.num_images,
                "miou_margin": args.miou_margin,
                "floor_miou": choice.floor_miou,
                "max_exits": args.max_exits,
                "configurations_scored": choice.result.configurations_scored,
                "baseline": scored_to_dict(baseline),
                "chosen": scored_to_dict(chosen),
                "predicted_speedup": predicted_speedup,
            },
            "test_split": {"images": len(dataset), "height": height, "width": width},
            "policies": {name: run.to_dict(exit_order) for name, run in runs.items()},
        },
    )
    return 0


def parser() -> argparse.ArgumentParser:
    p = base_parser(NAME, __doc__.split("\n\n")[0] if __doc__ else NAME)
    p.add_argument("--images", type=int, default=300, help="images of the held-out test split")
    p.add_argument("--calibration", default="", help="calibration cache ('' = the model's own)")
    p.add_argument(
        "--miou-margin",
        type=float,
        default=0.004,
        help="accuracy floor of the search = final-exit mIoU on the cache minus this (fraction)",
    )
    p.add_argument(
        "--max-exits", type=int, default=4, help="most exits a configuration may have (incl. final)"
    )
    p.add_argument("--profile-repeats", type=int, default=20, help="passes of the latency profile")
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
