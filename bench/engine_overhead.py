"""Engine overhead: ``SegmentationEngine.infer`` against a bare forward to the same exit.

What the engine adds on top of the network (the policy walk, per-stage
timing, the online latency model, the confidence of the exit taken) must stay
small, or progressive inference would eat the time it saves. For a few exits
(the first, one in the middle, the final one) the engine runs the ``fixed``
policy with those exits active and no deadline, and the reference is the
bare path to the same exit: preprocessing plus
:meth:`SegmentationEngine.forward_to_exit` (blocks, head and mask, nothing
else). Both produce the mask at the frame's size from the same frame.

The two are timed in interleaved pairs (alternating which goes first, so
neither profits from warm caches or suffers from the machine's drift) and
compared by their medians. Target: at most 5 % overhead at the model's input
size on the CPU.

    python bench/engine_overhead.py [--model models/default.pt] [--repeats 200]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

if (
    not __package__
):  # run as a file (python bench/engine_overhead.py): the package lives one level up
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from bench._common import (
    BenchError,
    LoadedModel,
    base_config,
    base_parser,
    environment,
    load_model,
    median,
    model_info,
    print_target,
    profile_table,
    quantile,
    run_main,
    test_split,
    with_policy,
    write_json,
)
from mess_ros.common.exits import FINAL_EXIT
from mess_ros.runtime.engine import SegmentationEngine

NAME: Final = "engine_overhead"
Frame = npt.NDArray[np.uint8]
MAX_OVERHEAD: Final = 0.05
"""Largest accepted relative overhead of ``infer`` over the bare forward (5 %)."""


@dataclass
class ExitTimes:
    """Paired timings of one exit, in ms."""

    exit_id: str
    engine_ms: list[float] = field(default_factory=list)
    bare_ms: list[float] = field(default_factory=list)

    @property
    def overhead(self) -> float:
        """Median engine time over median bare time, minus one."""
        return median(self.engine_ms) / median(self.bare_ms) - 1.0

    @property
    def paired_overhead(self) -> float:
        """Median of the per-pair ratios minus one: robust against slow drift of the machine."""
        ratios = [e / b for e, b in zip(self.engine_ms, self.bare_ms, strict=True)]
        return median(ratios) - 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "exit": self.exit_id,
            "pairs": len(self.engine_ms),
            "engine_median_ms": median(self.engine_ms),
            "bare_median_ms": median(self.bare_ms),
            "engine_p90_ms": quantile(self.engine_ms, 0.9),
            "bare_p90_ms": quantile(self.bare_ms, 0.9),
            "overhead": self.overhead,
            "overhead_ms": median(self.engine_ms) - median(self.bare_ms),
            "paired_overhead": self.paired_overhead,
            "passed": self.overhead <= MAX_OVERHEAD,
        }


def default_exits(model: LoadedModel) -> list[str]:
    """The first intermediate exit, the one in the middle of the list, and the final exit."""
    intermediate = [e for e in model.exit_ids if e != FINAL_EXIT]
    picked = [intermediate[0], intermediate[len(intermediate) // 2]] if intermediate else []
    return list(dict.fromkeys([*picked, FINAL_EXIT]))


def _timed_ms(call: Callable[[], object]) -> float:
    start = time.perf_counter_ns()
    call()
    return (time.perf_counter_ns() - start) / 1e6


def measure(
    engines: dict[str, SegmentationEngine],
    frames: list[npt.NDArray[np.uint8]],
    repeats: int,
    warmup: int,
    progress: bool,
) -> list[ExitTimes]:
    """Interleaved pairs for every exit: engine then bare, bare then engine, and so on.

    The exits take turns too, so each sees the same conditions of the
    (shared, possibly busy) machine over the run.
    """
    results = {exit_id: ExitTimes(exit_id) for exit_id in engines}
    with tqdm(
        total=(warmup + repeats) * len(engines), desc="pairs", unit="pair", disable=not progress
    ) as bar:
        for repeat in range(warmup + repeats):
            frame = frames[repeat % len(frames)]
            for exit_id, engine in engines.items():

                def run_engine(engine: SegmentationEngine = engine, frame: Frame = frame) -> object:
                    return engine.infer(frame)

                def run_bare(
                    engine: SegmentationEngine = engine,
                    exit_id: str = exit_id,
                    frame: Frame = frame,
                ) -> object:
                    hw = (int(frame.shape[0]), int(frame.shape[1]))
                    return engine.forward_to_exit(engine.preprocess(frame), exit_id, hw)

                if repeat % 2 == 0:
                    engine_ms, bare_ms = _timed_ms(run_engine), _timed_ms(run_bare)
                else:
                    bare_ms, engine_ms = _timed_ms(run_bare), _timed_ms(run_engine)
                if repeat >= warmup:
                    results[exit_id].engine_ms.append(engine_ms)
                    results[exit_id].bare_ms.append(bare_ms)
                bar.update(1)
    return list(results.values())


def check_same_mask(engines: dict[str, SegmentationEngine], frame: npt.NDArray[np.uint8]) -> None:
    """Both paths must compute the same thing, or comparing their time would mean nothing."""
    frame_hw = (int(frame.shape[0]), int(frame.shape[1]))
    for exit_id, engine in engines.items():
        result = engine.infer(frame)
        bare = engine.forward_to_exit(engine.preprocess(frame), exit_id, frame_hw)
        if result.exit_id != exit_id or not np.array_equal(result.mask, bare):
            raise BenchError(
                f"engine with policy fixed to {exit_id!r} took {result.exit_id!r} or produced "
                "another mask than the bare forward to that exit; the comparison is void"
            )


def main(args: argparse.Namespace) -> int:
    if args.repeats < 1 or args.warmup < 0 or args.frames < 1:
        raise BenchError("--repeats and --frames must be >= 1 and --warmup >= 0")
    progress = not args.no_progress
    model = load_model(args.model, args.input_size)
    exits = [e.strip() for e in args.exits.split(",") if e.strip()] or default_exits(model)
    unknown = [e for e in exits if e not in model.exit_ids]
    if unknown:
        raise BenchError(f"unknown exit(s) {unknown}; the model has: {', '.join(model.exit_ids)}")
    active = [e for e in model.exit_ids if e in exits]
    height, width = model.input_hw
    print(f"model {model.path} ({model.checkpoint.fingerprint}), input {height}x{width}")
    print(f"active exits {', '.join(active)}; policy fixed to each in turn, no deadline")

    table = profile_table(model, args.device, repeats=3, progress=progress)
    base = base_config(model, args.device, args.threads)
    engines = {
        exit_id: SegmentationEngine(
            with_policy(base, "fixed", fixed_exit=exit_id, active_exits=active),
            model.checkpoint,
            latency_table=table,
        )
        for exit_id in active
    }
    dataset = test_split(args.frames, height, width)
    frames = [dataset[i].image for i in range(len(dataset))]
    check_same_mask(engines, frames[0])
    results = measure(engines, frames, args.repeats, args.warmup, progress)

    env = environment(args.device)
    print(
        f"\n{args.repeats} interleaved pairs per exit on {env['device_name']}, "
        f"{env['torch_threads']} torch thread(s)"
    )
    print(f"{'exit':<36} {'infer ms':>9} {'bare ms':>9} {'overhead':>9} {'paired':>8} {'ms':>7}")
    for r in results:
        infer_ms, bare_ms = median(r.engine_ms), median(r.bare_ms)
        print(
            f"{r.exit_id:<36} {infer_ms:>9.3f} {bare_ms:>9.3f} {r.overhead:>+9.2%} "
            f"{r.paired_overhead:>+8.2%} {infer_ms - bare_ms:>+7.3f}"
        )
    worst = max(results, key=lambda r: r.overhead)
    passed = worst.overhead <= MAX_OVERHEAD
    print()
    print_target(
        "engine overhead",
        passed,
        f"worst {worst.overhead:+.2%} at {worst.exit_id} (target <= {MAX_OVERHEAD:.0%}; "
        f"ratio infer/bare {1 + worst.overhead:.3f})",
    )
    write_json(
        args.out,
        {
            "benchmark": NAME,
            "target": {"max_overhead": MAX_OVERHEAD},
            "passed": passed,
            "model": model_info(model),
            "environment": env,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "active_exits": active,
            "exits": [r.to_dict() for r in results],
        },
    )
    return 0


def parser() -> argparse.ArgumentParser:
    p = base_parser(NAME, __doc__.split("\n\n")[0] if __doc__ else NAME)
    p.add_argument("--repeats", type=int, default=200, help="timed pairs per exit")
    p.add_argument("--warmup", type=int, default=10, help="untimed pairs per exit first")
    p.add_argument(
        "--frames", type=int, default=20, help="distinct test-split frames cycled through"
    )
    p.add_argument(
        "--exits",
        default="",
        help="comma-separated exit ids ('' = first intermediate, a middle one, final)",
    )
    return p


if __name__ == "__main__":
    sys.exit(run_main(main, parser()))
