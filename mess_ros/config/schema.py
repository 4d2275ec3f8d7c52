"""The node's configuration: the single source of truth for every parameter.

The node declares its ROS parameters from :func:`parameter_specs`, the deploy
tool writes per-robot parameter files and the CLIs read them
(:mod:`mess_ros.config.parameter_file`, which builds on this module). All of them
derive names, defaults, ranges and descriptions from the dataclass fields
below, so a parameter cannot exist in one place and be missing in another.

Nested dataclasses map to dotted ROS parameter names: ``policy.name``,
``deadline.deadline_ms``, ``engine.device`` ... A configuration is validated
as a whole (:meth:`SegmentationConfig.validate`), and every problem is
reported with the parameter name, the rejected value and what is allowed, so
a rejected ``ros2 param set`` tells the user exactly what to change.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from mess_ros.common.exits import FINAL_EXIT, is_exit_id
from mess_ros.config.errors import ConfigError, invalid_configuration
from mess_ros.config.fields import (
    ParameterSpec,
    ParamValue,
    parameter,
    parameter_problem,
    resolve_specs,
)

POLICY_NAMES: Final = ("final", "fixed", "confidence", "deadline", "hybrid")
"""Exit policies the engine knows (``mess_ros.runtime.policies.POLICIES`` registers these)."""

PRECISIONS: Final = ("fp32", "fp16", "bf16")
BACKEND_NAMES: Final = ("auto", "torch", "onnxruntime", "tensorrt")
"""Values of ``engine.backend`` (:mod:`mess_ros.runtime.backends` implements them)."""
LATE_FRAME_ACTIONS: Final = ("earliest", "drop")
QOS_RELIABILITIES: Final = ("best_effort", "reliable")
DEVICE_PATTERN: Final = r"cpu|cuda(:[0-9]+)?"

SCHEDULING_POLICIES: Final = ("other", "fifo", "rr")
"""Linux scheduling policies the node's threads can run under (see mess_ros.runtime.scheduling)."""
NICENESS_RANGE: Final = (-20, 19)
REALTIME_RANGE: Final = (1, 99)

WILDCARD_NODE: Final = "/**"
"""The node entry of a parameter file that applies to every node."""

ARTEFACT_PARAMETERS: Final = ("engine.model_path", "engine.latency_table", "policy.exit_model")
"""Parameters naming files that travel with a parameter file (resolved beside it)."""


MIN_INPUT_SIDE = 16
"""Smallest input side the backbone's strides leave a feature map for."""


@dataclass
class EngineConfig:
    """How the network is loaded and run; changing any of it needs a restart."""

    model_path: str = parameter(
        "",
        "Checkpoint file (.pt) to load; empty selects the bundled default model.",
        read_only=True,
    )
    device: str = parameter(
        "cpu",
        "Device to run on: cpu, cuda or cuda:N.",
        read_only=True,
        pattern=DEVICE_PATTERN,
        pattern_text="cpu, cuda or cuda:N",
    )
    require_cuda: bool = parameter(
        False,
        "Fail at start instead of falling back to the CPU when CUDA is requested but missing.",
        read_only=True,
    )
    input_height: int = parameter(
        0,
        "Height in pixels the network runs at; frames of any size are resized to it. "
        "0 (with input_width 0) takes the size the checkpoint was trained at.",
        read_only=True,
        min_value=0,
        max_value=4096,
    )
    input_width: int = parameter(
        0,
        "Width in pixels the network runs at; frames of any size are resized to it. "
        "0 (with input_height 0) takes the size the checkpoint was trained at.",
        read_only=True,
        min_value=0,
        max_value=4096,
    )
    precision: str = parameter(
        "fp32",
        "Arithmetic on CUDA: fp32, or fp16/bf16 autocast. The CPU always runs fp32.",
        read_only=True,
        choices=PRECISIONS,
    )
    backend: str = parameter(
        "torch",
        "Runtime that executes the network's stages: torch (eager PyTorch), onnxruntime "
        "(ONNX Runtime: CPU, or its CUDA and TensorRT providers on cuda), tensorrt (TensorRT "
        "engines, cuda only; precision fp16 builds fp16 engines), or auto (tensorrt on cuda, "
        "else onnxruntime, else torch: whichever is installed). The stages are exported to ONNX "
        "beside the checkpoint on first use.",
        read_only=True,
        choices=BACKEND_NAMES,
    )
    num_threads: int = parameter(
        0,
        "Threads the backend uses on the CPU; 0 keeps torch's default.",
        read_only=True,
        min_value=0,
        max_value=256,
    )
    adaptive_threads: bool = parameter(
        True,
        "On the CPU, run on fewer threads while other processes take cores (measured from "
        "/proc, the reported load, or frames far slower than usual) and on all of them again "
        "once the cores are free; torch's threads otherwise wait for each other at every layer.",
        read_only=True,
    )
    channels_last: bool = parameter(
        False,
        "Run convolutions in channels-last memory format (usually faster on CUDA).",
        read_only=True,
    )
    warmup_frames: int = parameter(
        3,
        "Full passes run at start so the first real frame is not slowed by lazy initialisation.",
        read_only=True,
        min_value=0,
        max_value=1000,
    )
    latency_table: str = parameter(
        "",
        "Latency table (JSON) profiled on this device; empty runs a quick self-profile at start.",
        read_only=True,
    )
    profile_repeats: int = parameter(
        5,
        "Repetitions of the quick self-profile at start when no latency table is given.",
        read_only=True,
        min_value=1,
        max_value=1000,
    )


@dataclass
class PolicyConfig:
    """Which exits run and how the engine picks one per frame; changeable at run time."""

    name: str = parameter(
        "hybrid",
        "Exit policy: final (always the last exit), fixed (always fixed_exit), confidence "
        "(first confident exit), deadline (deepest exit predicted to meet the deadline), "
        "hybrid (first confident exit that meets the deadline).",
        choices=POLICY_NAMES,
    )
    active_exits: list[str] = parameter(
        [],
        "Exit ids to use, a subset of the model's (e.g. 'layer2_1:fcn_c64_k2_d1'); the "
        "final exit is always active. Empty uses every exit of the model.",
    )
    fixed_exit: str = parameter(
        FINAL_EXIT,
        "Exit id the fixed policy always takes.",
    )
    pixel_threshold: float = parameter(
        0.9,
        "A pixel is confident when its top-1 class probability reaches this value.",
        min_value=0.0,
        max_value=1.0,
    )
    image_thresholds: list[float] = parameter(
        [0.8],
        "An exit is confident when this share of its pixels is confident: one value shared "
        "by all intermediate exits, or one per active intermediate exit in depth order.",
        min_value=0.0,
        max_value=1.0,
    )
    class_thresholds: list[float] = parameter(
        [],
        "Optional per-class pixel thresholds (one per class, indexed by the pixel's top-1 "
        "class) replacing pixel_threshold; empty uses pixel_threshold for every class.",
        min_value=0.0,
        max_value=1.0,
    )
    exit_model: str = parameter(
        "",
        "Learnt exit decision: an exit model file (JSON, written by mess_configure beside the "
        "robot's checkpoint) whose predicted probability that an exit's mask is as good as the "
        "final exit's replaces the confident-pixel share in the confidence and hybrid "
        "policies; image_thresholds then threshold that probability. Empty: the "
        "confident-pixel share.",
    )
    late_frame_action: str = parameter(
        "earliest",
        "What to do with a frame that cannot meet its deadline: one whose deadline passed "
        "before inference started, or (deadline and hybrid policies) whose earliest exit is "
        "predicted to finish too late: earliest (run the earliest exit) or drop (publish nothing).",
        choices=LATE_FRAME_ACTIONS,
    )


@dataclass
class DeadlineConfig:
    """Deadline and latency-model settings; changeable at run time."""

    deadline_ms: float = parameter(
        0.0,
        "Time budget per frame in ms, counted from the frame's stamp (node) or from the start "
        "of inference (engine without an explicit deadline); 0 disables deadlines.",
        min_value=0.0,
        max_value=3_600_000.0,
    )
    use_load: bool = parameter(
        True,
        "Scale latency predictions with the load reported on system_load.",
    )
    load_timeout_ms: float = parameter(
        1000.0,
        "A load report older than this is ignored (treated as unknown).",
        min_value=1.0,
        max_value=3_600_000.0,
    )
    latency_quantile: float = parameter(
        0.9,
        "Quantile of the predicted frame time used in deadline decisions (higher = fewer "
        "misses, earlier exits).",
        min_value=0.5,
        max_value=0.999,
    )
    ewma_alpha: float = parameter(
        0.2,
        "Weight of each new measurement in the online latency correction (0 = never adapt).",
        min_value=0.01,
        max_value=1.0,
    )
    load_beta: float = parameter(
        1.0,
        "Prior slope of the load relation time = base * (1 + beta * load) at loads no frame "
        "has been measured at yet; learned per load level online, so it is only read at start.",
        read_only=True,
        min_value=0.0,
        max_value=20.0,
    )
    safety_margin_ms: float = parameter(
        0.0,
        "Added to every prediction in deadline decisions, on top of the publishing cost the "
        "node measures and learns itself (e.g. for a consumer's own processing).",
        min_value=0.0,
        max_value=10_000.0,
    )


@dataclass
class NodeConfig:
    """Settings only the ROS node uses (QoS, outputs, input limits, diagnostics)."""

    image_qos_reliability: str = parameter(
        "best_effort",
        "Reliability of the image subscription: best_effort (camera drivers) or reliable "
        "(needed for some bag replays).",
        read_only=True,
        choices=QOS_RELIABILITIES,
    )
    image_qos_depth: int = parameter(
        1,
        "History depth of the image subscription (1: the latest frame wins).",
        read_only=True,
        min_value=1,
        max_value=100,
    )
    use_compressed: bool = parameter(
        False,
        "Subscribe to image/compressed (sensor_msgs/CompressedImage) instead of image.",
        read_only=True,
    )
    publish_color_mask: bool = parameter(
        True,
        "Publish mask_color (rgb8 palette image) when someone subscribes to it.",
    )
    publish_overlay: bool = parameter(
        True,
        "Publish mask_overlay (the camera image blended with the colour mask, rgb8) when "
        "someone subscribes to it.",
    )
    overlay_alpha: float = parameter(
        0.5,
        "Weight of the colour mask in mask_overlay (0: the camera image alone, 1: the colour "
        "mask alone).",
        min_value=0.0,
        max_value=1.0,
    )
    max_image_pixels: int = parameter(
        16_777_216,
        "Frames with more pixels than this are dropped as absurd (protects memory).",
        min_value=1,
        max_value=2**31 - 1,
    )
    scheduling_policy: str = parameter(
        "other",
        "Scheduling of the node's threads: other (time-sharing, scheduling_priority is the "
        "niceness), fifo or rr (real-time, scheduling_priority 1..99). Raising it needs "
        "CAP_SYS_NICE or a limits.conf allowance; a refusal is logged and the node runs on.",
        read_only=True,
        choices=SCHEDULING_POLICIES,
    )
    scheduling_priority: int = parameter(
        -10,
        "Niceness (-20..19, lower runs first; 0 leaves it unchanged) with scheduling_policy "
        "other, real-time priority (1..99) with fifo or rr. The default -10 puts the masks "
        "ahead of normal-priority work on the machine (see the README's figures).",
        read_only=True,
        min_value=-20,
        max_value=99,
    )
    diagnostics_period_s: float = parameter(
        1.0,
        "Period of the aggregate status published on /diagnostics.",
        read_only=True,
        min_value=0.1,
        max_value=60.0,
    )


CAMERA_NAME_PATTERN: Final = r"[A-Za-z][A-Za-z0-9_]*"
CAMERA_PRIORITY_RANGE: Final = (-100, 100)


@dataclass
class CamerasConfig:
    """Several cameras in one node: one model, one device, one scheduler for all of them."""

    names: list[str] = parameter(
        [],
        "Cameras this node segments, e.g. [front, left, right]: each reads <name>/image "
        "(or <name>/image/compressed) and <name>/camera_info and publishes <name>/mask, "
        "<name>/mask_color, <name>/mask_overlay, <name>/mask/camera_info and "
        "<name>/exit_info; one inference thread serves them all, earliest deadline first. "
        "Empty: one camera on image, mask, ... (the single-camera topics).",
        read_only=True,
        pattern=CAMERA_NAME_PATTERN,
        pattern_text="a ROS name token (letters, digits and '_', a letter first)",
    )
    deadlines_ms: list[float] = parameter(
        [],
        "Time budget per frame of each camera, in the order of names (0: no deadline for "
        "that camera). Empty: every camera uses deadline.deadline_ms.",
        min_value=0.0,
        max_value=3_600_000.0,
    )
    priorities: list[int] = parameter(
        [],
        "Priority of each camera, in the order of names: a waiting frame of a higher "
        "priority runs first and plans its exit without leaving time to lower ones; "
        "cameras of equal priority share the accelerator by earliest deadline. Empty: all "
        "equal.",
        min_value=CAMERA_PRIORITY_RANGE[0],
        max_value=CAMERA_PRIORITY_RANGE[1],
    )

    def deadline_ms(self, index: int, shared_ms: float) -> float:
        """Deadline of camera ``index`` (0: none): its own, else the shared ``shared_ms``."""
        return self.deadlines_ms[index] if self.deadlines_ms else shared_ms

    def priority(self, index: int) -> int:
        return self.priorities[index] if self.priorities else 0


_SECTIONS: Final[dict[str, type[Any]]] = {
    "engine": EngineConfig,
    "policy": PolicyConfig,
    "deadline": DeadlineConfig,
    "node": NodeConfig,
    "cameras": CamerasConfig,
}


SPECS: Final = resolve_specs(_SECTIONS)
"""Every parameter with its dataclass default, in declaration order."""
_SPECS_BY_NAME: Final = {spec.name: spec for spec in SPECS}


def parameter_names() -> list[str]:
    """Every dotted parameter name, in declaration order."""
    return [spec.name for spec in SPECS]


def closest_parameter(name: str, names: Iterable[str] | None = None) -> str | None:
    """The valid name ``name`` was most likely meant to be (a typo, or a missing section).

    ``pixel_treshold`` and ``policy.pixel_treshold`` both give
    ``policy.pixel_threshold``; None when nothing is close.
    """
    valid = list(parameter_names() if names is None else names)
    found = difflib.get_close_matches(name, valid, n=1, cutoff=0.75)
    if found:
        return found[0]
    by_leaf = {candidate.rpartition(".")[2]: candidate for candidate in valid}
    leaf = name.rpartition(".")[2]
    found = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.75)
    return by_leaf[found[0]] if found else None


def unknown_parameter_problem(names: Iterable[str], valid: Iterable[str] | None = None) -> str:
    """One sentence naming unknown parameters with the valid name each was probably meant as."""
    valid_names = list(parameter_names() if valid is None else valid)
    described = []
    for name in sorted(names):
        guess = closest_parameter(name, valid_names)
        described.append(f"{name} (did you mean {guess}?)" if guess else name)
    return (
        f"unknown parameter(s) {', '.join(described)}; valid parameters: {', '.join(valid_names)}"
    )


@dataclass
class SegmentationConfig:
    """The whole deployment configuration (engine, policy, deadline, node)."""

    engine: EngineConfig = field(default_factory=EngineConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    deadline: DeadlineConfig = field(default_factory=DeadlineConfig)
    node: NodeConfig = field(default_factory=NodeConfig)
    cameras: CamerasConfig = field(default_factory=CamerasConfig)

    # --- flat ROS parameters -------------------------------------------------------------

    def to_parameters(self) -> dict[str, ParamValue]:
        """Flat ``{dotted name: value}`` in declaration order (lists are copies)."""
        params: dict[str, ParamValue] = {}
        for spec in SPECS:
            value = getattr(getattr(self, spec.section), spec.attr)
            params[spec.name] = list(value) if isinstance(value, list) else value
        return params

    @classmethod
    def from_parameters(
        cls, params: Mapping[str, object], base: SegmentationConfig | None = None
    ) -> SegmentationConfig:
        """Apply flat parameters on top of ``base`` (defaults when None) and validate.

        All-or-nothing: unknown names, wrong types and out-of-range values are
        collected and raised together as one :class:`ConfigError`; ``base`` is
        never modified.
        """
        config = copy.deepcopy(base) if base is not None else cls()
        unknown = sorted(name for name in params if name not in _SPECS_BY_NAME)
        if unknown:
            raise ConfigError(unknown_parameter_problem(unknown))
        problems = []
        for name, raw in params.items():
            spec = _SPECS_BY_NAME[name]
            value = spec.coerce(raw)
            if value is None:
                problems.append(parameter_problem(name, raw, f"expected {spec.constraints}"))
                continue
            setattr(getattr(config, spec.section), spec.attr, value)
        if problems:
            raise invalid_configuration(problems)
        config.validate()
        return config

    # --- validation ----------------------------------------------------------------------

    def problems(self) -> list[str]:
        """Every reason this configuration is invalid (empty when valid)."""
        problems = []
        for spec in SPECS:
            _, why = spec.check(getattr(getattr(self, spec.section), spec.attr))
            if why:
                problems.append(why)
        if problems:
            return problems  # cross-field checks assume well-typed fields
        return self._cross_field_problems()

    def _cross_field_problems(self) -> list[str]:
        policy = self.policy
        problems = []
        size_hw = (self.engine.input_height, self.engine.input_width)
        if size_hw != (0, 0) and min(size_hw) < MIN_INPUT_SIDE:
            problems.append(
                parameter_problem(
                    "engine.input_height/input_width",
                    list(size_hw),
                    f"both 0 (the checkpoint's training size) or both >= {MIN_INPUT_SIDE} pixels",
                )
            )
        engine = self.engine
        if engine.backend == "tensorrt" and not engine.device.startswith("cuda"):
            problems.append(
                parameter_problem(
                    "engine.backend",
                    engine.backend,
                    "cuda in engine.device (TensorRT runs on "
                    "NVIDIA GPUs only); onnxruntime or torch on the CPU",
                )
            )
        if engine.backend in ("onnxruntime", "tensorrt") and engine.precision == "bf16":
            problems.append(
                parameter_problem(
                    "engine.precision",
                    engine.precision,
                    f"fp32 or fp16 with engine.backend "
                    f"{engine.backend!r} (bf16 runs on torch only)",
                )
            )
        node = self.node
        low, high = NICENESS_RANGE if node.scheduling_policy == "other" else REALTIME_RANGE
        if not low <= node.scheduling_priority <= high:
            problems.append(
                parameter_problem(
                    "node.scheduling_priority",
                    node.scheduling_priority,
                    f"expected {low}..{high} with node.scheduling_policy "
                    f"{node.scheduling_policy!r}",
                )
            )
        bad_ids = [e for e in policy.active_exits if not is_exit_id(e)]
        if bad_ids:
            problems.append(
                parameter_problem(
                    "policy.active_exits",
                    policy.active_exits,
                    f"{', '.join(map(repr, bad_ids))} are not exit ids "
                    "('final' or '<point>:<head>', e.g. 'layer2_1:fcn_c64_k2_d1')",
                )
            )
        duplicates = sorted({e for e in policy.active_exits if policy.active_exits.count(e) > 1})
        if duplicates:
            problems.append(
                parameter_problem(
                    "policy.active_exits",
                    policy.active_exits,
                    f"each exit may appear once, repeated: {', '.join(duplicates)}",
                )
            )
        intermediate = [e for e in policy.active_exits if e != FINAL_EXIT]
        n_thresholds = len(policy.image_thresholds)
        if n_thresholds == 0:
            problems.append(
                parameter_problem(
                    "policy.image_thresholds",
                    policy.image_thresholds,
                    "expected one shared value or one per active intermediate exit",
                )
            )
        elif policy.active_exits and n_thresholds not in (1, len(intermediate)):
            problems.append(
                parameter_problem(
                    "policy.image_thresholds",
                    policy.image_thresholds,
                    f"expected 1 value or {len(intermediate)} (one per active intermediate exit "
                    f"{', '.join(intermediate)})",
                )
            )
        if policy.exit_model and policy.class_thresholds:
            problems.append(
                parameter_problem(
                    "policy.class_thresholds",
                    policy.class_thresholds,
                    "empty while policy.exit_model is set (the learnt decision replaces the "
                    "confident-pixel share that class thresholds define)",
                )
            )
        # Checked whatever the policy: a bad fixed_exit must not wait for the switch to fixed.
        if not is_exit_id(policy.fixed_exit):
            problems.append(
                parameter_problem(
                    "policy.fixed_exit",
                    policy.fixed_exit,
                    "an exit id ('final' or '<point>:<head>', e.g. 'layer2_1:fcn_c64_k2_d1')",
                )
            )
        elif (
            policy.name == "fixed"
            and policy.active_exits
            and policy.fixed_exit != FINAL_EXIT
            and policy.fixed_exit not in policy.active_exits
        ):
            problems.append(
                parameter_problem(
                    "policy.fixed_exit",
                    policy.fixed_exit,
                    f"expected one of the active exits: {', '.join([*intermediate, 'final'])}",
                )
            )
        return problems + self._camera_problems()

    def _camera_problems(self) -> list[str]:
        """Per-camera lists must match the camera names one to one."""
        cameras = self.cameras
        problems = []
        repeated = sorted({n for n in cameras.names if cameras.names.count(n) > 1})
        if repeated:
            problems.append(
                parameter_problem(
                    "cameras.names",
                    cameras.names,
                    f"each camera may appear once, repeated: {', '.join(repeated)}",
                )
            )
        count = len(cameras.names)
        for name, values in (
            ("cameras.deadlines_ms", cameras.deadlines_ms),
            ("cameras.priorities", cameras.priorities),
        ):
            if values and len(values) != count:
                expected = (
                    f"one value per camera of cameras.names ({count}: "
                    f"{', '.join(cameras.names)}) or none"
                    if count
                    else "empty while cameras.names is empty (a single camera uses the "
                    "deadline.* parameters)"
                )
                problems.append(parameter_problem(name, values, f"expected {expected}"))
        return problems

    def validate(self) -> None:
        """Raise :class:`ConfigError` listing every problem, or return when valid."""
        problems = self.problems()
        if problems:
            raise invalid_configuration(problems)

    # --- introspection -------------------------------------------------------------------

    @staticmethod
    def parameter_specs(base: SegmentationConfig | None = None) -> list[ParameterSpec]:
        """Every parameter, defaults taken from ``base`` (dataclass defaults if None)."""
        if base is None:
            return list(SPECS)
        values = base.to_parameters()
        return [dataclasses.replace(spec, default=values[spec.name]) for spec in SPECS]

    def changed_parameters(self, other: SegmentationConfig) -> list[str]:
        """Names of the parameters whose values differ between ``self`` and ``other``."""
        mine, theirs = self.to_parameters(), other.to_parameters()
        return [name for name in mine if mine[name] != theirs[name]]

    def read_only_changes(self, other: SegmentationConfig) -> list[str]:
        """Changed parameters that only take effect after a restart."""
        return [n for n in self.changed_parameters(other) if _SPECS_BY_NAME[n].read_only]
