"""Node latency: what the ROS node adds on top of the engine, across processes, over time.

``segmentation_node`` runs as a child process (its own ROS domain, discovery
limited to this machine, the large-data Fast DDS profile of ``config/``).
This script is the camera and the consumer at once: it publishes 640x480
``rgb8`` frames (a pool of synthetic scenes rendered before the clock starts,
the messages prebuilt, so a tick only stamps and publishes) with the
sensor-data QoS a camera driver uses, and subscribes ``mask`` and
``exit_info``. Masks and reports are matched to frames by header stamp.

Per frame, on this process's monotonic clock (the node reports on the same
machine's monotonic clock):

* ``round trip`` = mask received here - publish call made here;
* ``engine`` = ``exit_info`` ``measured_ms``: the node's ``engine.infer`` call
  from first to last instruction (resize and normalisation, the stages it
  ran, the mask at frame size), the time a standalone engine would take;
* ``overhead`` = round trip - engine: everything the node and DDS add. It
  is split into the node's ``queue_ms`` (conversion of the incoming image
  and the hand-over to the inference thread), its delivery (converting and
  publishing the masks: ``stage.deliver:<h>x<w>`` of ``exit_info``) and the
  transport (the rest: both DDS trips, with this process's take and
  dispatch of the mask also reported on its own).

Phases, after the node has served its first frame and a short warm-up:

1. latency at ``--rate`` (15 Hz) for ``--seconds``: p50/p95/p99 of the
   overhead. Target: p50 at most 5 ms.
2. memory (``--soak-minutes``, 0 skips it): the same stream for 10 minutes;
   the peak of the node's resident set size reached by
   ``--baseline-minutes`` (2) against the peak at the end. Target: within
   5 % of each other. Peaks, not single readings: the allocator keeps
   handing back and re-taking the same few large blocks, so RSS toggles
   between plateaus some 20 MiB apart for the whole run, and two single
   readings compare whichever plateau each happened to catch. A leak
   shows as a peak that keeps rising.
3. throughput with no deadline, for ``--throughput-seconds``: frames are
   published faster than the node can take them (``--throughput-rate``,
   default twice the engine's rate from phase 1), so that whenever inference
   finishes a fresh frame waits in the node's latest-frame slot and the rest
   are replaced there, as with a camera faster than the network. Reported as
   masks/s against the engine's own rate, 1 / mean engine time of the same
   frames: the ratio is the share of the engine's capacity the node delivers.
   (A closed loop that publishes when a mask returns does not measure this:
   its next frame often reaches the node before the inference thread has
   taken the waiting one, which then counts as replaced, and the loop stalls
   on frames that will never come back.)

The node runs without a deadline (``deadline.deadline_ms`` 0) and with
``--policy`` (``final`` by default: every frame takes the same path, so the
engine time subtracted per frame is steady). It is always stopped by PID
(SIGINT, then SIGKILL), also when the benchmark fails or is interrupted.

    python bench/node_latency.py [--model models/default.pt] [--seconds 60]
        [--soak-minutes 10] [--throughput-seconds 30]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

if not __package__:  # run as a file, not with -m: the package `bench` lives one level up
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
from tqdm import tqdm

from bench._common import (
    BenchError,
    LoadedModel,
    base_config,
    base_parser,
    environment,
    load_model,
    model_info,
    parse_hw,
    print_target,
    quantile,
    run_main,
    write_json,
)
from mess_ros.common.stamps import NS_PER_S
from mess_ros.config import parameter_file
from mess_ros.ros.client import FrameStream, FrameTrace, NodeClient
from mess_ros.ros.diagnostics import ExitInfo
from mess_ros.ros.processes import (
    NODE_NAME,
    ManagedProcess,
    ProcessSet,
    default_domain_id,
    parameter_override,
    sigterm_as_interrupt,
    start_node,
)
from mess_ros.ros.synthetic_camera import render_pool
from mess_ros.runtime.scheduling import freeze_heap

NAME: Final = "node_latency"
MAX_OVERHEAD_P50_MS: Final = 5.0
"""Largest accepted median of (round trip - engine time) at 15 Hz."""
MAX_RSS_CHANGE: Final = 0.05
"""Largest accepted growth of the node's peak RSS after the soak's baseline."""

ENCODING: Final = "rgb8"
SCENE_SEED: Final = 2  # the held-out "test" seed of the synthetic scenes
START_TIMEOUT_S: Final = 300.0
DRAIN_S: Final = 2.0
RSS_SAMPLE_PERIOD_S: Final = 5.0


# --------------------------------------------------------------------------------------------
# Per-frame decomposition
# --------------------------------------------------------------------------------------------


def complete(trace: FrameTrace) -> bool:
    """Mask and exit report both arrived: the frame can be decomposed."""
    return (
        trace.answered
        and trace.exit_info is not None
        and math.isfinite(trace.exit_info.measured_ms)
    )


def round_trip_ms(trace: FrameTrace) -> float:
    if trace.mask_monotonic_ns is None or trace.sent_monotonic_ns is None:
        return math.nan
    return (trace.mask_monotonic_ns - trace.sent_monotonic_ns) / 1e6


def deliver_ms(info: ExitInfo) -> float:
    """The node's work after inference: converting and publishing the masks."""
    return sum(ms for stage, ms in info.stage_ms.items() if stage.startswith("deliver:"))


def dispatch_ms(trace: FrameTrace) -> float:
    """From DDS having the mask in this process to the callback: take and dispatch here."""
    if trace.mask_dds_ns is None or trace.mask_system_ns is None:
        return math.nan
    return (trace.mask_system_ns - trace.mask_dds_ns) / 1e6


def summary_ms(values: Sequence[float]) -> dict[str, float]:
    """Mean, p50, p95, p99 and max (NaN for no values)."""
    finite = [v for v in values if math.isfinite(v)]
    return {
        "mean_ms": float(sum(finite) / len(finite)) if finite else math.nan,
        "p50_ms": quantile(finite, 0.5),
        "p95_ms": quantile(finite, 0.95),
        "p99_ms": quantile(finite, 0.99),
        "max_ms": max(finite) if finite else math.nan,
    }


def decomposition(traces: Sequence[FrameTrace]) -> dict[str, Any]:
    """Counts and the latency split of the frames of one phase.

    overhead = round trip - engine: the node's queue (conversion and hand-over
    before inference), its delivery (mask conversion and publishing, the
    engine's last stage) and the transport (both DDS trips with this
    process's take and dispatch).
    """
    done = [t for t in traces if complete(t)]
    infos = [t.exit_info for t in done if t.exit_info is not None]
    answered = sum(t.answered for t in traces)
    transport = [
        round_trip_ms(t) - i.queue_ms - i.measured_ms - deliver_ms(i)
        for t, i in zip(done, infos, strict=True)
    ]
    return {
        "frames_published": len(traces),
        "masks_received": answered,
        "frames_decomposed": len(done),
        "unanswered": len(traces) - answered,
        "overhead_ms": summary_ms(
            [round_trip_ms(t) - i.measured_ms for t, i in zip(done, infos, strict=True)]
        ),
        "engine_ms": summary_ms([i.measured_ms for i in infos]),
        "round_trip_ms": summary_ms([round_trip_ms(t) for t in done]),
        "queue_ms": summary_ms([i.queue_ms for i in infos]),
        "deliver_ms": summary_ms([deliver_ms(i) for i in infos]),
        "transport_ms": summary_ms(transport),
        "dispatch_ms": summary_ms([dispatch_ms(t) for t in done]),
    }


# --------------------------------------------------------------------------------------------
# Phases
# --------------------------------------------------------------------------------------------


def drain(client: NodeClient, traces: Sequence[FrameTrace], timeout_s: float) -> None:
    """Let answers of the last frames arrive (frames the node never answers time out)."""
    client.wait_until(lambda: all(complete(t) for t in traces[-3:]), timeout_s)
    time.sleep(0.05)  # stragglers already on the wire


def stream(
    camera: FrameStream,
    node: ManagedProcess,
    seconds: float,
    *,
    label: str,
    progress: bool,
    every_second: Callable[[float], str] | None = None,
) -> list[FrameTrace]:
    """Publish like a camera for ``seconds``, then wait for the last answers.

    ``every_second`` runs once a second with the elapsed time and returns
    text for the progress bar.
    """
    start_ns = time.monotonic_ns()
    end_ns = start_ns + round(seconds * NS_PER_S)
    traces: list[FrameTrace] = []
    next_second = 1
    total_s = round(seconds)
    with tqdm(total=total_s, desc=label, unit="s", disable=not progress, leave=False) as bar:
        while time.monotonic_ns() < end_ns:
            traces.append(camera.tick())
            elapsed_s = (time.monotonic_ns() - start_ns) / NS_PER_S
            if elapsed_s >= next_second:
                node.check_running(label)
                if every_second is not None:
                    bar.set_postfix_str(every_second(elapsed_s), refresh=False)
                bar.update(min(round(elapsed_s), total_s) - bar.n)
                next_second = math.floor(elapsed_s) + 1
        if every_second is not None:
            every_second((time.monotonic_ns() - start_ns) / NS_PER_S)
        drain(camera.client, traces, DRAIN_S)
        bar.update(max(total_s - bar.n, 0))
    camera.client.forget(t.stamp_ns for t in traces[:-3])
    return traces


@dataclass
class RssSampler:
    """The node's resident set size over the soak: its peak at the baseline and at the end."""

    process: psutil.Process
    baseline_s: float
    samples: list[tuple[float, int]]
    baseline_peak_bytes: int | None = None
    peak_bytes: int = 0
    final_bytes: int | None = None
    _next_sample_s: float = 0.0

    def __call__(self, elapsed_s: float) -> str:
        rss = int(self.process.memory_info().rss)
        self.peak_bytes = max(self.peak_bytes, rss)
        if self.baseline_peak_bytes is None and elapsed_s >= self.baseline_s:
            self.baseline_peak_bytes = self.peak_bytes
        if elapsed_s >= self._next_sample_s:
            self.samples.append((round(elapsed_s, 1), rss))
            self._next_sample_s += RSS_SAMPLE_PERIOD_S
        self.final_bytes = rss
        return f"RSS {rss / 2**20:.1f} MiB"

    @property
    def change(self) -> float:
        """Growth of the peak after the baseline; 0 when the node has stopped taking memory."""
        if not self.baseline_peak_bytes:
            return math.nan
        return self.peak_bytes / self.baseline_peak_bytes - 1.0


def throughput_rate_hz(requested_hz: float, engine_mean_ms: float) -> float:
    """Publishing rate of the throughput phase: as asked, or twice what the engine can take.

    Twice the engine's rate keeps a fresh frame waiting in the node's slot
    whenever inference finishes, so the node never waits for input, while
    the frames it never gets to (replaced in the slot) stay few enough not to
    load the machine with conversions nobody uses.
    """
    if requested_hz > 0:
        return requested_hz
    return 2e3 / engine_mean_ms


def throughput_figures(traces: Sequence[FrameTrace], rate_hz: float) -> dict[str, Any]:
    """Masks per second between the first and last mask, against the engine's own rate."""
    received = sorted(t.mask_monotonic_ns for t in traces if t.mask_monotonic_ns is not None)
    masks_per_s = math.nan
    if len(received) >= 2:
        masks_per_s = (len(received) - 1) / ((received[-1] - received[0]) / NS_PER_S)
    engine_mean_ms = summary_ms(
        [t.exit_info.measured_ms for t in traces if complete(t) and t.exit_info is not None]
    )["mean_ms"]
    engine_per_s = 1e3 / engine_mean_ms if engine_mean_ms > 0 else math.nan
    figures = decomposition(traces)
    figures.update(
        publish_rate_hz=rate_hz,
        masks_per_s=masks_per_s,
        engine_per_s=engine_per_s,
        ratio=masks_per_s / engine_per_s,
    )
    return figures


# --------------------------------------------------------------------------------------------
# Node process
# --------------------------------------------------------------------------------------------


def load_node_model(args: argparse.Namespace) -> LoadedModel:
    """The model the node will run: ``--model``, else the parameter file's, else the bundled one.

    The input size follows the same order (``--input-size``, the file's
    size, the size the model was trained at), so the figures are reported
    for what the node actually runs.
    """
    if not args.params_file:
        return load_model(args.model, args.input_size)
    params = Path(args.params_file)
    if not params.is_file():
        raise BenchError(f"parameter file {str(params)!r} does not exist")
    engine = parameter_file.read(params, node_name=f"/{NODE_NAME}").engine
    size = args.input_size
    if not size and engine.input_height and engine.input_width:
        size = f"{engine.input_height}x{engine.input_width}"
    return load_model(args.model or engine.model_path, size)


def node_parameters_file(args: argparse.Namespace, model: LoadedModel, path: Path) -> Path:
    """``--params-file``, or one written for the model (final policy unless ``--policy``)."""
    if args.params_file:
        return Path(args.params_file)
    config = base_config(model, args.device, args.threads)
    config.policy.name = args.policy or "final"
    config.node.publish_color_mask = False
    config.validate()
    path.parent.mkdir(parents=True, exist_ok=True)
    parameter_file.write(
        config, path, header_comment="segmentation_node parameters of bench/node_latency.py"
    )
    return path


def node_overrides(args: argparse.Namespace, model: LoadedModel) -> list[str]:
    """What this benchmark decides, set on the node's command line over its parameter file.

    The model and input size reported here, the device and threads asked
    for, the policy when given, and no deadline.
    """
    height, width = model.input_hw
    values: dict[str, object] = {
        "engine.model_path": str(model.path),
        "engine.input_height": height,
        "engine.input_width": width,
        "engine.device": args.device,
        "deadline.deadline_ms": 0.0,
    }
    if args.threads > 0:
        values["engine.num_threads"] = args.threads
    if args.policy:
        values["policy.name"] = args.policy
    return [parameter_override(name, value) for name, value in values.items()]


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def check_arguments(args: argparse.Namespace) -> None:
    problems = []
    if args.rate <= 0 or args.seconds <= 0:
        problems.append("--rate and --seconds must be > 0")
    if args.warmup_seconds < 0 or args.throughput_seconds < 0 or args.soak_minutes < 0:
        problems.append("--warmup-seconds, --throughput-seconds and --soak-minutes must be >= 0")
    if args.soak_minutes > 0 and not 0 < args.baseline_minutes < args.soak_minutes:
        problems.append("--baseline-minutes must be > 0 and below --soak-minutes")
    if args.pool < 1 or args.throughput_rate < 0:
        problems.append("--pool must be >= 1 and --throughput-rate >= 0")
    if args.domain_id is None:
        args.domain_id = default_domain_id()
    if not 0 <= args.domain_id <= 232:
        problems.append("--domain-id must be in 0..232")
    if problems:
        raise BenchError("; ".join(problems))


def main(args: argparse.Namespace) -> int:
    check_arguments(args)
    progress = not args.no_progress
    frame_hw = parse_hw(args.frame_size)
    model = load_node_model(args)
    out = Path(args.out)
    params_file = node_parameters_file(args, model, out.with_name(f"{out.stem}_params.yaml"))
    log_path = out.with_name(f"{out.stem}_node.log")
    print(f"model {model.path} ({model.checkpoint.fingerprint}), input {model.input_hw}")
    print(
        f"frames {frame_hw[1]}x{frame_hw[0]} {ENCODING} at {args.rate:g} Hz; node parameters "
        f"{params_file}, no deadline; ROS domain {args.domain_id}; node log {log_path}"
    )
    threads_env = {"OMP_NUM_THREADS": str(args.threads)} if args.threads > 0 else {}
    frames = [image for image, _ in render_pool(args.pool, frame_hw, seed=SCENE_SEED)]
    freeze_heap()  # arrival times are taken in Python: no long collection in between
    results: dict[str, Any] = {}
    client: NodeClient | None = None
    with sigterm_as_interrupt(), ProcessSet() as processes:
        try:
            node = start_node(
                params_file,
                args.domain_id,
                log_path,
                overrides=node_overrides(args, model),
                extra_env=threads_env,
                processes=processes,
            )
            client = NodeClient(args.domain_id, name="mess_node_latency")
            camera = FrameStream(client, frames, args.rate)
            print(f"waiting for {NODE_NAME} (pid {node.pid}) to serve ...")
            startup_s = camera.until_answered(node, START_TIMEOUT_S)
            print(f"first mask after {startup_s:.1f} s; warm-up {args.warmup_seconds:g} s")
            stream(camera, node, args.warmup_seconds, label="warm-up", progress=progress)
            results = run_phases(args, camera, node, progress)
            results["startup_s"] = startup_s
        finally:
            processes.stop_all()
            if client is not None:
                client.close()
    results["node_exit_status"] = processes.exit_codes.get(NODE_NAME)
    report(args, model, frame_hw, params_file, log_path, results)
    return 0


def run_phases(
    args: argparse.Namespace, camera: FrameStream, node: ManagedProcess, progress: bool
) -> dict[str, Any]:
    """Latency at the camera rate, then the memory soak, then throughput (faster frames)."""
    latency_records = stream(camera, node, args.seconds, label="latency", progress=progress)
    latency = decomposition(latency_records)
    if not latency["frames_decomposed"]:
        raise BenchError(f"no frame of the latency phase came back; node output:\n{node.tail()}")
    results: dict[str, Any] = {"latency": latency, "memory": None, "throughput": None}
    print(
        f"latency: {latency['frames_decomposed']}/{latency['frames_published']} frames, "
        f"overhead p50 {latency['overhead_ms']['p50_ms']:.2f} ms"
    )

    if args.soak_minutes > 0:
        sampler = RssSampler(psutil.Process(node.pid), args.baseline_minutes * 60.0, [])
        soak_records = stream(
            camera,
            node,
            args.soak_minutes * 60.0,
            label="memory soak",
            progress=progress,
            every_second=sampler,
        )
        soak = decomposition(soak_records)
        results["memory"] = {
            "soak_minutes": args.soak_minutes,
            "baseline_minutes": args.baseline_minutes,
            "rss_peak_at_baseline_bytes": sampler.baseline_peak_bytes,
            "rss_peak_bytes": sampler.peak_bytes,
            "rss_final_bytes": sampler.final_bytes,
            "rss_change": sampler.change,
            "rss_samples": [{"t_s": t, "rss_bytes": rss} for t, rss in sampler.samples],
            "frames_published": soak["frames_published"],
            "masks_received": soak["masks_received"],
            "overhead_ms": soak["overhead_ms"],
            "engine_ms": soak["engine_ms"],
        }
        print(
            f"memory soak: peak RSS {sampler.change:+.2%} after {args.baseline_minutes:g} of "
            f"{args.soak_minutes:g} min, "
            f"overhead p50 {soak['overhead_ms']['p50_ms']:.2f} ms"
        )

    if args.throughput_seconds > 0:
        rate_hz = throughput_rate_hz(args.throughput_rate, latency["engine_ms"]["mean_ms"])
        fast = FrameStream(camera.client, camera.frames, rate_hz)
        records = stream(fast, node, args.throughput_seconds, label="throughput", progress=progress)
        results["throughput"] = throughput_figures(records, rate_hz)
    return results


def report(
    args: argparse.Namespace,
    model: LoadedModel,
    frame_hw: tuple[int, int],
    params_file: Path,
    log_path: Path,
    results: dict[str, Any],
) -> None:
    """Print the figures and the verdicts, write the JSON."""
    latency = results["latency"]
    over = latency["overhead_ms"]
    print(
        f"\nlatency at {args.rate:g} Hz ({latency['frames_decomposed']} of "
        f"{latency['frames_published']} frames answered and reported):"
    )
    rows = [
        ("overhead (round trip - engine)", over),
        ("  of which queue (node, before infer)", latency["queue_ms"]),
        ("  of which deliver (node, mask out)", latency["deliver_ms"]),
        ("  of which transport (both DDS trips)", latency["transport_ms"]),
        ("    incl. mask take + dispatch here", latency["dispatch_ms"]),
        ("engine (exit_info measured_ms)", latency["engine_ms"]),
        ("round trip (publish -> mask here)", latency["round_trip_ms"]),
    ]
    print(f"{'':<42} {'p50':>8} {'p95':>8} {'p99':>8} {'mean':>8}  ms")
    for label, stats in rows:
        print(
            f"{label:<42} {stats['p50_ms']:>8.2f} {stats['p95_ms']:>8.2f} "
            f"{stats['p99_ms']:>8.2f} {stats['mean_ms']:>8.2f}"
        )
    targets: dict[str, bool] = {}
    targets["latency_overhead_p50"] = over["p50_ms"] <= MAX_OVERHEAD_P50_MS
    print()
    print_target(
        "node overhead p50",
        targets["latency_overhead_p50"],
        f"{over['p50_ms']:.2f} ms (target <= {MAX_OVERHEAD_P50_MS:g} ms; queue included)",
    )

    memory = results["memory"]
    if memory is not None:
        change = memory["rss_change"]
        targets["rss_growth"] = math.isfinite(change) and abs(change) <= MAX_RSS_CHANGE
        base_mib = (memory["rss_peak_at_baseline_bytes"] or 0) / 2**20
        peak_mib = memory["rss_peak_bytes"] / 2**20
        print_target(
            "node RSS",
            targets["rss_growth"],
            f"peak {base_mib:.1f} MiB by {args.baseline_minutes:g} min, {peak_mib:.1f} MiB by "
            f"{args.soak_minutes:g} min: {change:+.2%} (target within {MAX_RSS_CHANGE:.0%})",
        )
    else:
        print("skip  node RSS: --soak-minutes 0")

    figures = results["throughput"]
    if figures is not None:
        print(
            f"info  throughput, no deadline: {figures['masks_per_s']:.1f} masks/s against "
            f"{figures['engine_per_s']:.1f}/s from the engine's mean time "
            f"{figures['engine_ms']['mean_ms']:.1f} ms (ratio {figures['ratio']:.3f}; frames "
            f"published at {figures['publish_rate_hz']:.1f} Hz, latest wins)"
        )

    write_json(
        Path(args.out),
        {
            "benchmark": NAME,
            "environment": environment(args.device),
            "model": model_info(model),
            "settings": {
                "frame_hw": list(frame_hw),
                "encoding": ENCODING,
                "rate_hz": args.rate,
                "seconds": args.seconds,
                "warmup_seconds": args.warmup_seconds,
                "throughput_seconds": args.throughput_seconds,
                "throughput_rate_hz": args.throughput_rate,
                "soak_minutes": args.soak_minutes,
                "baseline_minutes": args.baseline_minutes,
                "params_file": str(params_file),
                "policy": args.policy or ("final" if not args.params_file else "(file)"),
                "threads": args.threads,
                "domain_id": args.domain_id,
                "node_log": str(log_path),
                "overhead_definition": (
                    "mask received here - publish call here - exit_info measured_ms; "
                    "includes the node's queue_ms"
                ),
            },
            "startup_s": results.get("startup_s"),
            "latency": latency,
            "memory": memory,
            "throughput": figures,
            "node_exit_status": results.get("node_exit_status"),
            "targets": {
                "max_overhead_p50_ms": MAX_OVERHEAD_P50_MS,
                "max_rss_change": MAX_RSS_CHANGE,
            },
            "passed": targets,
        },
    )


def parser() -> argparse.ArgumentParser:
    p = base_parser(NAME, "Latency, throughput and memory of segmentation_node across processes.")
    p.add_argument(
        "--params-file",
        default="",
        help="node parameter file, e.g. a robot's ('' = one written for --model); model, "
        "input size, device, threads and policy given here override it, and deadlines are off",
    )
    p.add_argument("--policy", default="", help="exit policy ('' = final, or the file's)")
    p.add_argument("--frame-size", default="480x640", help="HEIGHTxWIDTH of the published frames")
    p.add_argument("--rate", type=float, default=15.0, help="camera rate in Hz")
    p.add_argument("--pool", type=int, default=30, help="distinct prerendered scenes")
    p.add_argument("--warmup-seconds", type=float, default=5.0, help="discarded after start")
    p.add_argument("--seconds", type=float, default=60.0, help="latency phase at --rate")
    p.add_argument(
        "--soak-minutes", type=float, default=10.0, help="memory soak at --rate (0 skips it)"
    )
    p.add_argument(
        "--baseline-minutes",
        type=float,
        default=2.0,
        help="minutes into the soak at which the reference peak RSS is taken",
    )
    p.add_argument(
        "--throughput-seconds",
        type=float,
        default=30.0,
        help="throughput phase at --throughput-rate (0 skips it)",
    )
    p.add_argument(
        "--throughput-rate",
        type=float,
        default=0.0,
        help="publishing rate of the throughput phase in Hz (0 = twice the engine's rate)",
    )
    p.add_argument(
        "--domain-id",
        type=int,
        help="ROS domain of node and benchmark (default: ROS_DOMAIN_ID, else one in 1..101)",
    )
    return p


if __name__ == "__main__":
    raise SystemExit(run_main(main, parser()))
