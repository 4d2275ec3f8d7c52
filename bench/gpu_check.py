"""Everything the CPU machines cannot measure, in one run on an NVIDIA GPU (under 8 minutes).

``make gpu-check`` prepares the environment (a venv beside the checkout that
sees the system's packages; PyTorch with CUDA, TensorRT and ONNX Runtime's
GPU build where they can be installed) and runs this script, which writes one
JSON file of results (``--out``) and prints one line per section:

1. ``environment``: GPU, driver, CUDA, torch, TensorRT, ONNX Runtime providers;
2. ``cuda_tests``: the test suite's CUDA-only tests (``pytest -m cuda``);
3. ``latency_torch``: per-exit latency (blocks to the exit, its head, its
   mask) of the cpu_rover robot's pruned model at 512x1024 and 1024x2048, in
   fp32 and fp16, through the engine's profiler (every stage bracketed by
   CUDA synchronisation);
4. ``latency_tensorrt``: the same with TensorRT engines, built per stage
   (build time reported), and the speed-up over torch per exit;
5. ``deadline``: the deadline benchmark of ``bench/deadline_e2e.py`` on the
   GPU, in this process: frames at ``--rate`` Hz with a deadline of 0.7x the
   final exit's median latency, the ``final`` policy, ``hybrid`` with the
   load reported and ``hybrid`` with it ignored; during the middle third
   ``bench/gpu_hog.py`` keeps the GPU busy from another process and reports
   its share, which is passed to the engine as the node's ``system_load``;
6. ``stage_graphs``: per stage at 512x1024, eager against a CUDA graph replay
   and ``torch.compile``: where either pays (at least 10 % faster);
7. ``batching``: each exit path at 512x1024 with three frames as one batch
   against one at a time (``bench/batching.py``): wall and CPU time per
   frame, whether batching several cameras' frames would pay on the GPU.

A section that cannot run says why (no GPU, a runtime missing and what to
install, the time budget spent) and the others go on. Exit status 1 when a
section failed, else 0. ``--smoke`` runs every section that can on the CPU,
at 64x128 with ``bench/cpu_hog.py`` as the hog, for seconds: the check of
this script itself on a machine without a GPU.

    python bench/gpu_check.py [--out reports/bench/gpu_check.json] [--budget-s 450] [--smoke]
"""

from __future__ import annotations

import argparse
import functools
import math
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

if not __package__:  # run as a file (python bench/gpu_check.py): the package lives one level up
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from bench._common import REPO_ROOT, REPORT_DIR, HogProcess, latency_summary, test_split, write_json
from bench.batching import decide, measure_paths, settings_dict
from mess_ros.common.latency_table import LatencyTable
from mess_ros.config import SegmentationConfig, parameter_file
from mess_ros.model import FINAL_EXIT, MESSNet, load_checkpoint
from mess_ros.runtime.backends import TENSORRT, TORCH, create_executor, runtime_available
from mess_ros.runtime.backends.base import RUNTIME_PACKAGES
from mess_ros.runtime.engine import SegmentationEngine, resolve_model_path
from mess_ros.runtime.profiling import profile_model

NAME: Final = "gpu_check"
ROBOT_PARAMS: Final = REPO_ROOT / "config" / "robots" / "cpu_rover.yaml"
GPU_HOG: Final = Path(__file__).with_name("gpu_hog.py")
CPU_HOG: Final = Path(__file__).with_name("cpu_hog.py")
CUDA_TESTS: Final = (
    "tests/runtime/backends/test_cuda.py",
    "tests/model/test_checkpoint.py",
    "tests/train/test_device.py",
)
PAYS: Final = 1.1
DEADLINE_FACTOR: Final = 0.7
LOAD_PERIOD_S: Final = 0.1


@dataclass(frozen=True)
class Setup:
    """Where the sections run: the GPU at full size, or the CPU as a smoke test of this script."""

    device: torch.device
    sizes: tuple[tuple[int, int], ...]
    precisions: tuple[str, ...]
    hog_argv: tuple[str, ...]

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


GPU: Final = Setup(
    torch.device("cuda"),
    ((512, 1024), (1024, 2048)),
    ("fp32", "fp16"),
    (sys.executable, str(GPU_HOG), "--period-ms", "100"),
)
SMOKE: Final = Setup(
    torch.device("cpu"),
    ((64, 128),),
    ("fp32",),
    (sys.executable, str(CPU_HOG), "--workers", "1", "--period-ms", "100"),
)


class Budget:
    """Seconds left of the whole run; sections that would not fit are skipped, not started."""

    def __init__(self, total_s: float) -> None:
        self.total_s = total_s
        self.start = time.monotonic()

    def left_s(self) -> float:
        return self.total_s - (time.monotonic() - self.start)


@dataclass
class Section:
    name: str
    status: str = "ok"  # ok, failed, skipped
    reason: str = ""
    seconds: float = 0.0
    results: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return f"{self.status.upper():<7} {self.name}" + (f": {self.reason}" if self.reason else "")


def run_section(
    name: str, budget: Budget, need_s: float, blocker: str, body: Callable[[Section], None]
) -> Section:
    """Run ``body`` unless ``blocker`` (a reason) or the budget says no; failures are recorded."""
    section = Section(name)
    left = budget.left_s()
    if blocker:
        section.status, section.reason = "skipped", blocker
    elif left < need_s:
        section.status = "skipped"
        section.reason = f"time budget: {left:.0f} s left, needs about {need_s:.0f} s"
    else:
        started = time.monotonic()
        try:
            body(section)
        except Exception as err:  # a broken section must not stop the others
            section.status, section.reason = "failed", f"{type(err).__name__}: {err}"
            section.results["traceback"] = traceback.format_exc(limit=8)
        section.seconds = round(time.monotonic() - started, 1)
    print(section.line(), flush=True)
    return section


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


def environment(section: Section) -> None:
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30)
    if shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=driver_version,name", "--format=csv,noheader"]
        done = subprocess.run(query, capture_output=True, text=True, timeout=30, check=False)
        info["nvidia_smi"] = done.stdout.strip() or done.stderr.strip()
    for module in ("tensorrt", "onnxruntime", "onnx"):
        if runtime_available(module):
            imported = __import__(module)
            info[module] = str(getattr(imported, "__version__", "?"))
        else:
            info[module] = f"not installed (pip install {RUNTIME_PACKAGES.get(module, module)})"
    if runtime_available("onnxruntime"):
        import onnxruntime

        info["onnxruntime_providers"] = onnxruntime.get_available_providers()
    section.results.update(info)
    if not torch.cuda.is_available():
        section.reason = "no CUDA device: every GPU section below is skipped"


def cuda_tests(section: Section) -> None:
    argv = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider"]
    done = subprocess.run(
        [*argv, *CUDA_TESTS],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = (done.stdout + done.stderr).strip().splitlines()
    section.results = {
        "returncode": done.returncode,
        "summary": lines[-1] if lines else "",
        "output_tail": lines[-40:],
    }
    section.reason = section.results["summary"]
    if done.returncode not in (0, 5):  # 5: nothing selected
        section.status = "failed"


def work_checkpoint(work: Path) -> Path:
    """The robot's pruned checkpoint copied to ``work``, so exports and engines land there."""
    params = parameter_file.read(ROBOT_PARAMS)
    source = resolve_model_path(params.engine.model_path)
    work.mkdir(parents=True, exist_ok=True)
    target = work / source.name
    if not target.is_file():
        shutil.copyfile(source, target)
    return target


def per_exit(table: LatencyTable, model: MESSNet) -> dict[str, dict[str, float]]:
    """Each exit's own path (blocks up to it, its head, its mask), mean and high quantile."""
    return {
        exit_id: {
            "mean_ms": table.path_ms([], exit_id, "mean"),
            "p90_ms": table.path_ms([], exit_id, "p90"),
        }
        for exit_id in model.exit_ids
    }


def latency(
    section: Section, setup: Setup, backend: str, checkpoint_path: Path, budget: Budget
) -> None:
    checkpoint = load_checkpoint(checkpoint_path)
    device = setup.device
    combos = [(size, precision) for size in setup.sizes for precision in setup.precisions[::-1]]
    need_s = 20.0 if backend == TORCH else 100.0
    for size, precision in combos:
        key = f"{size[0]}x{size[1]}_{precision}"
        if budget.left_s() < need_s:
            section.results[key] = {"skipped": f"time budget: {budget.left_s():.0f} s left"}
            section.reason = "some sizes skipped for time"
            continue
        started = time.monotonic()
        executor = create_executor(
            backend,
            checkpoint.model,
            device,
            size,
            precision=precision,
            checkpoint_path=checkpoint_path,
            fingerprint=checkpoint.fingerprint,
            progress=True,
        )
        ready_s = time.monotonic() - started
        table = profile_model(
            checkpoint.model,
            size,
            warmup=10,
            repeats=50,
            executor=executor,
            model_fingerprint_hex=checkpoint.fingerprint,
        )
        section.results[key] = {
            "ready_s": round(ready_s, 1),
            "per_exit": per_exit(table, checkpoint.model),
            "table": table.to_dict(),
        }
        final = section.results[key]["per_exit"][FINAL_EXIT]["mean_ms"]
        print(
            f"  {backend} {key}: final exit {final:.2f} ms (ready in {ready_s:.0f} s)", flush=True
        )
        del executor
        if setup.cuda:
            torch.cuda.empty_cache()


def speedups(torch_section: Section, trt_section: Section) -> dict[str, dict[str, float]]:
    """TensorRT's speed-up over torch per size, precision and exit (mean latency)."""
    result: dict[str, dict[str, float]] = {}
    for key, trt in trt_section.results.items():
        reference = torch_section.results.get(key, {})
        if "per_exit" not in trt or "per_exit" not in reference:
            continue
        result[key] = {
            exit_id: reference["per_exit"][exit_id]["mean_ms"] / stat["mean_ms"]
            for exit_id, stat in trt["per_exit"].items()
        }
    return result


def stage_ms(
    run: Callable[[], object], device: torch.device, warmup: int = 10, repeats: int = 50
) -> float:
    """Median time of ``run`` in ms: between CUDA events on a GPU, by the host clock elsewhere."""
    for _ in range(warmup):
        run()
    if device.type != "cuda":
        times = []
        for _ in range(repeats):
            tick = time.perf_counter()
            run()
            times.append((time.perf_counter() - tick) * 1e3)
        return float(np.median(times))
    torch.cuda.synchronize()
    # torch.cuda.Event and Stream are untyped in torch's stubs.
    start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
    end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
    times = []
    for _ in range(repeats):
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return float(np.median(times))


def graph_replay(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> Callable[[], None]:
    """``fn`` on a static copy of ``x`` captured in a CUDA graph; returns the replay."""
    static = x.clone()
    stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn(static)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn(static)
    return graph.replay


def stage_graphs(section: Section, setup: Setup, checkpoint_path: Path, budget: Budget) -> None:
    """Per stage: eager, a CUDA graph replay, ``torch.compile`` (on the CPU: eager only)."""
    size, device = setup.sizes[0], setup.device
    dtypes = {"fp16": torch.float16, "fp32": torch.float32}
    for precision in setup.precisions[::-1]:
        dtype = dtypes[precision]
        model = load_checkpoint(checkpoint_path).model.to(device=device, dtype=dtype).eval()
        stages: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]] = {}
        features = torch.zeros(1, 3, *size, device=device, dtype=dtype)
        previous: str | None = None
        with torch.no_grad():
            for point in model.block_points:
                block = functools.partial(model.forward_backbone, start=previous, end=point)
                stages[f"segment:{point}"] = (block, features)
                output = block(features)
                for exit_id in model.exit_ids:
                    if model.exit_point(exit_id) == point:
                        head = functools.partial(model.forward_head, exit_id)
                        stages[f"head:{exit_id}"] = (head, output)
                features, previous = output, point
            rows: dict[str, dict[str, Any]] = {}
            for key, (fn, x) in stages.items():
                eager = stage_ms(functools.partial(fn, x), device)
                row: dict[str, Any] = {"eager_ms": eager}
                if not setup.cuda:
                    rows[key] = row
                    continue
                row["graph_ms"] = stage_ms(graph_replay(fn, x), device)
                if precision == "fp16" and budget.left_s() > 60:
                    try:
                        compiled = torch.compile(fn)
                        tick = time.monotonic()
                        compiled(x)
                        row["compile_s"] = round(time.monotonic() - tick, 1)
                        row["compiled_ms"] = stage_ms(functools.partial(compiled, x), device)
                    except Exception as err:  # torch.compile needs Triton and a compiler
                        row["compiled_ms"] = math.nan
                        row["compile_error"] = f"{type(err).__name__}: {err}"[:300]
                best = min(row["graph_ms"], row.get("compiled_ms", math.inf))
                row["pays"] = bool(eager / best >= PAYS) if best > 0 else False
                rows[key] = row
            section.results[f"{size[0]}x{size[1]}_{precision}"] = rows
        paying = [k for k, r in rows.items() if r.get("pays")]
        print(f"  {precision}: graphs or compile pay for {len(paying)}/{len(rows)} stages")


def batching(section: Section, setup: Setup, checkpoint_path: Path, repeats: int) -> None:
    """Three frames per batch against one at a time, per exit path, at the first size."""
    model = load_checkpoint(checkpoint_path).model
    settings = measure_paths(
        model, list(model.exit_ids), setup.device, setup.sizes[0], 3, [1], repeats, False
    )
    decisions = decide(settings, list(model.exit_ids), 3)
    section.results["settings"] = settings_dict(settings, list(model.exit_ids), 3)
    section.results["decisions"] = decisions
    for backend, decision in decisions.items():
        walls = [1 - v["wall_ms_batched"] / v["wall_ms_one"] for v in decision["per_exit"].values()]
        print(
            f"  {backend}: batch 3 saves {decision['mean_saving']:.0%} CPU and "
            f"{float(np.mean(walls)):.0%} wall time per frame on average"
        )


def deadline(
    section: Section, setup: Setup, checkpoint_path: Path, seconds: float, rate_hz: float
) -> None:
    size = setup.sizes[0]
    backend = TENSORRT if setup.cuda and runtime_available("tensorrt") else TORCH
    precision = setup.precisions[-1]
    base = parameter_file.read(ROBOT_PARAMS)
    updates: dict[str, object] = {
        "engine.model_path": str(checkpoint_path),
        "engine.latency_table": "",
        "engine.device": str(setup.device),
        "engine.require_cuda": setup.cuda,
        "engine.adaptive_threads": False,
        "engine.backend": backend,
        "engine.precision": precision,
        "engine.input_height": size[0],
        "engine.input_width": size[1],
        "engine.profile_repeats": 20,
    }
    base = SegmentationConfig.from_parameters(updates, base)
    scenes = test_split(12, *size)
    frames = [scenes[i].image for i in range(len(scenes))]
    final = SegmentationEngine(with_policy(base, "final", True, 0.0))
    idle = [final.infer(frames[i % len(frames)]).measured_ms for i in range(40)][10:]
    deadline_ms = DEADLINE_FACTOR * float(np.median(idle))
    section.results.update(
        {"backend": backend, "input_hw": list(size), "deadline_ms": deadline_ms, "runs": {}}
    )
    print(f"  deadline {deadline_ms:.2f} ms ({backend}, {precision}, {size[0]}x{size[1]})")
    for label, policy, use_load in (
        ("final", "final", True),
        ("hybrid", "hybrid", True),
        ("hybrid, load ignored", "hybrid", False),
    ):
        engine = SegmentationEngine(with_policy(base, policy, use_load, deadline_ms))
        run = deadline_run(engine, frames, deadline_ms, seconds, rate_hz, setup.hog_argv)
        section.results["runs"][label] = run
        print(
            f"  {label}: misses {run['miss_rate']:.1%} (outside the hog "
            f"{run['outside_miss_rate']:.1%}, during {run['during_miss_rate']:.1%}), mean exit "
            f"{run['mean_exit_index']:.2f}, hog load {run['hog_load_mean']:.2f}",
            flush=True,
        )


def with_policy(
    config: SegmentationConfig, policy: str, use_load: bool, deadline_ms: float
) -> SegmentationConfig:
    updates = {
        "policy.name": policy,
        "deadline.use_load": use_load,
        "deadline.deadline_ms": deadline_ms,
    }
    return SegmentationConfig.from_parameters(updates, config)


def deadline_run(
    engine: SegmentationEngine,
    frames: list[Any],
    deadline_ms: float,
    seconds: float,
    rate_hz: float,
    hog_argv: tuple[str, ...],
) -> dict[str, Any]:
    """Frames at ``rate_hz`` for ``seconds``; the hog runs during the middle third."""
    for frame in frames[:5]:
        engine.infer(frame)
    period_s = 1.0 / rate_hz
    start = time.monotonic()
    hog: HogProcess | None = None
    hog_window = [math.inf, math.inf]  # from its first report to its stop, in s of the run
    hog_started = math.inf
    load_at = start
    load = 0.0
    records: list[tuple[float, bool, int, float]] = []
    latencies: list[float] = []
    index = 0
    try:
        while (now := time.monotonic()) - start < seconds:
            elapsed = now - start
            if hog is None and elapsed >= seconds / 3 and math.isinf(hog_window[1]):
                hog, hog_started = HogProcess(hog_argv), elapsed
            if hog is not None and math.isinf(hog_window[0]) and hog.reports:
                hog_window[0] = elapsed  # its work runs from here on
            if hog is not None and elapsed >= 2 * seconds / 3:
                hog.stop()
                if math.isinf(hog_window[0]) and hog.reports:  # it ran between two frames
                    hog_window[0] = hog_started
                hog, hog_window[1] = None, elapsed
            if now >= load_at:  # as a robot's load monitor publishes it
                load = hog.load if hog is not None and hog.reports else 0.0
                engine.report_load(load)
                load_at += LOAD_PERIOD_S
            stamp_ns = time.monotonic_ns()
            result = engine.infer(frames[index % len(frames)], stamp_ns + round(deadline_ms * 1e6))
            records.append((elapsed, bool(result.met_deadline), result.exit_index, load))
            latencies.append((result.done_ns - stamp_ns) / 1e6)
            index += 1
            wait = start + index * period_s - time.monotonic()
            if wait > 0:
                time.sleep(wait)
    finally:
        if hog is not None:
            hog.stop()
            hog_window[1] = time.monotonic() - start
    during = [r for r in records if hog_window[0] <= r[0] < hog_window[1]]
    outside = [r for r in records if not hog_window[0] <= r[0] < hog_window[1]]

    def miss_rate(rows: list[tuple[float, bool, int, float]]) -> float:
        return sum(not met for _, met, _, _ in rows) / len(rows) if rows else math.nan

    hog_loads = [r[3] for r in during]
    return {
        "frames": len(records),
        "miss_rate": miss_rate(records),
        "outside_miss_rate": miss_rate(outside),
        "during_miss_rate": miss_rate(during),
        "frames_during": len(during),
        "hog_window_s": hog_window,
        "hog_load_mean": float(np.mean(hog_loads)) if hog_loads else math.nan,
        "mean_exit_index": float(np.mean([r[2] for r in records])) if records else math.nan,
        "latency": latency_summary(latencies),
    }


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"bench/{NAME}.py", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPORT_DIR / f"{NAME}.json")
    parser.add_argument("--budget-s", type=float, default=450.0, help="whole run, in seconds")
    parser.add_argument("--deadline-seconds", type=float, default=30.0, help="per deadline run")
    parser.add_argument("--rate", type=float, default=30.0, help="frames per second (deadline)")
    parser.add_argument("--work", type=Path, default=REPORT_DIR / "gpu_work", help="exports")
    parser.add_argument("--smoke", action="store_true", help="run the sections on the CPU, small")
    args = parser.parse_args(argv)
    setup = SMOKE if args.smoke else GPU
    budget = Budget(args.budget_s)
    sections = [run_section("environment", budget, 0, "", environment)]
    no_gpu = ""
    if setup.cuda and not torch.cuda.is_available():
        cuda_build = torch.version.cuda or "none"
        no_gpu = f"no CUDA device (torch {torch.__version__}, CUDA build {cuda_build})"
    no_trt = no_gpu or (
        ""
        if runtime_available("tensorrt") and setup.cuda
        else "TensorRT needs CUDA"
        if not setup.cuda
        else f"tensorrt is not installed (pip install {RUNTIME_PACKAGES['tensorrt']})"
    )
    checkpoint = work_checkpoint(args.work)
    sections.append(run_section("cuda_tests", budget, 60, no_gpu, cuda_tests))
    torch_latency = run_section(
        "latency_torch", budget, 30, no_gpu, lambda s: latency(s, setup, TORCH, checkpoint, budget)
    )
    sections.append(torch_latency)
    trt_latency = run_section(
        "latency_tensorrt",
        budget,
        100,
        no_trt,
        lambda s: latency(s, setup, TENSORRT, checkpoint, budget),
    )
    trt_latency.results["speedup_over_torch"] = speedups(torch_latency, trt_latency)
    sections.append(trt_latency)
    deadline_need = 3 * args.deadline_seconds + 60
    sections.append(
        run_section(
            "deadline",
            budget,
            deadline_need,
            no_gpu,
            lambda s: deadline(s, setup, checkpoint, args.deadline_seconds, args.rate),
        )
    )
    sections.append(
        run_section(
            "stage_graphs",
            budget,
            40,
            no_gpu,
            lambda s: stage_graphs(s, setup, checkpoint, budget),
        )
    )
    sections.append(
        run_section(
            "batching",
            budget,
            40,
            no_gpu,
            lambda s: batching(s, setup, checkpoint, 3 if args.smoke else 20),
        )
    )
    failed = [s.name for s in sections if s.status == "failed"]
    write_json(
        args.out,
        {
            "budget_s": args.budget_s,
            "elapsed_s": round(args.budget_s - budget.left_s(), 1),
            "sections": {
                s.name: {
                    "status": s.status,
                    "reason": s.reason,
                    "seconds": s.seconds,
                    "results": s.results,
                }
                for s in sections
            },
        },
    )
    skipped = [s.name for s in sections if s.status == "skipped"]
    print(
        f"{len(sections) - len(failed) - len(skipped)} sections ran, {len(skipped)} skipped, "
        f"{len(failed)} failed" + (f" ({', '.join(failed)})" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
