"""The inference engine: progressive multi-exit segmentation of one frame at a time.

A frame goes through the backbone block by block. At each active exit the
policy decides whether to stop (run that exit's head and output), skip the
head and go deeper, or evaluate the head's confidence first. Each block and
head runs at most once, and only the exit finally taken is upsampled to the
frame size. Every stage is timed; the times feed the online latency model
that the deadline-aware policies consult for the next decision.

The running configuration lives in an immutable plan object. A change is
checked and built into a new plan first (:meth:`SegmentationEngine.prepare`,
which changes nothing), then swapped in with one assignment
(:meth:`SegmentationEngine.commit`), so a change made from another thread (a
ROS parameter callback) applies between frames and never half-way through one.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import torch

from mess_ros.common.errors import LatencyTableError
from mess_ros.common.exits import FINAL_EXIT
from mess_ros.common.latency_table import (
    PREPROCESS_KEY,
    LatencyTable,
    deliver_key,
    head_key,
    output_key,
    segment_key,
)
from mess_ros.config import (
    ConfigError,
    EngineConfig,
    SegmentationConfig,
    invalid_configuration,
    parameter_problem,
)
from mess_ros.data.labels import LabelSet
from mess_ros.data.transforms import normalize_image
from mess_ros.model import Checkpoint, load_checkpoint, model_fingerprint
from mess_ros.model.checkpoint import PRUNED_FROM_KEY
from mess_ros.package_files import share_directories
from mess_ros.runtime.backends import StageExecutor, create_executor
from mess_ros.runtime.contention import CpuShareMonitor, ThreadChange, ThreadGovernor
from mess_ros.runtime.errors import EngineError, PolicyError
from mess_ros.runtime.executor import LOGGER, resolve_device
from mess_ros.runtime.exit_model import ExitPredictor
from mess_ros.runtime.latency import FrameLatency, OnlineLatencyModel
from mess_ros.runtime.policies import (
    Action,
    Decision,
    ExitContext,
    ExitPolicy,
    PathCosts,
    build_policy,
    late_frame_decision,
)
from mess_ros.runtime.profiling import profile_model

DEFAULT_MODEL_FILE: Final = "default.pt"
"""File name of the bundled model under ``models/`` (checkout) or ``share/mess_ros/models``."""

Clock = Callable[[], int]
Deliver = Callable[[npt.NDArray[np.uint8]], None]

# torch's own choice, read before any engine changes it (the thread count is process-wide).
_DEFAULT_THREADS: Final = torch.get_num_threads()

# How fast the remembered pace of a thread count drifts back up (per frame), so that a machine
# that became slower for good stops counting as slowed down after a few hundred frames.
_PACE_DRIFT: Final = 1.002


def model_directories() -> list[Path]:
    """Where packaged model files live, in order: checkout, installed share directories."""
    return [directory / "models" for directory in share_directories()]


def resolve_package_file(path: str, parameter: str) -> Path:
    """A file named by a parameter: an absolute path, or a name among the packaged models.

    Relative paths that a parameter file names beside itself were made
    absolute when the file was read; the current directory is never searched,
    so a stray ``cpu_rover.pt`` there cannot replace the packaged one.
    """
    given = Path(path).expanduser()
    if given.is_absolute():
        return given
    candidates = [directory / given for directory in model_directories()]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    searched = ", ".join(str(c) for c in candidates)
    raise EngineError(
        f"{parameter} {path!r} was not found beside the parameter file that names it nor among "
        f"the packaged models (searched {searched}); give an absolute path for other files"
    )


def resolve_model_path(model_path: str) -> Path:
    """``engine.model_path`` as a file; empty means the bundled default model."""
    return resolve_package_file(model_path or DEFAULT_MODEL_FILE, "engine.model_path")


def resolve_input_hw(engine: EngineConfig, checkpoint: Checkpoint) -> tuple[int, int]:
    """The configured input size, or the one the checkpoint was trained at when it is 0x0."""
    if (engine.input_height, engine.input_width) != (0, 0):
        return (engine.input_height, engine.input_width)
    trained = checkpoint.trained_input_hw
    if trained is None:
        raise EngineError(
            f"checkpoint {checkpoint.path or '(in memory)'} does not record the input size it "
            "was trained at; set engine.input_height and engine.input_width"
        )
    return trained


@dataclass(frozen=True)
class SegmentationResult:
    """One frame's outcome.

    ``mask`` is HxW uint8 class ids at the frame's size; a dropped frame gets
    a mask of the ignore label (255) so consumers never handle a missing
    array. ``confidence`` is NaN under policies that never compute it
    (final, fixed, deadline). ``deadline_ms`` is the budget left when inference started (None
    without a deadline); ``predicted_ms`` the mean prediction, at the start
    of the frame, of the stages that then ran. ``measured_ms`` is the
    inference time, up to the mask; ``done_ns`` the clock reading once the
    mask was delivered (handed to ``deliver``, if given), which is when
    ``met_deadline`` is judged. ``infeasible`` marks frames that no exit
    could have brought in on time (late already, or the earliest exit
    predicted too slow), as opposed to misses the policy could have avoided.
    ``planned_ms`` is the budget the exit decisions planned with: the
    deadline's, or less where frames of other cameras wait behind this one.
    """

    mask: npt.NDArray[np.uint8]
    exit_id: str
    exit_index: int
    num_exits: int
    confidence: float
    reason: str
    stage_times_ms: dict[str, float]
    predicted_ms: float
    measured_ms: float
    deadline_ms: float | None
    met_deadline: bool | None
    load: float | None
    dropped: bool
    evaluated_exits: tuple[str, ...] = field(default=())
    infeasible: bool = False
    done_ns: int = 0
    threads: int = 0
    planned_ms: float | None = None
    policy: str = ""  # the policy of the configuration the frame ran under


@dataclass(frozen=True)
class EnginePlan:
    """A configuration checked against the loaded model, with everything a frame needs from it.

    Immutable once built; :meth:`SegmentationEngine.prepare` builds one.
    """

    config: SegmentationConfig
    exits: tuple[str, ...]
    exit_segments: tuple[tuple[str, ...], ...]
    image_thresholds: tuple[float, ...]  # per active exit (unused for the final one)
    class_thresholds: object | None  # in the executor's own array type
    policy: ExitPolicy
    exit_model: ExitPredictor | None = None  # the learnt decision (policy.exit_model)


class SegmentationEngine:
    """Loads a checkpoint and segments frames progressively under an exit policy.

    ``infer`` is meant to be called from one inference thread; ``report_load``
    and ``prepare``, ``commit`` and ``reconfigure`` may be called from any thread at any time.
    """

    def __init__(
        self,
        config: SegmentationConfig,
        checkpoint: Checkpoint | None = None,
        *,
        latency_table: LatencyTable | None = None,
        clock_ns: Clock = time.monotonic_ns,
        others_cpu_share: Callable[[], float | None] | None = None,
    ) -> None:
        """``others_cpu_share`` replaces the measurement of the CPU other processes use
        (:class:`CpuShareMonitor`), e.g. by a robot's own load monitor."""
        config.validate()
        engine = config.engine
        choice = resolve_device(engine.device, engine.require_cuda, engine.precision)
        self.device = choice.device
        self.warnings: list[str] = list(choice.warnings)
        self._threads = engine.num_threads or _DEFAULT_THREADS
        self._governor: ThreadGovernor | None = None
        self._others_share: Callable[[], float | None] | None = None
        if self.device.type == "cpu" and engine.adaptive_threads and self._threads > 1:
            monitor = CpuShareMonitor()
            self._others_share = others_cpu_share or monitor.others_share
            self._governor = ThreadGovernor(self._threads, monitor.cores)
        self._pace: dict[int, float] = {}
        self._slowdown: float | None = None
        self.single_thread_slowdown = math.nan
        self.thread_changes = 0
        self.last_thread_change: ThreadChange | None = None
        if checkpoint is None:
            checkpoint = load_checkpoint(resolve_model_path(engine.model_path))
        self.checkpoint = checkpoint
        self.model = checkpoint.model
        self.labels = LabelSet.from_dict(checkpoint.labels)
        if self.labels.num_classes != self.model.spec.num_classes:
            raise EngineError(
                f"checkpoint {checkpoint.path or '(in memory)'}: its label set has "
                f"{self.labels.num_classes} classes but the model predicts "
                f"{self.model.spec.num_classes}"
            )
        self.input_hw = resolve_input_hw(engine, checkpoint)
        self._clock = clock_ns
        self._executor: StageExecutor = create_executor(
            engine.backend,
            self.model,
            self.device,
            self.input_hw,
            precision=choice.precision,
            channels_last=engine.channels_last,
            checkpoint_path=checkpoint.path,
            threads=self._threads,
        )
        self._executor.set_threads(self._threads)
        self.backend = self._executor.backend
        """The backend running the stages (``engine.backend`` with ``auto`` resolved)."""
        self._plan = self._build_plan(copy.deepcopy(config))
        self._infer_lock = threading.Lock()

        if latency_table is None and engine.latency_table:
            latency_table = LatencyTable.load(
                resolve_package_file(engine.latency_table, "engine.latency_table")
            )
        if latency_table is not None:
            self._check_table(latency_table, engine.latency_table or "(given)")
            self._warm_up(engine.warmup_frames)
        else:
            latency_table = profile_model(
                self.model,
                self.input_hw,
                warmup=max(engine.warmup_frames, 1),
                repeats=engine.profile_repeats,
                executor=self._executor,
                model_fingerprint_hex=model_fingerprint(self.model),
            )
        self.latency_table = latency_table
        self.latency_model = OnlineLatencyModel(latency_table, self._plan.config.deadline)
        if self._governor is not None:
            self._measure_single_thread()

    # --- configuration -------------------------------------------------------------------

    @property
    def config(self) -> SegmentationConfig:
        """A copy of the configuration in force."""
        return copy.deepcopy(self._plan.config)

    @property
    def active_exits(self) -> tuple[str, ...]:
        return self._plan.exits

    def prepare(self, config: SegmentationConfig) -> EnginePlan:
        """Check ``config`` as a whole against the loaded model and build its plan.

        Changes nothing: the plan runs once given to :meth:`commit`. Raises
        :class:`ConfigError` when the configuration is invalid, names exits
        the model lacks, or changes parameters that need a restart.
        """
        config = copy.deepcopy(config)
        config.validate()
        # Read-only parameters never change while running, so any plan's config can tell.
        read_only = self._plan.config.read_only_changes(config)
        if read_only:
            raise ConfigError(
                "these parameters are read-only while running (restart to change them): "
                + ", ".join(read_only)
            )
        return self._build_plan(config)

    def commit(self, plan: EnginePlan) -> None:
        """Run ``plan`` from the next frame on; a frame already running keeps its own plan."""
        self._plan = plan

    def reconfigure(self, config: SegmentationConfig) -> None:
        """:meth:`prepare` and :meth:`commit` in one step; nothing changes when it raises."""
        self.commit(self.prepare(config))

    def _build_plan(self, config: SegmentationConfig) -> EnginePlan:
        policy_config = config.policy
        model_exits = self.model.exit_ids
        problems = []
        requested = policy_config.active_exits or model_exits
        unknown = [e for e in requested if e not in model_exits]
        if unknown:
            why = f"unknown exit(s) {', '.join(unknown)}; the model has: {', '.join(model_exits)}"
            problems.append(
                parameter_problem("policy.active_exits", policy_config.active_exits, why)
            )
        exits = tuple(e for e in model_exits if e in requested or e == FINAL_EXIT)
        intermediate = len(exits) - 1
        thresholds = policy_config.image_thresholds
        if len(thresholds) not in (1, intermediate):
            why = f"expected 1 value or {intermediate} (one per active intermediate exit)"
            problems.append(parameter_problem("policy.image_thresholds", thresholds, why))
        num_classes = self.model.spec.num_classes
        if policy_config.class_thresholds and len(policy_config.class_thresholds) != num_classes:
            why = (
                f"expected {num_classes} values (one per class: "
                f"{', '.join(self.labels.class_names)}) or none"
            )
            problems.append(
                parameter_problem("policy.class_thresholds", policy_config.class_thresholds, why)
            )
        if policy_config.fixed_exit not in model_exits:
            # Whatever the policy: switching to fixed later must not be what reveals it.
            why = f"the model has no such exit; expected one of: {', '.join(model_exits)}"
            problems.append(parameter_problem("policy.fixed_exit", policy_config.fixed_exit, why))
        elif policy_config.name == "fixed" and policy_config.fixed_exit not in exits:
            why = f"expected one of the active exits: {', '.join(exits)}"
            problems.append(parameter_problem("policy.fixed_exit", policy_config.fixed_exit, why))
        exit_model = None
        if policy_config.exit_model and not problems:
            try:
                exit_model = self._load_exit_model(policy_config.exit_model, exits[:-1])
            except EngineError as err:
                problems.append(f"policy.exit_model = {policy_config.exit_model!r}: {err}")
        if problems:
            raise invalid_configuration(problems)
        blocks = self._executor.blocks
        segments = []
        done = 0
        for exit_id in exits:
            end = blocks.index(self.model.exit_point(exit_id)) + 1
            segments.append(tuple(blocks[done:end]))
            done = max(done, end)
        bounds: list[tuple[str | None, str]] = []
        for segment in segments:  # contiguous: each starts after the previous one's end
            if segment:
                bounds.append((bounds[-1][1] if bounds else None, segment[-1]))
        self._executor.prepare_segments(bounds)
        per_exit = [*(thresholds * intermediate if len(thresholds) == 1 else thresholds), 0.0]
        class_thresholds = None
        if policy_config.class_thresholds:
            class_thresholds = self._executor.thresholds(policy_config.class_thresholds)
        return EnginePlan(
            config=config,
            exits=exits,
            exit_segments=tuple(segments),
            image_thresholds=tuple(per_exit),
            class_thresholds=class_thresholds,
            policy=build_policy(policy_config),
            exit_model=exit_model,
        )

    def _load_exit_model(self, path: str, exits: tuple[str, ...]) -> ExitPredictor:
        source = resolve_package_file(path, "policy.exit_model")
        model = ExitPredictor.load(source)
        model.check_covers(list(exits), self.model.spec.num_classes, repr(str(source)))
        if model.checkpoint_fingerprint not in ("", model_fingerprint(self.model)):
            pruned_from = self.checkpoint.metrics.get(PRUNED_FROM_KEY)
            if model.checkpoint_fingerprint != pruned_from:
                msg = (
                    f"exit model {str(source)!r} was fitted for weights "
                    f"{model.checkpoint_fingerprint}, the model is {model_fingerprint(self.model)}"
                )
                raise PolicyError(msg)
        return model

    def _check_table(self, table: LatencyTable, source: str) -> None:
        if tuple(table.input_hw) != self.input_hw:
            raise LatencyTableError(
                f"latency table {source} was measured at input {table.input_hw[0]}x"
                f"{table.input_hw[1]}, but the engine runs at {self.input_hw[0]}x"
                f"{self.input_hw[1]} (engine.input_height/input_width)"
            )
        table.check_covers(self._executor.blocks, self.model.exit_ids, source)
        notes = []
        fingerprint = model_fingerprint(self.model)
        same_weights = {fingerprint, self.checkpoint.metrics.get(PRUNED_FROM_KEY)}
        if table.model_fingerprint not in same_weights:
            notes.append(
                f"latency table {source} was profiled with weights {table.model_fingerprint}, "
                f"the model is {fingerprint}; timings carry over if the architecture is the same"
            )
        if table.backend != self.backend:
            notes.append(
                f"latency table {source} was measured with backend {table.backend!r}, the engine "
                f"runs {self.backend!r}: its stage times are off by the difference between them "
                "until the online correction has learnt it; profile with mess_profile --backend "
                f"{self.backend} for deadlines that hold from the first frame"
            )
        if table.device.partition(":")[0] != self.device.type:
            notes.append(
                f"latency table {source} was measured on {table.device}, the engine runs on "
                f"{self.device}; the online correction will adapt, but first frames may mispredict"
            )
        for text in notes:
            LOGGER.warning(text)
        self.warnings.extend(notes)

    # --- load ----------------------------------------------------------------------------

    def report_load(self, load: float, stamp_ns: int | None = None) -> None:
        """Record the external load (0..1); NaN or out of range raises LoadValueError (counted).

        ``stamp_ns`` is on the engine's clock (``clock_ns`` of the constructor);
        None stamps the reading now. Its age is judged on the same clock, so a
        node may run deadlines on ROS time without making every reading stale.
        """
        self.latency_model.report_load(load, self._clock() if stamp_ns is None else stamp_ns)

    @property
    def rejected_loads(self) -> dict[str, int]:
        """Rejected or expired load reports by reason: nan, out_of_range, stale."""
        return self.latency_model.rejected_loads

    # --- inference -----------------------------------------------------------------------

    def preprocess(self, image: npt.NDArray[np.uint8]) -> Any:
        """(1, 3, h, w) network input on the engine's device (resize + normalisation), in the
        backend's array type (a torch tensor for torch and tensorrt, an OrtValue for onnxruntime).
        """
        _check_image(image)
        return self._executor.to_device(normalize_image(image, self.input_hw))

    def forward_to_exit(
        self, tensor: Any, exit_id: str, size_hw: tuple[int, int] | None = None
    ) -> npt.NDArray[np.uint8]:
        """Bare path to one exit: backbone to its point, its head, its mask at ``size_hw``.

        No policy, no timing, no other head: the reference the engine's
        overhead is measured against, and the direct answer for "what does
        exit X say about this input".
        """
        if exit_id not in self.model.exit_ids:
            raise EngineError(
                f"unknown exit {exit_id!r}; the model has: {', '.join(self.model.exit_ids)}"
            )
        executor = self._executor
        with executor.context():
            x = executor.prepare(tensor)
            features = executor.segment(x, None, self.model.exit_point(exit_id))
            logits = executor.head(exit_id, features)
            return executor.output(logits, size_hw or executor.spatial_hw(x))

    def infer(
        self,
        image: npt.NDArray[np.uint8],
        deadline_ns: int | None = None,
        now_ns: Clock | None = None,
        deliver: Deliver | None = None,
        plan_deadline_ns: int | None = None,
    ) -> SegmentationResult:
        """Segment one HxWx3 uint8 RGB frame; the mask comes back at the frame's size.

        ``deadline_ns`` is an absolute time on the ``now_ns`` clock (default:
        the engine's clock, monotonic unless given at construction), e.g. the
        frame's stamp plus the budget with ``now_ns`` reading ROS time. Without
        it, a positive ``deadline.deadline_ms`` counts from the start of this
        call. Load readings are always aged on the engine's own clock.

        ``deliver`` hands the mask to its consumers (the node publishes it).
        It runs inside the frame: its time is measured and learnt like a
        stage, every deadline decision budgets for it, and the deadline is
        judged once it has returned, because a mask is on time when its
        consumers have it, not when the network is done.

        ``plan_deadline_ns`` (several cameras, one engine): an earlier instant
        the exit decisions plan for, so that frames waiting behind this one
        keep their time (:mod:`mess_ros.runtime.frame_scheduler`); whether the
        frame is late, infeasible or met its deadline is still judged against
        ``deadline_ns``.
        """
        clock = now_ns or self._clock
        with self._infer_lock:
            return self._infer(image, deadline_ns, clock, deliver, plan_deadline_ns)

    def _infer(
        self,
        image: npt.NDArray[np.uint8],
        deadline_ns: int | None,
        clock: Clock,
        deliver: Deliver | None,
        plan_deadline_ns: int | None = None,
    ) -> SegmentationResult:
        plan = self._plan  # this frame's configuration, whatever reconfigure does meanwhile
        _check_image(image)
        latency = self.latency_model
        latency.config = plan.config.deadline
        load = latency.load_at(self._clock())
        self._govern_threads(load)
        start_ns = clock()
        frame_hw = (int(image.shape[0]), int(image.shape[1]))
        deadline_ms = plan.config.deadline.deadline_ms
        if deadline_ns is None and deadline_ms > 0:
            deadline_ns = start_ns + round(deadline_ms * 1e6)
        remaining_at_start = None if deadline_ns is None else (deadline_ns - start_ns) / 1e6
        decide_ns = deadline_ns
        if deadline_ns is not None and plan_deadline_ns is not None:
            decide_ns = min(deadline_ns, plan_deadline_ns)
        planned_ms = None if decide_ns is None else (decide_ns - start_ns) / 1e6
        output_scale = (frame_hw[0] * frame_hw[1]) / (self.input_hw[0] * self.input_hw[1])
        frame = latency.begin_frame(load, output_scale, regime=self._threads)
        delivery = deliver_key(frame_hw)
        tail_keys = (delivery,) if deliver is not None else ()
        run = _FrameRun(self._executor, plan, frame, decide_ns, clock, tail_keys)
        earliest_ms = None
        if plan.policy.plans_for_deadline:
            earliest_ms = frame.typical_ms(_earliest_path_keys(plan, tail_keys))
        late = late_frame_decision(
            remaining_at_start, plan.config.policy.late_frame_action, earliest_ms
        )
        if late is not None and late.action is Action.DROP:
            done_ns = clock()
            return SegmentationResult(
                mask=np.full(frame_hw, self.labels.ignore_index, dtype=np.uint8),
                exit_id="",
                exit_index=-1,
                num_exits=len(plan.exits),
                confidence=0.0,
                reason=late.reason,
                stage_times_ms={},
                predicted_ms=0.0,
                measured_ms=(done_ns - start_ns) / 1e6,
                deadline_ms=remaining_at_start,
                met_deadline=False,
                load=load,
                dropped=True,
                infeasible=True,
                done_ns=done_ns,
                threads=self._threads,
                planned_ms=planned_ms,
                policy=plan.policy.name,
            )
        mask, position, confidence, decision = run.execute(image, self.input_hw, late)
        end_ns = clock()
        if deliver is not None:
            run.deliver(deliver, mask, delivery)
        done_ns = clock()
        self._learn(frame)
        return SegmentationResult(
            mask=mask,
            exit_id=plan.exits[position],
            exit_index=position,
            num_exits=len(plan.exits),
            confidence=confidence,
            reason=decision.reason,
            stage_times_ms=dict(frame.measurements),
            predicted_ms=sum(frame.expected_ms(k) for k, _ in frame.measurements),
            measured_ms=(end_ns - start_ns) / 1e6,
            deadline_ms=remaining_at_start,
            met_deadline=None if deadline_ns is None else done_ns <= deadline_ns,
            load=load,
            dropped=False,
            evaluated_exits=tuple(run.evaluated),
            infeasible=late is not None,
            done_ns=done_ns,
            threads=self._threads,
            planned_ms=planned_ms,
            policy=plan.policy.name,
        )

    def earliest_exit_ms(self, frame_hw: tuple[int, int]) -> float:
        """Typical time from the start of a ``frame_hw`` frame to its delivered earliest-exit mask.

        The least a frame waiting for the engine needs, at the load and
        thread count in force now; a scheduler of several cameras reserves
        it for the frames behind the one that runs.
        """
        plan = self._plan
        latency = self.latency_model
        scale = (frame_hw[0] * frame_hw[1]) / (self.input_hw[0] * self.input_hw[1])
        frame = latency.begin_frame(latency.load_at(self._clock()), scale, regime=self._threads)
        return frame.typical_ms(_earliest_path_keys(plan, (deliver_key(frame_hw),)))

    # --- threads -------------------------------------------------------------------------

    @property
    def threads(self) -> int:
        """Intra-op threads the next frame runs on."""
        return self._threads

    def _govern_threads(self, load: float | None) -> None:
        """Between two frames: follow the contention the governor sees (CPU only)."""
        governor, others_share = self._governor, self._others_share
        change = None
        if governor is not None and others_share is not None:
            change = governor.update(others_share(), load, self._slowdown)
        if change is None:
            self._executor.set_threads(self._threads)  # another engine may have changed torch's
            return
        self._executor.set_threads(change.threads)
        self._threads = change.threads
        self._slowdown = None
        self.thread_changes += 1
        self.last_thread_change = change
        LOGGER.info(f"running on {change.threads} thread(s): {change.reason}")

    def _learn(self, frame: FrameLatency) -> None:
        """Feed the latency model and remember the usual pace of this thread count."""
        ratio = self.latency_model.end_frame(frame, self.latency_model.load_at(self._clock()))
        if ratio is None:
            return
        pace = min(self._pace.get(frame.regime, ratio) * _PACE_DRIFT, ratio)
        self._pace[frame.regime] = pace
        self._slowdown = ratio / pace

    def _measure_single_thread(self) -> None:
        """How much slower one thread is than all of them, so switching is priced from the start."""
        image = np.zeros((*self.input_hw, 3), dtype=np.uint8)
        times_ms: dict[int, float] = {}
        threads = self._threads
        for count in (threads, 1):
            self._executor.set_threads(count)
            best = math.inf
            for _ in range(3):
                tick = time.perf_counter()
                self.forward_to_exit(self.preprocess(image), FINAL_EXIT)
                best = min(best, time.perf_counter() - tick)
            times_ms[count] = best * 1e3
        self._executor.set_threads(threads)
        # Bounded to what one thread can physically be against ``threads`` of them: a busy
        # machine during the measurement must not leave an absurd prior behind.
        ratio = times_ms[1] / max(times_ms[threads], 1e-6)
        self.single_thread_slowdown = min(max(ratio, 0.5), float(threads))
        self.latency_model.set_regime_prior(1, self.single_thread_slowdown)

    def _warm_up(self, frames: int) -> None:
        """Run every block and head ``frames`` times so lazy initialisation happens now."""
        if frames <= 0:
            return
        image = np.zeros((*self.input_hw, 3), dtype=np.uint8)
        executor = self._executor
        for _ in range(frames):
            with executor.context():
                features = self.preprocess(image)
                previous: str | None = None
                for point in executor.blocks:
                    features = executor.segment(features, previous, point)
                    previous = point
                    for exit_id in self.model.exit_ids:
                        if self.model.exit_point(exit_id) == point:
                            logits = executor.head(exit_id, features)
                            executor.confidence(logits, 0.5)
                            executor.output(logits, self.input_hw)
            executor.synchronize()


class _FrameRun:
    """The walk of one frame through the active exits (kept apart from the engine's state)."""

    def __init__(
        self,
        executor: StageExecutor,
        plan: EnginePlan,
        frame: FrameLatency,
        deadline_ns: int | None,
        clock: Clock,
        tail_keys: tuple[str, ...] = (),
    ) -> None:
        self.executor = executor
        self.plan = plan
        self.frame = frame
        self.deadline_ns = deadline_ns
        self.clock = clock
        self.costs = PathCosts(plan.exits, plan.exit_segments, frame.predict_ms, tail_keys)
        self.evaluated: list[str] = []
        self._tick_ms = 0.0

    def deliver(self, deliver: Deliver, mask: npt.NDArray[np.uint8], key: str) -> None:
        """Hand the mask over, timed as the frame's last stage."""
        deliver(mask)
        self._record(key)

    def _record(self, key: str) -> None:
        now = self.executor.clock_ms()
        self.frame.record(key, now - self._tick_ms)
        self._tick_ms = now

    def _record_shared(self, keys: list[str]) -> None:
        """Time of stages run in one call, shared in proportion to their predicted times.

        The latency model keeps its per-block keys (the table's), so the
        deployment search, other exit sets and the torch backend price the
        same stages; within the call their relative times are the table's.
        """
        now = self.executor.clock_ms()
        weights = [self.frame.expected_ms(k) for k in keys]
        total = sum(weights)
        elapsed = now - self._tick_ms
        for key, weight in zip(keys, weights, strict=True):
            self.frame.record(key, elapsed * (weight / total if total > 0 else 1 / len(keys)))
        self._tick_ms = now

    def _context(self, position: int) -> ExitContext:
        remaining = None
        if self.deadline_ns is not None:
            remaining = (self.deadline_ns - self.clock()) / 1e6
        return ExitContext(position, self.plan.image_thresholds[position], remaining, self.costs)

    def execute(
        self, image: npt.NDArray[np.uint8], input_hw: tuple[int, int], late: Decision | None
    ) -> tuple[npt.NDArray[np.uint8], int, float, Decision]:
        executor, plan = self.executor, self.plan
        frame_hw = (int(image.shape[0]), int(image.shape[1]))
        pixel_threshold = plan.config.policy.pixel_threshold
        with executor.context():
            self._tick_ms = executor.clock_ms()
            features = executor.to_device(normalize_image(image, input_hw))
            self._record(PREPROCESS_KEY)
            previous: str | None = None
            for position, exit_id in enumerate(plan.exits):
                segment = plan.exit_segments[position]
                if executor.fuses_segments and len(segment) > 1:
                    features = executor.segment(features, previous, segment[-1])
                    previous = segment[-1]
                    self._record_shared([segment_key(point) for point in segment])
                else:
                    for point in segment:
                        features = executor.segment(features, previous, point)
                        previous = point
                        self._record(segment_key(point))
                decision = late or plan.policy.before_head(self._context(position))
                if decision.action is Action.CONTINUE:
                    continue
                logits = executor.head(exit_id, features)
                # Policies that never read confidences (final, fixed, deadline) skip the
                # softmax: on a CPU it is a measurable share of an early exit's time.
                confidence = math.nan
                if plan.exit_model is not None:
                    if decision.action is Action.EVALUATE:
                        counts = executor.class_histogram(logits)
                        confidence = plan.exit_model.score(exit_id, counts)
                elif plan.policy.uses_confidence:
                    confidence = executor.confidence(logits, pixel_threshold, plan.class_thresholds)
                self._record(head_key(exit_id))
                self.evaluated.append(exit_id)
                if decision.action is Action.EVALUATE:
                    decision = plan.policy.after_head(self._context(position), confidence)
                    if decision.action is Action.CONTINUE:
                        continue
                mask = executor.output(logits, frame_hw)
                self._record(output_key(exit_id))
                return mask, position, confidence, decision
        raise EngineError(f"policy {plan.policy.name!r} never stopped, not even at the last exit")


def _earliest_path_keys(plan: EnginePlan, tail_keys: tuple[str, ...]) -> list[str]:
    """Stages from the raw frame to the earliest active exit's mask, then ``tail_keys``."""
    first = plan.exits[0]
    keys = [PREPROCESS_KEY, *(segment_key(p) for p in plan.exit_segments[0])]
    return [*keys, head_key(first), output_key(first), *tail_keys]


def _check_image(image: object) -> None:
    if not isinstance(image, np.ndarray):
        raise EngineError(f"expected an HxWx3 uint8 numpy image, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise EngineError(
            f"expected an HxWx3 uint8 RGB image, got shape {image.shape} of {image.dtype}"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise EngineError(f"image has no pixels (shape {image.shape})")
