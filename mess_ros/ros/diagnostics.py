"""``diagnostic_msgs`` builders for the per-frame ``exit_info`` and the ``/diagnostics`` status.

``exit_info`` is a ``DiagnosticArray`` because every ROS tool already
displays, records and filters that type (``rqt_runtime_monitor``,
``ros2 topic echo``, rosbag), and its header lets a consumer match each
report to its mask by stamp. Values are strings, as the message requires;
floats use a fixed number of decimals so logs diff cleanly.

Keys of ``exit_info`` (one ``DiagnosticStatus`` per frame, in this order):

=================  =====================================================================
``exit_id``        exit that produced the mask (``"final"`` or ``"<point>:<head>"``)
``exit_index``     position of that exit among the active exits, 0 = earliest
``num_exits``      number of active exits (``final`` included)
``confidence``     share of pixels whose top-1 probability passed the pixel threshold; ``nan``
                   under policies that do not use confidences (final, fixed, deadline)
``reason``         why the policy stopped there (the policy's own sentence)
``policy``         policy name in force for this frame
``predicted_ms``   latency the policy predicted for the path it took (publishing included)
``measured_ms``    engine time measured for the frame, up to the mask (publishing excluded)
``deadline_ms``    time budget left when inference started; ``none`` without a deadline
``met_deadline``   ``true`` / ``false`` once the mask was published; ``none`` without a deadline
``infeasible``     ``true`` when no exit could have met the deadline (late already, or even
                   the earliest exit predicted too slow): the machine, not the policy, missed
``load``           accelerator load used by the policy (0..1); ``none`` when unknown or stale
``dropped``        ``true`` when the policy dropped the frame (no mask is published)
``threads``        CPU threads the network ran on (fewer while other processes take cores)
``queue_ms``       time the frame waited between reception and the start of inference
``end_to_end_ms``  from the frame's stamp to the mask published (from reception for frames
                   without a usable stamp)
``camera``         the camera of ``cameras.names`` the frame came from (empty: single camera)
``planned_ms``     budget the exit decisions planned with when inference started: the
                   deadline's, less where frames of other cameras waited behind it; ``none``
                   without a deadline
``waiting``        frames of other cameras waiting when inference started
``outputs``        topics the frame was published on, comma-separated: ``mask``, and
                   ``mask/camera_info``, ``mask_color``, ``mask_overlay`` when published
``stage.<name>``   time of each stage in ms (backbone segments, heads, output, and
                   ``deliver:<h>x<w>``: converting and publishing the masks)
=================  =====================================================================

Level: OK when the deadline was met (or there is none), WARN when it was
missed or the frame was dropped.

``/diagnostics`` carries the node's status and, for a node with several
cameras, one more status per camera with the same keys counted for that
camera alone (WARN as well while the camera sends nothing).

:class:`ExitInfo` reads such a message back into typed fields, for every
consumer (demo, evaluation, benchmarks, tests).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header

from mess_ros.common.stamps import header_stamp_ns
from mess_ros.ros.stats import StatisticsSnapshot

if TYPE_CHECKING:  # the engine pulls in torch; readers of exit_info must not need it
    from mess_ros.runtime.engine import SegmentationResult

EXIT_INFO_KEYS: Final = (
    "exit_id",
    "exit_index",
    "num_exits",
    "confidence",
    "reason",
    "policy",
    "predicted_ms",
    "measured_ms",
    "deadline_ms",
    "met_deadline",
    "infeasible",
    "load",
    "dropped",
    "threads",
    "queue_ms",
    "end_to_end_ms",
    "camera",
    "planned_ms",
    "waiting",
    "outputs",
)
STAGE_KEY_PREFIX: Final = "stage."

# /diagnostics turns WARN above this share of missed deadlines in the window.
MISS_RATE_WARN: Final = 0.1


def exit_info_message(
    header: Header,
    result: SegmentationResult,
    *,
    status_name: str,
    hardware_id: str,
    policy: str,
    queue_ms: float,
    end_to_end_ms: float,
    camera: str = "",
    waiting: int = 0,
    outputs: Sequence[str] = (),
) -> DiagnosticArray:
    """The ``exit_info`` report of one frame, with the frame's header copied unchanged."""
    values = [
        ("exit_id", result.exit_id),
        ("exit_index", str(result.exit_index)),
        ("num_exits", str(result.num_exits)),
        ("confidence", _fmt(result.confidence, 4)),
        ("reason", result.reason),
        ("policy", policy),
        ("predicted_ms", _fmt(result.predicted_ms, 3)),
        ("measured_ms", _fmt(result.measured_ms, 3)),
        ("deadline_ms", _fmt_optional(result.deadline_ms, 3)),
        ("met_deadline", _fmt_bool(result.met_deadline)),
        ("infeasible", _fmt_bool(result.infeasible)),
        ("load", _fmt_optional(result.load, 3)),
        ("dropped", _fmt_bool(result.dropped)),
        ("threads", str(result.threads)),
        ("queue_ms", _fmt(queue_ms, 3)),
        ("end_to_end_ms", _fmt(end_to_end_ms, 3)),
        ("camera", camera),
        ("planned_ms", _fmt_optional(result.planned_ms, 3)),
        ("waiting", str(waiting)),
        ("outputs", ",".join(outputs)),
    ]
    values += [
        (f"{STAGE_KEY_PREFIX}{stage}", _fmt(ms, 3)) for stage, ms in result.stage_times_ms.items()
    ]
    if result.dropped:
        level, message = DiagnosticStatus.WARN, f"frame dropped: {result.reason}"
    elif result.met_deadline is False:
        level, message = DiagnosticStatus.WARN, f"deadline missed at exit {result.exit_id}"
    else:
        level, message = DiagnosticStatus.OK, f"exit {result.exit_id}"
    status = DiagnosticStatus(
        level=level, name=status_name, message=message, hardware_id=hardware_id
    )
    status.values = [KeyValue(key=key, value=value) for key, value in values]
    array = DiagnosticArray(header=header)
    array.status = [status]
    return array


@dataclass(frozen=True)
class CameraHealth:
    """One camera's figures for :func:`health_message`."""

    status_name: str
    snapshot: StatisticsSnapshot
    extra: Sequence[tuple[str, str]] = ()


def health_message(
    stamp: Time,
    snapshot: StatisticsSnapshot,
    *,
    status_name: str,
    hardware_id: str,
    extra: Sequence[tuple[str, str]] = (),
    cameras: Sequence[CameraHealth] = (),
) -> DiagnosticArray:
    """The aggregate ``/diagnostics`` status for one period, then one status per camera.

    WARN when frames arrive but no mask leaves, when malformed frames were
    dropped in the period, or when too many recent frames missed their
    deadline (and, for a camera, while it sends nothing); the message names
    the first of these so an operator reading ``rqt_runtime_monitor`` sees
    the reason without opening the values.
    """
    array = DiagnosticArray()
    array.header.stamp = stamp
    array.status = [_health_status(snapshot, status_name, hardware_id, extra)]
    array.status += [
        _health_status(c.snapshot, c.status_name, hardware_id, c.extra, camera=True)
        for c in cameras
    ]
    return array


def _health_status(
    snapshot: StatisticsSnapshot,
    status_name: str,
    hardware_id: str,
    extra: Sequence[tuple[str, str]],
    *,
    camera: bool = False,
) -> DiagnosticStatus:
    problems: list[str] = []
    if camera and snapshot.input_rate_hz == 0:
        problems.append("no frames from this camera")
    if snapshot.input_rate_hz > 0 and snapshot.output_rate_hz == 0:
        problems.append("frames arrive but no mask is published")
    if snapshot.bad_input_in_period:
        problems.append(f"{snapshot.bad_input_in_period} malformed frames dropped")
    if snapshot.deadline_miss_rate > MISS_RATE_WARN:
        problems.append(
            f"deadline miss rate {snapshot.deadline_miss_rate:.0%} "
            f"({snapshot.deadline_infeasible_rate:.0%} infeasible)"
        )
    if problems:
        level, message = DiagnosticStatus.WARN, "; ".join(problems)
    else:
        level = DiagnosticStatus.OK
        message = (
            f"{snapshot.output_rate_hz:.1f} masks/s, p95 {_fmt(snapshot.latency_p95_ms, 1)} ms"
        )
    status = DiagnosticStatus(
        level=level, name=status_name, message=message, hardware_id=hardware_id
    )
    pairs = [*snapshot.key_values(), *extra]
    status.values = [KeyValue(key=key, value=value) for key, value in pairs]
    return status


def key_values(status: DiagnosticStatus) -> dict[str, str]:
    """The values of a status as a dict (for consumers: demo, tests, evaluation)."""
    return {kv.key: kv.value for kv in status.values}


@dataclass(frozen=True)
class ExitInfo:
    """One ``exit_info`` report, typed: the inverse of :func:`exit_info_message`.

    Numbers the node writes as ``nan`` come back as NaN, optional ones
    written as ``none`` as None; a key a report lacks (an older node) gets
    the same "unknown" value.
    """

    stamp_ns: int
    exit_id: str
    exit_index: int
    num_exits: int
    confidence: float
    reason: str
    policy: str
    predicted_ms: float
    measured_ms: float
    deadline_ms: float | None
    met_deadline: bool | None
    infeasible: bool
    load: float | None
    dropped: bool
    threads: int
    queue_ms: float
    end_to_end_ms: float
    camera: str = ""
    planned_ms: float | None = None
    waiting: int = 0
    outputs: tuple[str, ...] = ()
    hardware_id: str = ""
    stage_ms: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_message(cls, msg: DiagnosticArray) -> ExitInfo:
        """Decode the first status of an ``exit_info`` message."""
        if not msg.status:
            raise ValueError("exit_info message without a status")
        status = msg.status[0]
        values = key_values(status)
        return cls(
            stamp_ns=header_stamp_ns(msg),
            exit_id=values.get("exit_id", ""),
            exit_index=_int(values.get("exit_index"), -1),
            num_exits=_int(values.get("num_exits"), 0),
            confidence=_float(values.get("confidence")),
            reason=values.get("reason", ""),
            policy=values.get("policy", ""),
            predicted_ms=_float(values.get("predicted_ms")),
            measured_ms=_float(values.get("measured_ms")),
            deadline_ms=_optional_float(values.get("deadline_ms")),
            met_deadline=_optional_bool(values.get("met_deadline")),
            infeasible=values.get("infeasible") == "true",
            load=_optional_float(values.get("load")),
            dropped=values.get("dropped") == "true",
            threads=_int(values.get("threads"), 0),
            queue_ms=_float(values.get("queue_ms")),
            end_to_end_ms=_float(values.get("end_to_end_ms")),
            camera=values.get("camera", ""),
            planned_ms=_optional_float(values.get("planned_ms")),
            waiting=_int(values.get("waiting"), 0),
            outputs=tuple(filter(None, values.get("outputs", "").split(","))),
            hardware_id=str(status.hardware_id),
            stage_ms={
                key.removeprefix(STAGE_KEY_PREFIX): _float(value)
                for key, value in values.items()
                if key.startswith(STAGE_KEY_PREFIX)
            },
        )


def _float(text: str | None) -> float:
    try:
        return float(text) if text is not None else math.nan
    except ValueError:
        return math.nan


def _optional_float(text: str | None) -> float | None:
    return None if text in (None, "none", "") else _float(text)


def _optional_bool(text: str | None) -> bool | None:
    return None if text in (None, "none", "") else text == "true"


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def _fmt(value: float, digits: int) -> str:
    return "nan" if math.isnan(value) else f"{value:.{digits}f}"


def _fmt_optional(value: float | None, digits: int) -> str:
    return "none" if value is None else _fmt(value, digits)


def _fmt_bool(value: bool | None) -> str:
    return "none" if value is None else str(bool(value)).lower()
