"""Deployment configuration: the single source of truth for every parameter.

The node declares its ROS parameters from :func:`parameter_specs`, the deploy
tool writes per-robot parameter files with :meth:`SegmentationConfig.to_yaml`,
and the CLIs read those files with :meth:`SegmentationConfig.from_yaml`. All of
them derive names, defaults, ranges and descriptions from the dataclass fields
below, so a parameter cannot exist in one place and be missing in another.

Nested dataclasses map to dotted ROS parameter names: ``policy.name``,
``deadline.deadline_ms``, ``engine.device`` ... A configuration is validated
as a whole (:meth:`SegmentationConfig.validate`), and every problem is
reported with the parameter name, the rejected value and what is allowed, so
a rejected ``ros2 param set`` tells the user exactly what to change.
"""

from __future__ import annotations

import array
import copy
import dataclasses
import difflib
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeAlias, cast, get_type_hints

import yaml

from mess_ros.common.exits import FINAL_EXIT, is_exit_id
from mess_ros.runtime.errors import ConfigError
from mess_ros.runtime.scheduling import NICENESS_RANGE, REALTIME_RANGE, SCHEDULING_POLICIES
from mess_ros.textfiles import read_text

ParamValue: TypeAlias = bool | int | float | str | list[bool] | list[int] | list[float] | list[str]
"""Value types a ROS 2 parameter of this package can take."""


POLICY_NAMES: Final = ("final", "fixed", "confidence", "deadline", "hybrid")
"""Exit policies the engine knows (``mess_ros.runtime.policies.POLICIES`` registers these)."""

PRECISIONS: Final = ("fp32", "fp16", "bf16")
LATE_FRAME_ACTIONS: Final = ("earliest", "drop")
QOS_RELIABILITIES: Final = ("best_effort", "reliable")
DEVICE_PATTERN: Final = r"cpu|cuda(:[0-9]+)?"

ROS_PARAMETERS_KEY: Final = "ros__parameters"
WILDCARD_NODE: Final = "/**"
PARAMETER_FILE_EXPECTED: Final = "a ROS 2 parameter YAML file ('/**: ros__parameters: ...')"

ARTEFACT_PARAMETERS: Final = ("engine.model_path", "engine.latency_table", "policy.exit_model")
"""Parameters naming files that travel with a parameter file (resolved beside it)."""

# Metadata keys of the dataclass fields.
_DESCRIPTION = "description"
_READ_ONLY = "read_only"
_MIN = "min"
_MAX = "max"
_CHOICES = "choices"
_PATTERN = "pattern"
_PATTERN_TEXT = "pattern_text"


def _meta(
    description: str,
    *,
    read_only: bool = False,
    min_value: float | None = None,
    max_value: float | None = None,
    choices: Sequence[str] = (),
    pattern: str = "",
    pattern_text: str = "",
) -> dict[str, Any]:
    """Field metadata: everything a ROS parameter descriptor needs (ranges apply per element)."""
    return {
        _DESCRIPTION: description,
        _READ_ONLY: read_only,
        _MIN: min_value,
        _MAX: max_value,
        _CHOICES: tuple(choices),
        _PATTERN: pattern,
        _PATTERN_TEXT: pattern_text,
    }


def _param(default: bool | int | float | str, description: str, **limits: Any) -> Any:
    """A scalar parameter field (list parameters use ``field(default_factory=...)``)."""
    return field(default=default, metadata=_meta(description, **limits))


MIN_INPUT_SIDE = 16
"""Smallest input side the backbone's strides leave a feature map for."""


@dataclass
class EngineConfig:
    """How the network is loaded and run; changing any of it needs a restart."""

    model_path: str = _param(
        "",
        "Checkpoint file (.pt) to load; empty selects the bundled default model.",
        read_only=True,
    )
    device: str = _param(
        "cpu",
        "Device to run on: cpu, cuda or cuda:N.",
        read_only=True,
        pattern=DEVICE_PATTERN,
        pattern_text="cpu, cuda or cuda:N",
    )
    require_cuda: bool = _param(
        False,
        "Fail at start instead of falling back to the CPU when CUDA is requested but missing.",
        read_only=True,
    )
    input_height: int = _param(
        0,
        "Height in pixels the network runs at; frames of any size are resized to it. "
        "0 (with input_width 0) takes the size the checkpoint was trained at.",
        read_only=True,
        min_value=0,
        max_value=4096,
    )
    input_width: int = _param(
        0,
        "Width in pixels the network runs at; frames of any size are resized to it. "
        "0 (with input_height 0) takes the size the checkpoint was trained at.",
        read_only=True,
        min_value=0,
        max_value=4096,
    )
    precision: str = _param(
        "fp32",
        "Arithmetic on CUDA: fp32, or fp16/bf16 autocast. The CPU always runs fp32.",
        read_only=True,
        choices=PRECISIONS,
    )
    num_threads: int = _param(
        0,
        "Threads torch uses on the CPU; 0 keeps torch's default.",
        read_only=True,
        min_value=0,
        max_value=256,
    )
    adaptive_threads: bool = _param(
        True,
        "On the CPU, run on fewer threads while other processes take cores (measured from "
        "/proc, the reported load, or frames far slower than usual) and on all of them again "
        "once the cores are free; torch's threads otherwise wait for each other at every layer.",
        read_only=True,
    )
    channels_last: bool = _param(
        False,
        "Run convolutions in channels-last memory format (usually faster on CUDA).",
        read_only=True,
    )
    warmup_frames: int = _param(
        3,
        "Full passes run at start so the first real frame is not slowed by lazy initialisation.",
        read_only=True,
        min_value=0,
        max_value=1000,
    )
    latency_table: str = _param(
        "",
        "Latency table (JSON) profiled on this device; empty runs a quick self-profile at start.",
        read_only=True,
    )
    profile_repeats: int = _param(
        5,
        "Repetitions of the quick self-profile at start when no latency table is given.",
        read_only=True,
        min_value=1,
        max_value=1000,
    )


@dataclass
class PolicyConfig:
    """Which exits run and how the engine picks one per frame; changeable at run time."""

    name: str = _param(
        "hybrid",
        "Exit policy: final (always the last exit), fixed (always fixed_exit), confidence "
        "(first confident exit), deadline (deepest exit predicted to meet the deadline), "
        "hybrid (first confident exit that meets the deadline).",
        choices=POLICY_NAMES,
    )
    active_exits: list[str] = field(
        default_factory=list,
        metadata=_meta(
            "Exit ids to use, a subset of the model's (e.g. 'layer2_1:fcn_c64_k2_d1'); the "
            "final exit is always active. Empty uses every exit of the model."
        ),
    )
    fixed_exit: str = _param(
        FINAL_EXIT,
        "Exit id the fixed policy always takes.",
    )
    pixel_threshold: float = _param(
        0.9,
        "A pixel is confident when its top-1 class probability reaches this value.",
        min_value=0.0,
        max_value=1.0,
    )
    image_thresholds: list[float] = field(
        default_factory=lambda: [0.8],
        metadata=_meta(
            "An exit is confident when this share of its pixels is confident: one value shared "
            "by all intermediate exits, or one per active intermediate exit in depth order.",
            min_value=0.0,
            max_value=1.0,
        ),
    )
    class_thresholds: list[float] = field(
        default_factory=list,
        metadata=_meta(
            "Optional per-class pixel thresholds (one per class, indexed by the pixel's top-1 "
            "class) replacing pixel_threshold; empty uses pixel_threshold for every class.",
            min_value=0.0,
            max_value=1.0,
        ),
    )
    exit_model: str = _param(
        "",
        "Learnt exit decision: an exit model file (JSON, written by mess_configure beside the "
        "robot's checkpoint) whose predicted probability that an exit's mask is as good as the "
        "final exit's replaces the confident-pixel share in the confidence and hybrid "
        "policies; image_thresholds then threshold that probability. Empty: the "
        "confident-pixel share.",
    )
    late_frame_action: str = _param(
        "earliest",
        "What to do with a frame that cannot meet its deadline: one whose deadline passed "
        "before inference started, or (deadline and hybrid policies) whose earliest exit is "
        "predicted to finish too late: earliest (run the earliest exit) or drop (publish nothing).",
        choices=LATE_FRAME_ACTIONS,
    )


@dataclass
class DeadlineConfig:
    """Deadline and latency-model settings; changeable at run time."""

    deadline_ms: float = _param(
        0.0,
        "Time budget per frame in ms, counted from the frame's stamp (node) or from the start "
        "of inference (engine without an explicit deadline); 0 disables deadlines.",
        min_value=0.0,
        max_value=3_600_000.0,
    )
    use_load: bool = _param(
        True,
        "Scale latency predictions with the load reported on system_load.",
    )
    load_timeout_ms: float = _param(
        1000.0,
        "A load report older than this is ignored (treated as unknown).",
        min_value=1.0,
        max_value=3_600_000.0,
    )
    latency_quantile: float = _param(
        0.9,
        "Quantile of the predicted frame time used in deadline decisions (higher = fewer "
        "misses, earlier exits).",
        min_value=0.5,
        max_value=0.999,
    )
    ewma_alpha: float = _param(
        0.2,
        "Weight of each new measurement in the online latency correction (0 = never adapt).",
        min_value=0.01,
        max_value=1.0,
    )
    load_beta: float = _param(
        1.0,
        "Prior slope of the load relation time = base * (1 + beta * load) at loads no frame "
        "has been measured at yet; learned per load level online, so it is only read at start.",
        read_only=True,
        min_value=0.0,
        max_value=20.0,
    )
    safety_margin_ms: float = _param(
        0.0,
        "Added to every prediction in deadline decisions, on top of the publishing cost the "
        "node measures and learns itself (e.g. for a consumer's own processing).",
        min_value=0.0,
        max_value=10_000.0,
    )


@dataclass
class NodeConfig:
    """Settings only the ROS node uses (QoS, outputs, input limits, diagnostics)."""

    image_qos_reliability: str = _param(
        "best_effort",
        "Reliability of the image subscription: best_effort (camera drivers) or reliable "
        "(needed for some bag replays).",
        read_only=True,
        choices=QOS_RELIABILITIES,
    )
    image_qos_depth: int = _param(
        1,
        "History depth of the image subscription (1: the latest frame wins).",
        read_only=True,
        min_value=1,
        max_value=100,
    )
    use_compressed: bool = _param(
        False,
        "Subscribe to image/compressed (sensor_msgs/CompressedImage) instead of image.",
        read_only=True,
    )
    publish_color_mask: bool = _param(
        True,
        "Publish mask_color (rgb8 palette image) when someone subscribes to it.",
    )
    publish_overlay: bool = _param(
        True,
        "Publish mask_overlay (the camera image blended with the colour mask, rgb8) when "
        "someone subscribes to it.",
    )
    overlay_alpha: float = _param(
        0.5,
        "Weight of the colour mask in mask_overlay (0: the camera image alone, 1: the colour "
        "mask alone).",
        min_value=0.0,
        max_value=1.0,
    )
    max_image_pixels: int = _param(
        16_777_216,
        "Frames with more pixels than this are dropped as absurd (protects memory).",
        min_value=1,
        max_value=2**31 - 1,
    )
    scheduling_policy: str = _param(
        "other",
        "Scheduling of the node's threads: other (time-sharing, scheduling_priority is the "
        "niceness), fifo or rr (real-time, scheduling_priority 1..99). Raising it needs "
        "CAP_SYS_NICE or a limits.conf allowance; a refusal is logged and the node runs on.",
        read_only=True,
        choices=SCHEDULING_POLICIES,
    )
    scheduling_priority: int = _param(
        -10,
        "Niceness (-20..19, lower runs first; 0 leaves it unchanged) with scheduling_policy "
        "other, real-time priority (1..99) with fifo or rr. The default -10 puts the masks "
        "ahead of normal-priority work on the machine (see the README's figures).",
        read_only=True,
        min_value=-20,
        max_value=99,
    )
    diagnostics_period_s: float = _param(
        1.0,
        "Period of the aggregate status published on /diagnostics.",
        read_only=True,
        min_value=0.1,
        max_value=60.0,
    )


# --- camera streams (several cameras served by one node) -----------------------------------

CAMERA_NAME_PATTERN: Final = r"[A-Za-z][A-Za-z0-9_]*"
CAMERA_PRIORITY_RANGE: Final = (-100, 100)


@dataclass
class CamerasConfig:
    """Several cameras in one node: one model, one device, one scheduler for all of them."""

    names: list[str] = field(
        default_factory=list,
        metadata=_meta(
            "Cameras this node segments, e.g. [front, left, right]: each reads <name>/image "
            "(or <name>/image/compressed) and <name>/camera_info and publishes <name>/mask, "
            "<name>/mask_color, <name>/mask_overlay, <name>/mask/camera_info and "
            "<name>/exit_info; one inference thread serves them all, earliest deadline first. "
            "Empty: one camera on image, mask, ... (the single-camera topics).",
            read_only=True,
            pattern=CAMERA_NAME_PATTERN,
            pattern_text="a ROS name token (letters, digits and '_', a letter first)",
        ),
    )
    deadlines_ms: list[float] = field(
        default_factory=list,
        metadata=_meta(
            "Time budget per frame of each camera, in the order of names (0: no deadline for "
            "that camera). Empty: every camera uses deadline.deadline_ms.",
            min_value=0.0,
            max_value=3_600_000.0,
        ),
    )
    priorities: list[int] = field(
        default_factory=list,
        metadata=_meta(
            "Priority of each camera, in the order of names: a waiting frame of a higher "
            "priority runs first and plans its exit without leaving time to lower ones; "
            "cameras of equal priority share the accelerator by earliest deadline. Empty: all "
            "equal.",
            min_value=CAMERA_PRIORITY_RANGE[0],
            max_value=CAMERA_PRIORITY_RANGE[1],
        ),
    )

    def deadline_ms(self, index: int, shared_ms: float) -> float:
        """Deadline of camera ``index`` (0: none): its own, else the shared ``shared_ms``."""
        return self.deadlines_ms[index] if self.deadlines_ms else shared_ms

    def priority(self, index: int) -> int:
        return self.priorities[index] if self.priorities else 0


# --- the parameter tree ----------------------------------------------------------------------

_SECTIONS: Final[dict[str, type[Any]]] = {
    "engine": EngineConfig,
    "policy": PolicyConfig,
    "deadline": DeadlineConfig,
    "node": NodeConfig,
    "cameras": CamerasConfig,
}


@dataclass(frozen=True)
class ParameterSpec:
    """Everything needed to declare one ROS parameter with a descriptor.

    ``type_name`` is explicit because an empty list default carries no element
    type, which ROS needs to declare an array parameter.
    """

    name: str
    default: ParamValue
    type_name: (
        str  # bool, integer, double, string, bool_array, integer_array, double_array, string_array
    )
    description: str
    read_only: bool
    min: float | None
    max: float | None
    choices: tuple[str, ...]
    constraints: str

    @property
    def is_array(self) -> bool:
        return self.type_name.endswith("_array")

    @property
    def is_integer(self) -> bool:
        return self.type_name.startswith("integer")


@dataclass(frozen=True)
class _Field:
    """Resolved description of one leaf parameter (section field)."""

    name: str
    section: str
    attr: str
    kind: type[Any]  # bool, int, float or str
    is_list: bool
    description: str
    read_only: bool
    min: float | None
    max: float | None
    choices: tuple[str, ...]
    pattern: str
    pattern_text: str

    @property
    def type_name(self) -> str:
        base = {bool: "bool", int: "integer", float: "double", str: "string"}[self.kind]
        return f"{base}_array" if self.is_list else base

    def allowed(self) -> str:
        """Human sentence of what the parameter accepts."""
        kind = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[
            self.kind
        ]
        if self.choices:
            text = "one of: " + ", ".join(self.choices)
        elif self.pattern_text:
            text = self.pattern_text
        elif self.min is not None and self.max is not None:
            text = f"{kind} in [{_fmt_number(self.min)}, {_fmt_number(self.max)}]"
        else:
            text = kind
        return f"a list, each {text}" if self.is_list else text


def _fmt_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _resolve_fields() -> tuple[_Field, ...]:
    result = []
    for section, cls in _SECTIONS.items():
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            is_list = getattr(hint, "__origin__", None) is list
            kind = hint.__args__[0] if is_list else hint
            if kind not in (bool, int, float, str):  # pragma: no cover - guards future edits
                raise TypeError(f"unsupported parameter type {hint!r} for {section}.{f.name}")
            meta = f.metadata
            result.append(
                _Field(
                    name=f"{section}.{f.name}",
                    section=section,
                    attr=f.name,
                    kind=kind,
                    is_list=is_list,
                    description=meta[_DESCRIPTION],
                    read_only=meta[_READ_ONLY],
                    min=meta[_MIN],
                    max=meta[_MAX],
                    choices=meta[_CHOICES],
                    pattern=meta[_PATTERN],
                    pattern_text=meta[_PATTERN_TEXT],
                )
            )
    return tuple(result)


_FIELDS: Final = _resolve_fields()
_FIELDS_BY_NAME: Final = {f.name: f for f in _FIELDS}


def parameter_names() -> list[str]:
    """Every dotted parameter name, in declaration order."""
    return [f.name for f in _FIELDS]


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


def _coerce(spec: _Field, value: object) -> tuple[ParamValue | None, str]:
    """Convert a raw parameter value to the field's type, or explain the mismatch.

    Integers are accepted for float fields (YAML ``100`` for ``100.0``), and an
    empty list for any list field because ROS cannot type an empty array.
    """
    if spec.is_list:
        if isinstance(value, str | bytes) or not isinstance(value, list | tuple | array.array):
            return None, f"expected {spec.allowed()}"
        items = []
        for item in value:
            converted = _coerce_scalar(spec.kind, item)
            if converted is None:
                return None, f"expected {spec.allowed()}"
            items.append(converted)
        return cast(ParamValue, items), ""
    converted = _coerce_scalar(spec.kind, value)
    if converted is None:
        return None, f"expected {spec.allowed()}"
    return converted, ""


def _coerce_scalar(kind: type[Any], value: object) -> bool | int | float | str | None:
    if kind is bool:
        return value if isinstance(value, bool) else None
    if isinstance(value, bool):
        return None
    if kind is int:
        return value if isinstance(value, int) else None
    if kind is float:
        return float(value) if isinstance(value, int | float) else None
    return value if isinstance(value, str) else None


def _check_value(spec: _Field, value: ParamValue) -> str:
    """Range, choice and pattern checks of one already-typed value ('' when fine)."""
    values: list[Any] = list(value) if isinstance(value, list) else [value]
    for item in values:
        if isinstance(item, float) and not math.isfinite(item):
            return f"expected {spec.allowed()}"
        if spec.choices and item not in spec.choices:
            return f"expected {spec.allowed()}"
        if spec.pattern and not re.fullmatch(spec.pattern, str(item)):
            return f"expected {spec.allowed()}"
        if isinstance(item, int | float) and not isinstance(item, bool):
            too_low = spec.min is not None and item < spec.min
            too_high = spec.max is not None and item > spec.max
            if too_low or too_high:
                return f"expected {spec.allowed()}"
    return ""


def _problem(name: str, value: object, why: str) -> str:
    return f"{name} = {value!r} is not allowed: {why}"


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
        for spec in _FIELDS:
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
        unknown = sorted(name for name in params if name not in _FIELDS_BY_NAME)
        if unknown:
            raise ConfigError(unknown_parameter_problem(unknown))
        problems = []
        for name, raw in params.items():
            spec = _FIELDS_BY_NAME[name]
            value, why = _coerce(spec, raw)
            if why:
                problems.append(_problem(name, raw, why))
                continue
            setattr(getattr(config, spec.section), spec.attr, value)
        if problems:
            raise ConfigError("invalid configuration: " + "; ".join(problems), problems)
        config.validate()
        return config

    # --- validation ----------------------------------------------------------------------

    def problems(self) -> list[str]:
        """Every reason this configuration is invalid (empty when valid)."""
        problems = []
        for spec in _FIELDS:
            raw = getattr(getattr(self, spec.section), spec.attr)
            value, why = _coerce(spec, raw)
            if not why and value is not None:
                why = _check_value(spec, value)
            if why:
                problems.append(_problem(spec.name, raw, why))
        if problems:
            return problems  # cross-field checks assume well-typed fields
        return self._cross_field_problems()

    def _cross_field_problems(self) -> list[str]:
        policy = self.policy
        problems = []
        size_hw = (self.engine.input_height, self.engine.input_width)
        if size_hw != (0, 0) and min(size_hw) < MIN_INPUT_SIDE:
            problems.append(
                _problem(
                    "engine.input_height/input_width",
                    list(size_hw),
                    f"both 0 (the checkpoint's training size) or both >= {MIN_INPUT_SIDE} pixels",
                )
            )
        node = self.node
        low, high = NICENESS_RANGE if node.scheduling_policy == "other" else REALTIME_RANGE
        if not low <= node.scheduling_priority <= high:
            problems.append(
                _problem(
                    "node.scheduling_priority",
                    node.scheduling_priority,
                    f"expected {low}..{high} with node.scheduling_policy "
                    f"{node.scheduling_policy!r}",
                )
            )
        bad_ids = [e for e in policy.active_exits if not is_exit_id(e)]
        if bad_ids:
            problems.append(
                _problem(
                    "policy.active_exits",
                    policy.active_exits,
                    f"{', '.join(map(repr, bad_ids))} are not exit ids "
                    "('final' or '<point>:<head>', e.g. 'layer2_1:fcn_c64_k2_d1')",
                )
            )
        duplicates = sorted({e for e in policy.active_exits if policy.active_exits.count(e) > 1})
        if duplicates:
            problems.append(
                _problem(
                    "policy.active_exits",
                    policy.active_exits,
                    f"each exit may appear once, repeated: {', '.join(duplicates)}",
                )
            )
        intermediate = [e for e in policy.active_exits if e != FINAL_EXIT]
        n_thresholds = len(policy.image_thresholds)
        if n_thresholds == 0:
            problems.append(
                _problem(
                    "policy.image_thresholds",
                    policy.image_thresholds,
                    "expected one shared value or one per active intermediate exit",
                )
            )
        elif policy.active_exits and n_thresholds not in (1, len(intermediate)):
            problems.append(
                _problem(
                    "policy.image_thresholds",
                    policy.image_thresholds,
                    f"expected 1 value or {len(intermediate)} (one per active intermediate exit "
                    f"{', '.join(intermediate)})",
                )
            )
        if policy.exit_model and policy.class_thresholds:
            problems.append(
                _problem(
                    "policy.class_thresholds",
                    policy.class_thresholds,
                    "empty while policy.exit_model is set (the learnt decision replaces the "
                    "confident-pixel share that class thresholds define)",
                )
            )
        # Checked whatever the policy: a bad fixed_exit must not wait for the switch to fixed.
        if not is_exit_id(policy.fixed_exit):
            problems.append(
                _problem(
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
                _problem(
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
                _problem(
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
                problems.append(_problem(name, values, f"expected {expected}"))
        return problems

    def validate(self) -> None:
        """Raise :class:`ConfigError` listing every problem, or return when valid."""
        problems = self.problems()
        if problems:
            raise ConfigError("invalid configuration: " + "; ".join(problems), problems)

    # --- introspection -------------------------------------------------------------------

    @classmethod
    def parameter_specs(cls, base: SegmentationConfig | None = None) -> list[ParameterSpec]:
        """Descriptors of every parameter; defaults come from ``base`` (or the dataclass)."""
        return parameter_specs(base)

    def changed_parameters(self, other: SegmentationConfig) -> list[str]:
        """Names of the parameters whose values differ between ``self`` and ``other``."""
        mine, theirs = self.to_parameters(), other.to_parameters()
        return [name for name in mine if mine[name] != theirs[name]]

    def read_only_changes(self, other: SegmentationConfig) -> list[str]:
        """Changed parameters that only take effect after a restart."""
        return [n for n in self.changed_parameters(other) if _FIELDS_BY_NAME[n].read_only]

    # --- parameter files -----------------------------------------------------------------

    def to_yaml(
        self,
        path: str | Path,
        node_name: str = WILDCARD_NODE,
        header_comment: str = "",
        *,
        describe: bool = True,
    ) -> None:
        """Write a standard ROS 2 parameter file (``<node>: ros__parameters: ...``).

        Parameters are nested by section and, with ``describe``, preceded by
        their description as a comment so the file documents itself. Empty
        lists are written as comments: ROS cannot type an empty array in a
        parameter file, and the declared default (empty) applies instead.
        """
        self.validate()
        text = self.to_yaml_text(node_name, header_comment, describe=describe)
        target = Path(path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(target)
        except OSError as err:
            raise ConfigError(f"cannot write parameter file {target}: {err}") from err

    def to_yaml_text(
        self, node_name: str = WILDCARD_NODE, header_comment: str = "", *, describe: bool = True
    ) -> str:
        """The text :meth:`to_yaml` writes."""
        lines = [f"# {line}".rstrip() for line in header_comment.splitlines()]
        lines.append(f"{json.dumps(node_name)}:")
        lines.append(f"  {ROS_PARAMETERS_KEY}:")
        params = self.to_parameters()
        for section in _SECTIONS:
            fields = [spec for spec in _FIELDS if spec.section == section]
            written = [spec for spec in fields if params[spec.name] != []]
            # A section of empty lists only would be an empty mapping, which rcl refuses.
            lines.append(f"    {section}:" if written else f"    # {section}:")
            for spec in fields:
                if describe:
                    lines.append(f"      # {spec.description} Allowed: {spec.allowed()}.")
                if spec in written:
                    lines.append(f"      {spec.attr}: {_yaml_value(params[spec.name])}")
                else:
                    lines.append(f"      # {spec.attr}: []  (empty: the declared default applies)")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_yaml(
        cls,
        path: str | Path,
        node_name: str | None = None,
        base: SegmentationConfig | None = None,
    ) -> SegmentationConfig:
        """Read a ROS 2 parameter file; every error names the file.

        ``node_name`` picks the entry for that node (merged over ``/**`` as ROS
        does); without it the file must hold one entry, or a ``/**`` one.
        """
        source = Path(path)
        blocks = parameter_file_blocks(source)
        try:
            params = _select_parameters(blocks, node_name)
            config = cls.from_parameters(params, base)
        except ConfigError as err:
            problems = [f"{source}: {p}" for p in err.problems]
            raise ConfigError(f"parameter file {source}: {err}", problems) from err
        return anchor_artefacts(
            config, source.parent, [n for n in ARTEFACT_PARAMETERS if n in params]
        )


def parameter_file_blocks(path: str | Path) -> dict[str, Mapping[str, object]]:
    """``{node name: ros__parameters mapping}`` of a ROS 2 parameter file.

    Everything rcl would refuse with a bare parser message (a missing file,
    bytes that are not UTF-8 text, YAML syntax errors, a list at the top, no
    ``ros__parameters`` section) raises one :class:`ConfigError` naming the
    file and what it should hold.
    """
    source = Path(path)
    text = read_text(source, "parameter file", PARAMETER_FILE_EXPECTED, ConfigError)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(
            f"parameter file {source} is not valid YAML: {_yaml_problem(err)}"
        ) from err
    if not isinstance(data, Mapping):
        found = "empty" if data is None else f"a {type(data).__name__}"
        msg = (
            f"parameter file {source} must map node names to parameters, but its top level is "
            f"{found}; expected {PARAMETER_FILE_EXPECTED}"
        )
        raise ConfigError(msg)
    blocks = dict(_parameter_blocks(data, ""))
    if not blocks:
        key = ROS_PARAMETERS_KEY
        msg = f"parameter file {source}: no '<node>: {key}:' section found (expected '/**: {key}:')"
        raise ConfigError(msg)
    return blocks


def _yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error on one line: what is wrong and where (PyYAML's text spans several)."""
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        mark = err.problem_mark
        return f"{err.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(err).split())


def anchor_artefacts(
    config: SegmentationConfig, directory: Path, names: Iterable[str] = ARTEFACT_PARAMETERS
) -> SegmentationConfig:
    """``config`` with the relative artefact paths among ``names`` that exist in ``directory``
    made absolute.

    A parameter file names its checkpoint and latency table relative to itself,
    so the files can move together (a checkout, a pip prefix, a colcon install)
    and work whatever the current directory. A relative name not found there
    is left for the engine to look up among the packaged models; the current
    directory is never searched.
    """
    params = config.to_parameters()
    updates: dict[str, object] = {}
    for name in names:
        value = params[name]
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            candidate = directory / value
            if candidate.is_file():
                updates[name] = str(candidate.resolve())
    return SegmentationConfig.from_parameters(updates, config) if updates else config


def parameter_specs(base: SegmentationConfig | None = None) -> list[ParameterSpec]:
    """Descriptors of every parameter, defaults taken from ``base`` (dataclass defaults if None)."""
    values = (base or SegmentationConfig()).to_parameters()
    return [
        ParameterSpec(
            name=spec.name,
            default=values[spec.name],
            type_name=spec.type_name,
            description=spec.description,
            read_only=spec.read_only,
            min=spec.min,
            max=spec.max,
            choices=spec.choices,
            constraints=spec.allowed(),
        )
        for spec in _FIELDS
    ]


def _yaml_value(value: ParamValue) -> str:
    """One YAML scalar or flow list that both PyYAML and ROS's rcl parser read back exactly."""
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_scalar(v) for v in value) + "]"
    return _yaml_scalar(value)


def _yaml_scalar(value: bool | int | float | str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        mantissa, e, exponent = text.partition("e")
        if "." not in mantissa:  # YAML 1.1 needs a dot to read it as a float
            mantissa += ".0"
        return mantissa + e + exponent
    return json.dumps(value)  # a JSON string is a valid double-quoted YAML scalar


def _parameter_blocks(data: object, prefix: str) -> Iterator[tuple[str, Mapping[str, object]]]:
    """``(node path, ros__parameters mapping)`` pairs, following namespace nesting."""
    if not isinstance(data, Mapping):
        return
    for key, value in data.items():
        if not isinstance(value, Mapping):
            continue
        name = f"{prefix}/{key}".replace("//", "/") if prefix else str(key)
        if ROS_PARAMETERS_KEY in value:
            block = value[ROS_PARAMETERS_KEY]
            yield name, block if isinstance(block, Mapping) else {}
        else:
            yield from _parameter_blocks(value, name)


def flatten_parameters(params: Mapping[str, object], prefix: str = "") -> dict[str, object]:
    """Nested ``ros__parameters`` as flat dotted names, as rcl reads them."""
    flat: dict[str, object] = {}
    for key, value in params.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_parameters(value, name))
        else:
            flat[name] = value
    return flat


def _select_parameters(
    blocks: Mapping[str, Mapping[str, object]], node_name: str | None
) -> dict[str, object]:
    if node_name is not None:
        wanted = [n for n in (WILDCARD_NODE, node_name, node_name.lstrip("/")) if n in blocks]
        if not wanted:
            raise ConfigError(
                f"no parameters for node {node_name!r}; the file has: {', '.join(blocks)}"
            )
    elif len(blocks) == 1:
        wanted = list(blocks)
    elif WILDCARD_NODE in blocks:
        wanted = [WILDCARD_NODE]
    else:
        raise ConfigError(
            f"the file has parameters for several nodes ({', '.join(blocks)}); name the node"
        )
    params: dict[str, object] = {}
    for name in dict.fromkeys(wanted):
        params.update(flatten_parameters(blocks[name]))
    return params
