"""Offline evaluation: the engine in this process on the frames of a bag.

Two ways to replay:

* every frame (default): each frame is segmented as soon as the previous one
  is done, as fast as the hardware allows. Accuracy of every frame, inference
  time per frame; the deadline (if any) counts from the start of inference.
* ``realtime``: the recorded timeline is simulated. Frames arrive at their
  recorded receive times; while the engine is busy the newest frame waits in
  a single slot and replaces an older waiting one, which is dropped, exactly
  as the node's subscription does. The deadline counts from the frame's
  arrival, so time spent waiting eats into the budget, and the engine reads a
  clock on the simulated timeline. Nothing sleeps: the simulation runs as
  fast as the engine and only the measured inference times move the clock.

Several configurations are evaluated on the same decoded frames in one pass:
each frame is decoded once and handed to every configuration's engine in turn
(with its own simulated timeline in realtime mode), so comparisons are never
skewed by different frames.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from mess_ros.eval.bag_reader import BagFrame, BagReader
from mess_ros.eval.errors import EvalError
from mess_ros.eval.results import (
    Evaluation,
    ExampleCollector,
    FrameRecord,
    RunResult,
    finite_or_none,
)
from mess_ros.eval.runs import RunSpec
from mess_ros.model import Checkpoint, load_checkpoint
from mess_ros.runtime.engine import SegmentationEngine, SegmentationResult, resolve_model_path

NS_PER_MS = 1_000_000


@dataclass(frozen=True)
class OfflineOptions:
    """How the frames are replayed offline."""

    realtime: bool = False
    progress: bool = True
    examples: int = 6
    max_frames: int | None = None


@dataclass
class _Target:
    """One configuration being evaluated: its engine, results and realtime state."""

    spec: RunSpec
    engine: SegmentationEngine
    result: RunResult
    deadline_ms: float
    busy_until_ns: int = -(2**62)
    waiting: BagFrame | None = None
    last_load_ns: int | None = None
    wall_ns: int = 0


@dataclass
class OfflineEvaluator:
    """Runs prepared engines on frames; the reusable core of offline evaluation.

    Benchmarks build it on the same engines they time bare, so the measured
    overhead is the evaluator's own (scoring, bookkeeping), nothing else.
    """

    runs: Sequence[tuple[RunSpec, SegmentationEngine]]
    options: OfflineOptions = field(default_factory=OfflineOptions)

    def __post_init__(self) -> None:
        names = [spec.name for spec, _ in self.runs]
        if not names:
            raise EvalError("nothing to evaluate: give at least one configuration")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise EvalError(f"configuration names must be unique, repeated: {duplicates}")

    def evaluate(
        self, frames: Iterable[BagFrame], frame_count: int | None = None
    ) -> tuple[list[RunResult], ExampleCollector]:
        """Every configuration on every frame; returns the runs and the collected examples.

        ``frame_count`` (camera messages in the bag) sizes the progress bar
        and fixes which frames become examples.
        """
        options = self.options
        if options.max_frames is not None:
            frames = itertools.islice(frames, options.max_frames)
            frame_count = min(frame_count or options.max_frames, options.max_frames)
        examples = ExampleCollector(frame_count or 0, options.examples)
        targets = [
            _Target(
                spec=spec,
                engine=engine,
                result=RunResult(
                    name=spec.name, parameters=spec.parameters(), labels=engine.labels
                ),
                deadline_ms=float(spec.config.deadline.deadline_ms),
            )
            for spec, engine in self.runs
        ]
        origin_ns: int | None = None
        bar = tqdm(
            frames,
            total=frame_count,
            disable=not options.progress,
            unit="frame",
            desc="offline realtime" if options.realtime else "offline",
        )
        for frame in bar:
            if origin_ns is None:
                origin_ns = frame.receive_ns
            examples.offer_frame(frame.index, frame.image, frame.gt)
            for target in targets:
                started = time.perf_counter_ns()
                if options.realtime:
                    self._arrive(target, frame, origin_ns, examples)
                else:
                    self._process(target, frame, origin_ns, None, examples)
                target.wall_ns += time.perf_counter_ns() - started
        for target in targets:
            started = time.perf_counter_ns()
            if target.waiting is not None and origin_ns is not None:
                waiting, target.waiting = target.waiting, None
                arrival = waiting.receive_ns - origin_ns
                self._process(
                    target, waiting, origin_ns, max(target.busy_until_ns, arrival), examples
                )
            target.wall_ns += time.perf_counter_ns() - started
            target.result.wall_s = target.wall_ns / 1e9
            target.result.records.sort(key=lambda record: record.index)
        return [target.result for target in targets], examples

    def _arrive(
        self, target: _Target, frame: BagFrame, origin_ns: int, examples: ExampleCollector
    ) -> None:
        """A frame arrives on the simulated timeline: run it, or park it in the one slot."""
        arrival = frame.receive_ns - origin_ns
        if target.waiting is not None and target.busy_until_ns <= arrival:
            # The engine finished before this frame came and took the parked one at once.
            waiting, target.waiting = target.waiting, None
            start = max(target.busy_until_ns, waiting.receive_ns - origin_ns)
            self._process(target, waiting, origin_ns, start, examples)
        if target.busy_until_ns <= arrival:
            self._process(target, frame, origin_ns, arrival, examples)
            return
        if target.waiting is not None:
            replaced = target.waiting
            target.result.add(
                FrameRecord(
                    index=replaced.index,
                    stamp_ns=replaced.stamp_ns,
                    arrival_ms=(replaced.receive_ns - origin_ns) / NS_PER_MS,
                    has_gt=replaced.gt is not None,
                    reason="replaced by a newer frame while the engine was busy",
                    deadline_ms=target.deadline_ms or None,
                    load=replaced.load,
                ),
                None,
                None,
            )
        target.waiting = frame

    def _process(
        self,
        target: _Target,
        frame: BagFrame,
        origin_ns: int,
        start_ns: int | None,
        examples: ExampleCollector,
    ) -> None:
        """Segment one frame; ``start_ns`` on the simulated timeline, None = every-frame mode."""
        arrival = frame.receive_ns - origin_ns
        engine = target.engine
        clock: Callable[[], int]
        deadline_ns: int | None = None
        if start_ns is None:
            clock = time.monotonic_ns
        else:
            wall_origin = time.monotonic_ns()

            def clock() -> int:
                return start_ns + (time.monotonic_ns() - wall_origin)

            if target.deadline_ms > 0:
                deadline_ns = arrival + round(target.deadline_ms * NS_PER_MS)
        self._report_load(target, frame, clock, origin_ns if start_ns is not None else None)
        begin = clock()
        infer_started = time.perf_counter_ns()
        result = engine.infer(frame.image, deadline_ns=deadline_ns, now_ns=clock)
        target.result.engine_s += (time.perf_counter_ns() - infer_started) / 1e9
        end = clock()
        latency_ms = (end - (begin if start_ns is None else arrival)) / NS_PER_MS
        if start_ns is not None:
            target.busy_until_ns = end
        record = _record(frame, arrival, result, latency_ms, target.deadline_ms)
        mask = None if result.dropped else result.mask
        target.result.add(record, mask, frame.gt)
        if mask is not None:
            examples.offer_mask(target.spec.name, frame.index, mask, result.exit_id)

    @staticmethod
    def _report_load(
        target: _Target, frame: BagFrame, clock: Callable[[], int], origin_ns: int | None
    ) -> None:
        """Hand the engine each recorded load reading once, stamped on the engine's clock.

        The node reports a reading when it arrives; here it arrives with the
        first frame after it, and its age (recorded) is kept so the engine's
        staleness rule sees what the node would have seen.
        """
        if frame.load is None or frame.load_ns is None or frame.load_ns == target.last_load_ns:
            return
        target.last_load_ns = frame.load_ns
        if origin_ns is not None:
            stamp_ns = frame.load_ns - origin_ns
        else:
            stamp_ns = clock() - (frame.receive_ns - frame.load_ns)
        target.engine.report_load(min(max(frame.load, 0.0), 1.0), stamp_ns)


def _record(
    frame: BagFrame,
    arrival_ns: int,
    result: SegmentationResult,
    latency_ms: float,
    deadline_ms: float,
) -> FrameRecord:
    processed = not result.dropped
    met = None
    if processed and deadline_ms > 0:
        met = latency_ms <= deadline_ms
    return FrameRecord(
        index=frame.index,
        stamp_ns=frame.stamp_ns,
        arrival_ms=arrival_ns / NS_PER_MS,
        has_gt=frame.gt is not None,
        processed=processed,
        exit_id=result.exit_id if processed else None,
        exit_index=result.exit_index if processed else None,
        num_exits=result.num_exits,
        confidence=finite_or_none(result.confidence),
        reason=result.reason,
        latency_ms=latency_ms if processed else None,
        measured_ms=finite_or_none(result.measured_ms) if processed else None,
        predicted_ms=finite_or_none(result.predicted_ms),
        deadline_ms=deadline_ms or None,
        met_deadline=met,
        load=finite_or_none(result.load) if result.load is not None else frame.load,
    )


def build_engines(
    specs: Sequence[RunSpec],
) -> list[tuple[RunSpec, SegmentationEngine]]:
    """One engine per configuration; a checkpoint shared by several is loaded once."""
    loaded: dict[Path, Checkpoint] = {}
    engines = []
    for spec in specs:
        path = resolve_model_path(spec.config.engine.model_path)
        if path not in loaded:
            loaded[path] = load_checkpoint(path)
        engines.append((spec, SegmentationEngine(spec.config, loaded[path])))
    return engines


def evaluate_offline(
    bag: str | Path,
    specs: Sequence[RunSpec],
    options: OfflineOptions | None = None,
    *,
    camera_topic: str | None = None,
    gt_topic: str | None = None,
    load_topic: str | None = None,
    engines: Sequence[tuple[RunSpec, SegmentationEngine]] | None = None,
) -> Evaluation:
    """Evaluate every configuration in ``specs`` on the bag; the frames are streamed.

    ``engines`` may be passed already built (to reuse them across calls);
    otherwise one is built per configuration.
    """
    options = options or OfflineOptions()
    started = time.perf_counter()
    with BagReader(
        bag, camera_topic=camera_topic, gt_topic=gt_topic, load_topic=load_topic
    ) as reader:
        runs = list(engines) if engines is not None else build_engines(specs)
        evaluator = OfflineEvaluator(runs, options)
        results, examples = evaluator.evaluate(reader.frames(), reader.frame_count)
        stats, topics = reader.stats, reader.topics
    if stats.frames == 0:
        raise EvalError(
            f"bag {bag} has no usable frame on {topics.camera}: {topics.frame_count} messages, "
            f"{stats.skipped_total} skipped ({_reasons(stats.skipped)})"
        )
    labels = results[0].labels
    return Evaluation(
        bag=str(bag),
        mode="offline-realtime" if options.realtime else "offline",
        topics=topics.to_dict(),
        labels=labels,
        read=stats.to_dict(),
        runs=results,
        examples=examples.collected(),
        settings={
            "realtime": options.realtime,
            "max_frames": options.max_frames,
            "configurations": [spec.name for spec, _ in runs],
            "devices": {spec.name: str(engine.device) for spec, engine in runs},
        },
        wall_s=time.perf_counter() - started,
    )


def _reasons(skipped: dict[str, int]) -> str:
    return ", ".join(f"{reason}: {count}" for reason, count in sorted(skipped.items())) or "none"
