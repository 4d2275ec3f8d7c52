"""Would one node save work by batching its cameras' frames? Batch 1 against batch N, measured.

One node serving N cameras could push the N frames of a trigger through the
shared stages as one batch. Whether that pays depends on the device: a GPU
launches each kernel once for the batch, a CPU core computes the same
convolutions either way. This script measures it for the node's own exit
paths (input tensor to an exit's logits: the stages a batch would share) on
the device at hand:

- ``torch``: the checkpoint, eagerly, at every thread count from 1 to
  ``--threads`` (CPU) or on the GPU;
- ``onnxruntime`` (CPU, when installed): each path exported with a dynamic
  batch dimension into a temporary folder, sessions set up as the node's.

For every path, thread count and batch size it prints the wall time and the
process CPU time per frame (medians of interleaved repeats), and then the
decision: the CPU time per frame of batch N at its cheapest thread count
against batch 1 at *its* cheapest (what separate nodes, whose thread
governors drop to one thread when they share the cores, pay). Batching
would be worth building into the scheduler where that saving is at least
:data:`WORTHWHILE` (10 %).

It also runs the node's engine (``config/default.yaml``, policy without a
deadline) on frames of the camera's size and splits a frame's time into
preprocessing, the network's stages and the output step (the exit's logits
upsampled to the frame and argmax), because only the network's share can be
batched at all.

    python -m bench.batching [--batch 3] [--threads 2] [--repeats 40] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

if not __package__:  # run as a file (python bench/batching.py): the package lives one level up
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from bench._common import (
    BenchError,
    LoadedModel,
    base_parser,
    environment,
    load_model,
    median,
    model_info,
    parse_hw,
    run_main,
    test_split,
    write_json,
)
from mess_ros.common.exits import FINAL_EXIT
from mess_ros.config import SegmentationConfig, parameter_file
from mess_ros.model.messnet import MESSNet
from mess_ros.package_files import package_data_file
from mess_ros.runtime.backends import ONNXRUNTIME, runtime_available
from mess_ros.runtime.backends.export import export_module, quiet_exporter
from mess_ros.runtime.backends.ort_executor import session_options
from mess_ros.runtime.backends.stages import INPUT_NAME
from mess_ros.runtime.engine import SegmentationEngine

NAME: Final = "batching"
WORTHWHILE: Final = 0.10
"""Least CPU time per frame batching must save at the cheapest thread count to be worth it."""
Run = Callable[[np.ndarray[Any, Any]], object]


class ExitPath(nn.Module):
    """Input tensor to one exit's logits: the stages frames of several cameras would share."""

    def __init__(self, model: MESSNet, exit_id: str) -> None:
        super().__init__()
        self.model = model
        self.exit_id = exit_id
        self.point = model.exit_point(exit_id)

    def forward(self, x: Tensor) -> Tensor:
        features = self.model.forward_backbone(x, None, self.point)
        return self.model.forward_head(self.exit_id, features)


@dataclass
class Setting:
    """One backend at one thread count, and its per-frame figures by exit and batch size."""

    backend: str
    threads: int
    wall_ms: dict[str, dict[int, list[float]]] = field(default_factory=dict)
    cpu_ms: dict[str, dict[int, list[float]]] = field(default_factory=dict)

    def record(self, exit_id: str, batch: int, wall_ms: float, cpu_ms: float) -> None:
        self.wall_ms.setdefault(exit_id, {}).setdefault(batch, []).append(wall_ms / batch)
        self.cpu_ms.setdefault(exit_id, {}).setdefault(batch, []).append(cpu_ms / batch)

    def cpu_per_frame(self, exit_id: str, batch: int) -> float:
        return median(self.cpu_ms[exit_id][batch])

    def wall_per_frame(self, exit_id: str, batch: int) -> float:
        return median(self.wall_ms[exit_id][batch])


def process_cpu_ms() -> float:
    """User + system time of every thread of this process (intra-op pools included), in ns steps."""
    return time.process_time_ns() / 1e6


def torch_runner(path: ExitPath, device: torch.device) -> Run:
    def run(batch: np.ndarray[Any, Any]) -> object:
        with torch.inference_mode():
            logits = path(torch.from_numpy(batch).to(device))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return logits

    return run


def onnx_runner(path: ExitPath, folder: Path, threads: int, input_hw: tuple[int, int]) -> Run:
    """The path exported with a dynamic batch dimension, in a session set up as the node's."""
    import onnxruntime as ort

    file = folder / f"{path.exit_id.replace(':', '--')}.onnx"
    if not file.exists():
        with torch.no_grad(), quiet_exporter():
            export_module(path, torch.zeros(1, 3, *input_hw), file, dynamic_batch=True)
    options = session_options(ort, threads)
    session = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])

    def run(batch: np.ndarray[Any, Any]) -> object:
        return session.run(None, {INPUT_NAME: batch})

    return run


def measure(
    setting: Setting,
    runners: dict[str, Run],
    inputs: dict[int, np.ndarray[Any, Any]],
    repeats: int,
    bar: tqdm[Any],
) -> None:
    """Interleaved: every repeat runs every exit at every batch size once, so drift hits all."""
    for run in runners.values():
        for batch in inputs.values():
            run(batch)
            run(batch)
    for _ in range(repeats):
        for exit_id, run in runners.items():
            for size, batch in inputs.items():
                cpu_start, wall_start = process_cpu_ms(), time.perf_counter_ns()
                run(batch)
                wall_ms = (time.perf_counter_ns() - wall_start) / 1e6
                setting.record(exit_id, size, wall_ms, process_cpu_ms() - cpu_start)
        bar.update()


def frame_breakdown(
    node_config: SegmentationConfig,
    model: LoadedModel,
    device: str,
    threads: int,
    frame_hw: tuple[int, int],
    frames: int,
) -> dict[str, Any]:
    """ms per frame of the node's engine at the camera's size: preprocessing, network, output."""
    config = copy.deepcopy(node_config)
    config.engine.model_path = str(model.path)
    config.engine.device = device
    config.engine.num_threads = threads
    config.engine.adaptive_threads = False
    config.deadline.deadline_ms = 0.0
    engine = SegmentationEngine(config, model.checkpoint)
    dataset = test_split(frames, *frame_hw)
    images = [dataset[i].image for i in range(len(dataset))]
    for image in images[:3]:
        engine.infer(image)
    parts = {"preprocess": 0.0, "network": 0.0, "output": 0.0}
    cpu_start = process_cpu_ms()
    wall_start = time.perf_counter_ns()
    for image in images:
        for key, ms in engine.infer(image).stage_times_ms.items():
            kind = key.split(":", 1)[0]  # segment and head stages are the network
            parts[kind if kind in ("preprocess", "output") else "network"] += ms
    wall_ms = (time.perf_counter_ns() - wall_start) / 1e6
    cpu_ms = process_cpu_ms() - cpu_start
    count = len(images)
    return {
        **{k: v / count for k, v in parts.items()},
        "wall_ms": wall_ms / count,
        "cpu_ms": cpu_ms / count,
        "threads": threads,
        "backend": engine.backend,
    }


def measure_paths(
    model: MESSNet,
    exits: list[str],
    device: torch.device,
    input_hw: tuple[int, int],
    batch: int,
    thread_counts: list[int],
    repeats: int,
    progress: bool = True,
) -> list[Setting]:
    """Every exit path at batch 1 and ``batch``, per backend and thread count (GPU: torch only)."""
    network = model.to(device).eval()
    paths = {e: ExitPath(network, e) for e in exits}
    rng = np.random.default_rng(0)
    inputs = {
        size: rng.standard_normal((size, 3, *input_hw)).astype(np.float32) for size in (1, batch)
    }
    backends = ["torch"]
    if device.type == "cpu" and runtime_available(ONNXRUNTIME):
        backends.append(ONNXRUNTIME)
    counts = thread_counts if device.type == "cpu" else [torch.get_num_threads()]
    settings: list[Setting] = []
    previous_threads = torch.get_num_threads()
    total = len(backends) * len(counts) * repeats
    with (
        tempfile.TemporaryDirectory() as folder,
        tqdm(total=total, desc="batching", unit="round", disable=not progress) as bar,
    ):
        for backend in backends:
            for threads in counts:
                torch.set_num_threads(threads)
                setting = Setting(backend, threads)
                if backend == "torch":
                    runners = {e: torch_runner(p, device) for e, p in paths.items()}
                else:
                    runners = {
                        e: onnx_runner(p, Path(folder), threads, input_hw) for e, p in paths.items()
                    }
                measure(setting, runners, inputs, repeats, bar)
                settings.append(setting)
    torch.set_num_threads(previous_threads)
    return settings


def decide(settings: list[Setting], exits: list[str], batch: int) -> dict[str, Any]:
    """Per backend: batch ``batch`` at its cheapest thread count against batch 1 at its own."""
    decisions: dict[str, Any] = {}
    for backend in dict.fromkeys(s.backend for s in settings):
        mine = [s for s in settings if s.backend == backend]
        per_exit = {}
        for e in exits:
            single = min(mine, key=lambda s: s.cpu_per_frame(e, 1))
            batched = min(mine, key=lambda s: s.cpu_per_frame(e, batch))
            one, many = single.cpu_per_frame(e, 1), batched.cpu_per_frame(e, batch)
            per_exit[e] = {
                "cpu_ms_one": one,
                "threads_one": single.threads,
                "wall_ms_one": single.wall_per_frame(e, 1),
                "cpu_ms_batched": many,
                "threads_batched": batched.threads,
                "wall_ms_batched": batched.wall_per_frame(e, batch),
                "saving": 1 - many / one,
            }
        saving = float(np.mean([v["saving"] for v in per_exit.values()]))
        decisions[backend] = {
            "per_exit": per_exit,
            "mean_saving": saving,
            "pays": saving >= WORTHWHILE,
        }
    return decisions


def settings_dict(settings: list[Setting], exits: list[str], batch: int) -> list[dict[str, Any]]:
    return [
        {
            "backend": s.backend,
            "threads": s.threads,
            "per_exit": {
                e: {
                    "wall_ms_one": s.wall_per_frame(e, 1),
                    "wall_ms_batched": s.wall_per_frame(e, batch),
                    "cpu_ms_one": s.cpu_per_frame(e, 1),
                    "cpu_ms_batched": s.cpu_per_frame(e, batch),
                }
                for e in exits
            },
        }
        for s in settings
    ]


def plot(settings: list[Setting], exits: list[str], batch: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backends = list(dict.fromkeys(s.backend for s in settings))
    fig, axes = plt.subplots(1, len(backends), figsize=(6 * len(backends), 4), squeeze=False)
    for ax, backend in zip(axes[0], backends, strict=True):
        mine = [s for s in settings if s.backend == backend]
        width = 0.8 / (2 * len(mine))
        x = np.arange(len(exits))
        for k, setting in enumerate(mine):
            for j, size in enumerate((1, batch)):
                offset = (2 * k + j) * width - 0.4 + width / 2
                values = [setting.cpu_per_frame(e, size) for e in exits]
                label = f"{setting.threads} thread(s), batch {size}"
                ax.bar(x + offset, values, width, label=label, alpha=0.55 + 0.45 * j)
        ax.set_xticks(x, [e.replace(":", "\n") for e in exits], fontsize=8)
        ax.set_ylabel("CPU ms per frame")
        ax.set_title(f"{backend}: CPU time per frame, one at a time vs batch {batch}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(args: argparse.Namespace) -> int:
    if args.batch < 2 or args.repeats < 1 or args.frames < 1:
        raise BenchError("--batch must be >= 2, --repeats and --frames >= 1")
    model = load_model(args.model, args.input_size)
    device = torch.device(args.device)
    config = parameter_file.read(package_data_file("config/default.yaml"))
    exits = [e.strip() for e in args.exits.split(",") if e.strip()] or [*config.policy.active_exits]
    exits = list(dict.fromkeys([*exits, FINAL_EXIT]))
    unknown = [e for e in exits if e not in model.exit_ids]
    if unknown:
        raise BenchError(f"unknown exit(s) {unknown}; the model has: {', '.join(model.exit_ids)}")
    most = args.threads or torch.get_num_threads()
    thread_counts = list(range(1, most + 1))
    height, width = model.input_hw
    print(f"model {model.path} ({model.checkpoint.fingerprint}), input {height}x{width}")
    print(f"exit paths {', '.join(exits)}; batch 1 vs {args.batch}; threads up to {most}")
    settings = measure_paths(
        model.checkpoint.model,
        exits,
        device,
        model.input_hw,
        args.batch,
        thread_counts,
        args.repeats,
        progress=not args.no_progress,
    )

    env = environment(args.device)
    print(f"\nper frame on {env['device_name']}, medians of {args.repeats} interleaved repeats")
    batched = f"b{args.batch}"
    print(
        f"{'backend':<12} {'thr':>3} {'exit path':<26} {'wall b1':>8} {'wall ' + batched:>8} "
        f"{'CPU b1':>8} {'CPU ' + batched:>8} {'CPU':>7}"
    )
    for s in settings:
        for e in exits:
            one, many = s.cpu_per_frame(e, 1), s.cpu_per_frame(e, args.batch)
            print(
                f"{s.backend:<12} {s.threads:>3} {e:<26} {s.wall_per_frame(e, 1):>8.2f} "
                f"{s.wall_per_frame(e, args.batch):>8.2f} {one:>8.2f} {many:>8.2f} "
                f"{many / one - 1:>+7.1%}"
            )

    decisions = decide(settings, exits, args.batch)
    print(f"\nbatch {args.batch} vs one frame at a time, each at its cheapest thread count:")
    for backend, decision in decisions.items():
        detail = ", ".join(
            f"{e} {v['cpu_ms_batched']:.2f} vs {v['cpu_ms_one']:.2f} ms "
            f"({v['threads_batched']} vs {v['threads_one']} thr)"
            for e, v in decision["per_exit"].items()
        )
        verdict = "pays" if decision["pays"] else "does not pay"
        print(
            f"  {backend}: {decision['mean_saving']:.1%} less CPU time per frame on average, "
            f"{verdict} (worth it from {WORTHWHILE:.0%}); {detail}"
        )

    frame_hw = parse_hw(args.frame_size)
    print(f"\nwhere a {frame_hw[0]}x{frame_hw[1]} frame's time goes in the node's engine:")
    breakdown = {
        threads: frame_breakdown(config, model, args.device, threads, frame_hw, args.frames)
        for threads in (thread_counts if device.type == "cpu" else [most])
    }
    for threads, parts in breakdown.items():
        shown = parts["preprocess"] + parts["network"] + parts["output"]
        print(
            f"  {parts['backend']}, {threads} thread(s): {parts['wall_ms']:.2f} ms wall, "
            f"{parts['cpu_ms']:.2f} ms CPU per frame; preprocess {parts['preprocess']:.2f}, "
            f"network {parts['network']:.2f} ({parts['network'] / shown:.0%}), "
            f"output step {parts['output']:.2f} ({parts['output'] / shown:.0%}) ms"
        )

    plot_path = args.out.with_suffix(".png")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot(settings, exits, args.batch, plot_path)
    print(f"plot written to {plot_path}")
    write_json(
        args.out,
        {
            "benchmark": NAME,
            "model": model_info(model),
            "environment": env,
            "batch": args.batch,
            "repeats": args.repeats,
            "worthwhile_saving": WORTHWHILE,
            "settings": settings_dict(settings, exits, args.batch),
            "decisions": decisions,
            "frame_hw": list(frame_hw),
            "frame_breakdown": {str(k): v for k, v in breakdown.items()},
        },
    )
    return 0


def parser() -> argparse.ArgumentParser:
    parser = base_parser(NAME, __doc__.splitlines()[0] if __doc__ else NAME)
    parser.add_argument("--batch", type=int, default=3, help="frames per batch (cameras)")
    parser.add_argument("--repeats", type=int, default=40, help="interleaved rounds per setting")
    parser.add_argument(
        "--exits",
        default="",
        help="comma-separated exit paths ('' = policy.active_exits of config/default.yaml)",
    )
    parser.add_argument(
        "--frame-size", default="480x640", help="camera HEIGHTxWIDTH for the time breakdown"
    )
    parser.add_argument(
        "--frames", type=int, default=60, help="camera frames for the time breakdown"
    )
    return parser


if __name__ == "__main__":
    sys.exit(run_main(main, parser()))
