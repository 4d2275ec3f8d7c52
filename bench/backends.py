"""Execution backends on this CPU: torch against ONNX Runtime, per stage and end to end.

Two deployments, as a robot runs them:

* ``hybrid``: ``config/default.yaml`` (the bundled model with all its heads,
  the hybrid policy on cpu_rover's exits and thresholds, no deadline);
* ``cpu_rover``: ``config/robots/cpu_rover.yaml`` (the pruned checkpoint,
  the confidence policy);

each once with ``engine.backend`` torch and once onnxruntime, all four
engines on the same frames of the held-out synthetic test split, frame by
frame, the order rotating (``_common.run_test_split``), on ``--threads``
threads with the thread governor off (it would react to this very run).

Per stage: the latency table of the default model profiled with each backend
in alternating rounds (the median of the round means per stage), so that a
disturbed round does not decide. With ``--openvino`` the exported stages are
also timed with OpenVINO's CPU plugin beside ONNX Runtime's sessions (same
files, same threads), the comparison behind the choice of runtime.

Targets: ``hybrid`` end to end (the whole ``infer`` call) at least 2.0x lower
mean latency on onnxruntime than on torch, with mIoU within 0.05 points and
the same exit on at least 99 % of the frames.

    python bench/backends.py [--images 300] [--threads 2] [--rounds 3] [--openvino]
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

if not __package__:  # run as a file (python bench/backends.py): the package lives one level up
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib
import numpy as np

from bench._common import (
    REPORT_DIR,
    BenchError,
    EngineRun,
    HogProcess,
    environment,
    format_usage,
    latency_summary,
    parse_hw,
    print_target,
    run_main,
    run_test_split,
    test_split,
    usage,
    write_json,
)
from mess_ros.common.latency_table import LatencyTable
from mess_ros.config import SegmentationConfig, parameter_file
from mess_ros.model import load_checkpoint
from mess_ros.package_files import package_data_file
from mess_ros.runtime.backends import ONNXRUNTIME, TORCH
from mess_ros.runtime.backends.export import export_stages
from mess_ros.runtime.engine import SegmentationEngine, resolve_model_path
from mess_ros.runtime.profiling import profile_model

matplotlib.use("Agg")
import matplotlib.pyplot as plt

NAME: Final = "backends"
HOG: Final = Path(__file__).with_name("cpu_hog.py")
BACKENDS: Final = (TORCH, ONNXRUNTIME)
DEPLOYMENTS: Final = {"hybrid": "config/default.yaml", "cpu_rover": "config/robots/cpu_rover.yaml"}
MIN_SPEEDUP: Final = 2.0
MIOU_TOLERANCE: Final = 0.0005
MIN_SAME_EXIT: Final = 0.99


def deployment(path: str, backend: str, threads: int) -> SegmentationConfig:
    """A robot's parameter file on ``backend``, governor off, no deadline."""
    config = parameter_file.read(package_data_file(path))
    config.engine.backend = backend
    config.engine.num_threads = threads
    config.engine.adaptive_threads = False
    config.deadline.deadline_ms = 0.0
    config.validate()
    return config


def stage_tables(
    model_path: Path, input_hw: tuple[int, int], rounds: int, repeats: int
) -> dict[str, list[LatencyTable]]:
    """Each backend's profile in ``rounds`` alternating rounds (on the process's thread count)."""
    checkpoint = load_checkpoint(model_path)
    tables: dict[str, list[LatencyTable]] = {b: [] for b in BACKENDS}
    for index in range(rounds):
        for backend in BACKENDS if index % 2 == 0 else BACKENDS[::-1]:
            print(f"profiling round {index + 1}/{rounds}: {backend}", flush=True)
            tables[backend].append(
                profile_model(
                    checkpoint.model,
                    input_hw,
                    warmup=3,
                    repeats=repeats,
                    backend=backend,
                    checkpoint_path=model_path,
                    model_fingerprint_hex=checkpoint.fingerprint,
                )
            )
    return tables


def stage_medians(tables: list[LatencyTable]) -> dict[str, float]:
    """Per stage key (``segment:<point>``, ``head:<exit>``, ``output:<exit>``): median mean ms."""
    keys: dict[str, list[float]] = {}
    for table in tables:
        for section, stats in (
            ("segment", table.segments),
            ("head", table.heads),
            ("output", table.outputs),
        ):
            for name, stat in stats.items():
                keys.setdefault(f"{section}:{name}", []).append(stat.mean_ms)
    return {key: float(np.median(values)) for key, values in keys.items()}


def openvino_stages(
    model_path: Path,
    input_hw: tuple[int, int],
    threads: int,
    repeats: int,
    exits: list[str],
    precision: str = "f32",
) -> dict[str, dict[str, float]]:
    """Mean ms of every block and of ``exits``' heads: OpenVINO against ONNX Runtime, same files."""
    try:
        import onnxruntime
        import openvino
    except ImportError as err:
        raise BenchError(
            f"--openvino needs openvino installed (pip install openvino): {err}"
        ) from err
    checkpoint = load_checkpoint(model_path)
    export = export_stages(checkpoint.model, input_hw, model_path, progress=False)
    stages = {f"segment:{p}": export.segment(p) for p in export.blocks}
    stages |= {f"head:{e}": export.head(e) for e in exits}
    core = openvino.Core()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # f32 is what ONNX Runtime computes; on CPUs with AMX OpenVINO's default is bf16.
    ov_config = {
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": precision,
    }
    result: dict[str, dict[str, float]] = {"onnxruntime": {}, "openvino": {}}
    for key, stage in stages.items():
        x = np.random.default_rng(0).standard_normal(stage.input_shape).astype(np.float32)
        session = onnxruntime.InferenceSession(
            str(stage.path), options, providers=["CPUExecutionProvider"]
        )
        request = core.compile_model(str(stage.path), "CPU", ov_config).create_infer_request()
        runners: dict[str, Callable[[], object]] = {
            "onnxruntime": functools.partial(session.run, None, {"input": x}),
            "openvino": functools.partial(request.infer, {0: x}),
        }
        samples: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(3):
            for run in runners.values():
                run()
        for index in range(repeats):  # interleaved, the order alternating
            for name in list(runners)[:: 1 if index % 2 == 0 else -1]:
                tick = time.perf_counter()
                runners[name]()
                samples[name].append((time.perf_counter() - tick) * 1e3)
        for name, values in samples.items():
            result[name][key] = float(np.median(values))
    return result


def contention(
    dataset: Any, threads: int, frames: int, workers: int
) -> dict[str, dict[str, float]]:
    """The hybrid deployment beside a CPU hog of ``workers`` busy processes, per backend:
    on all threads, on one, and with the thread governor choosing (mean ms per frame)."""
    engines: dict[str, SegmentationEngine] = {}
    for backend in BACKENDS:
        for label, count, adaptive in (
            ("all", threads, False),
            ("one", 1, False),
            ("governor", threads, True),
        ):
            config = deployment(DEPLOYMENTS["hybrid"], backend, count)
            config.engine.adaptive_threads = adaptive
            engines[f"{backend}/{label}"] = SegmentationEngine(config)
    hog = HogProcess([sys.executable, str(HOG), "--workers", str(workers), "--kind", "matmul"])
    times: dict[str, list[float]] = {name: [] for name in engines}
    try:
        time.sleep(1.0)  # the hog's workers are running
        order = list(engines)
        for index in range(frames):
            image = dataset[index % len(dataset)].image
            shift = index % len(order)
            for name in order[shift:] + order[:shift]:
                times[name].append(engines[name].infer(image).measured_ms)
    finally:
        hog.stop()
    result: dict[str, dict[str, float]] = {}
    for name, values in times.items():
        backend, _, label = name.partition("/")
        result.setdefault(backend, {})[f"{label}_mean_ms"] = float(np.mean(values[5:]))
    result["hog"] = {"workers": workers, "load": hog.load}
    return result


def main(args: argparse.Namespace) -> int:
    if args.images < 20:
        raise BenchError(f"--images must be at least 20, got {args.images}")
    engines: dict[str, SegmentationEngine] = {}
    for label, path in DEPLOYMENTS.items():
        for backend in BACKENDS:
            config = deployment(path, backend, args.threads)
            engines[f"{label}/{backend}"] = SegmentationEngine(config)
    reference = engines[f"hybrid/{TORCH}"]
    input_hw = reference.input_hw
    frame_hw = parse_hw(args.frame_size) if args.frame_size else input_hw
    dataset = test_split(args.images, *frame_hw)
    print(f"{len(engines)} engines, {args.images} test frames of {frame_hw[0]}x{frame_hw[1]}")

    traces: dict[str, list[str]] = {name: [] for name in engines}

    def remember(results: dict[str, Any]) -> None:
        for name, result in results.items():
            traces[name].append(result.exit_id)

    runs = run_test_split(
        engines, dataset, warmup=args.warmup, progress=not args.no_progress, on_frame=remember
    )
    model_path = resolve_model_path(reference.config.engine.model_path)
    tables = stage_tables(model_path, input_hw, args.rounds, args.repeats)
    per_stage = {backend: stage_medians(tables[backend]) for backend in BACKENDS}
    under_hog = None
    if args.hog_frames:
        print(f"beside a CPU hog of {args.hog_workers} process(es), {args.hog_frames} frames")
        under_hog = contention(dataset, args.threads, args.hog_frames, args.hog_workers)
    openvino = None
    if args.openvino:
        active = list(reference.active_exits)
        openvino = openvino_stages(
            model_path, input_hw, args.threads, args.repeats * 5, active, args.openvino_precision
        )
    return report(args, engines, runs, traces, per_stage, openvino, under_hog, frame_hw)


def report(
    args: argparse.Namespace,
    engines: dict[str, SegmentationEngine],
    runs: dict[str, EngineRun],
    traces: dict[str, list[str]],
    per_stage: dict[str, dict[str, float]],
    openvino: dict[str, dict[str, float]] | None,
    under_hog: dict[str, dict[str, float]] | None,
    frame_hw: tuple[int, int],
) -> int:
    print(f"\n{'stage':<36} {'torch ms':>9} {'ort ms':>9} {'ratio':>7}")
    stages = {}
    for key, torch_ms in per_stage[TORCH].items():
        ort_ms = per_stage[ONNXRUNTIME][key]
        stages[key] = {"torch_ms": torch_ms, "onnxruntime_ms": ort_ms, "ratio": torch_ms / ort_ms}
        if key.startswith("segment") or key.endswith(("final", "aspplite_c32", "linear")):
            print(f"{key:<36} {torch_ms:>9.3f} {ort_ms:>9.3f} {torch_ms / ort_ms:>6.2f}x")
    deployments: dict[str, Any] = {}
    print(f"\n{'deployment':<12} {'backend':<12} {'mean ms':>8} {'p90 ms':>8} {'mIoU':>7}  exits")
    for label in DEPLOYMENTS:
        order = list(engines[f"{label}/{TORCH}"].active_exits)
        entry: dict[str, Any] = {}
        for backend in BACKENDS:
            run = runs[f"{label}/{backend}"]
            summary = latency_summary(run.latency_ms)
            shares = usage(run.exits, order)
            print(
                f"{label:<12} {backend:<12} {summary['mean_ms']:>8.2f} {summary['p90_ms']:>8.2f} "
                f"{100 * run.miou:>6.2f}%  {format_usage(shares)}"
            )
            entry[backend] = {**run.to_dict(order), "mean_ms": run.mean_ms}
        pairs = zip(traces[f"{label}/{TORCH}"], traces[f"{label}/{ONNXRUNTIME}"], strict=True)
        same = float(np.mean([a == b for a, b in pairs]))
        torch_run, ort_run = runs[f"{label}/{TORCH}"], runs[f"{label}/{ONNXRUNTIME}"]
        entry["speedup"] = torch_run.mean_ms / ort_run.mean_ms
        entry["stages_speedup"] = float(np.mean(torch_run.stages_ms) / np.mean(ort_run.stages_ms))
        entry["miou_difference"] = ort_run.miou - torch_run.miou
        entry["same_exit"] = same
        deployments[label] = entry
        print(
            f"{label:<12} onnxruntime {entry['speedup']:.2f}x faster end to end "
            f"({entry['stages_speedup']:.2f}x on the stages), mIoU "
            f"{100 * entry['miou_difference']:+.3f} points, same exit on {100 * same:.1f}% "
            "of the frames"
        )
    if openvino is not None:
        heading = f"openvino {args.openvino_precision} ms"
        print(f"\n{'stage (exported file)':<36} {'ort ms':>9} {heading:>20}")
        for key, ort_ms in openvino["onnxruntime"].items():
            print(f"{key:<36} {ort_ms:>9.3f} {openvino['openvino'][key]:>20.3f}")
        totals = {name: sum(values.values()) for name, values in openvino.items()}
        print(
            f"sum: onnxruntime {totals['onnxruntime']:.2f} ms, openvino {totals['openvino']:.2f} ms"
        )
    if under_hog is not None:
        print(f"\nhybrid beside {under_hog['hog']['workers']} busy process(es): mean ms per frame")
        for backend in BACKENDS:
            row = under_hog[backend]
            print(
                f"{backend:<12} all {args.threads} threads {row['all_mean_ms']:7.2f}, one thread "
                f"{row['one_mean_ms']:7.2f}, governor {row['governor_mean_ms']:7.2f}"
            )
    hybrid = deployments["hybrid"]
    ok = (
        hybrid["speedup"] >= MIN_SPEEDUP
        and abs(hybrid["miou_difference"]) <= MIOU_TOLERANCE
        and hybrid["same_exit"] >= MIN_SAME_EXIT
    )
    print()
    print_target(
        "hybrid on onnxruntime",
        ok,
        f"{hybrid['speedup']:.2f}x lower mean latency than torch (target >= {MIN_SPEEDUP}x), "
        f"mIoU {100 * hybrid['miou_difference']:+.3f} points (within "
        f"{100 * MIOU_TOLERANCE:.2f}), same exit on {100 * hybrid['same_exit']:.1f}% "
        f"(>= {100 * MIN_SAME_EXIT:.0f}%)",
    )
    load = os.getloadavg()
    print(f"load average over 1/5/15 min at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    plot(args.out.with_suffix(".png"), stages, deployments)
    write_json(
        args.out,
        {
            "environment": environment("cpu"),
            "load_average_1_5_15_min": list(os.getloadavg()),
            "threads": args.threads,
            "images": args.images,
            "frame_hw": list(frame_hw),
            "stages": stages,
            "deployments": deployments,
            "under_hog": under_hog,
            "openvino": openvino,
            "openvino_precision": args.openvino_precision if openvino is not None else None,
            "target": {"min_speedup": MIN_SPEEDUP, "passed": ok},
        },
    )
    return 0


def plot(path: Path, stages: dict[str, dict[str, float]], deployments: dict[str, Any]) -> None:
    blocks = [k for k in stages if k.startswith("segment:")]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4), width_ratios=(3, 1))
    positions = np.arange(len(blocks))
    for offset, backend in ((-0.2, TORCH), (0.2, ONNXRUNTIME)):
        values = [stages[k][f"{backend}_ms"] for k in blocks]
        left.bar(positions + offset, values, width=0.4, label=backend)
    left.set_xticks(positions, [k.partition(":")[2] for k in blocks], rotation=30)
    left.set_ylabel("mean ms per block")
    left.set_title("backbone blocks (default model)")
    left.legend()
    labels = list(deployments)
    positions = np.arange(len(labels))
    for offset, backend in ((-0.2, TORCH), (0.2, ONNXRUNTIME)):
        values = [deployments[k][backend]["mean_ms"] for k in labels]
        right.bar(positions + offset, values, width=0.4, label=backend)
    right.set_xticks(positions, labels)
    right.set_ylabel("mean ms per frame (infer)")
    right.set_title("end to end")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    print(f"plot written to {path}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"bench/{NAME}.py",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--images", type=int, default=300, help="frames of the held-out test split")
    p.add_argument(
        "--frame-size", default="", help="HEIGHTxWIDTH of the frames ('' = the model's input size)"
    )
    p.add_argument("--threads", type=int, default=2, help="CPU threads of every engine")
    p.add_argument("--warmup", type=int, default=5, help="untimed frames per engine first")
    p.add_argument("--rounds", type=int, default=3, help="alternating profiling rounds")
    p.add_argument("--repeats", type=int, default=20, help="passes per profiling round")
    p.add_argument(
        "--hog-frames",
        type=int,
        default=0,
        help="frames per engine beside a CPU hog: all threads, one, the governor (0: skip)",
    )
    p.add_argument("--hog-workers", type=int, default=1, help="busy processes of the hog")
    p.add_argument("--openvino", action="store_true", help="also time the stages on OpenVINO")
    p.add_argument(
        "--openvino-precision",
        default="f32",
        choices=("f32", "bf16"),
        help="OpenVINO's arithmetic (f32: as ONNX Runtime; bf16: its default on AMX CPUs)",
    )
    p.add_argument("--out", type=Path, default=REPORT_DIR / f"{NAME}.json")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


if __name__ == "__main__":
    raise SystemExit(run_main(main, parser()))
