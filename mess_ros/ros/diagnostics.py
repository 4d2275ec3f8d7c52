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
``predicted_ms``   latency the policy predicted for the path it took
``measured_ms``    engine time measured for the frame
``deadline_ms``    time budget left when inference started; ``none`` without a deadline
``met_deadline``   ``true`` / ``false``; ``none`` without a deadline
``load``           accelerator load used by the policy (0..1); ``none`` when unknown or stale
``dropped``        ``true`` when the policy dropped the frame (no mask is published)
``queue_ms``       time the frame waited between reception and the start of inference
``end_to_end_ms``  reception to publication of the mask, as seen by the node
``stage.<name>``   engine time of each stage in ms (backbone segments, heads, output)
=================  =====================================================================

Level: OK when the deadline was met (or there is none), WARN when it was
missed or the frame was dropped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header

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
    "load",
    "dropped",
    "queue_ms",
    "end_to_end_ms",
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
        ("load", _fmt_optional(result.load, 3)),
        ("dropped", _fmt_bool(result.dropped)),
        ("queue_ms", _fmt(queue_ms, 3)),
        ("end_to_end_ms", _fmt(end_to_end_ms, 3)),
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


def health_message(
    stamp: Time,
    snapshot: StatisticsSnapshot,
    *,
    status_name: str,
    hardware_id: str,
    extra: Sequence[tuple[str, str]] = (),
) -> DiagnosticArray:
    """The aggregate ``/diagnostics`` status for one period.

    WARN when frames arrive but no mask leaves, when malformed frames were
    dropped in the period, or when too many recent frames missed their
    deadline; the message names the first of these so an operator reading
    ``rqt_runtime_monitor`` sees the reason without opening the values.
    """
    problems: list[str] = []
    if snapshot.input_rate_hz > 0 and snapshot.output_rate_hz == 0:
        problems.append("frames arrive but no mask is published")
    if snapshot.bad_input_in_period:
        problems.append(f"{snapshot.bad_input_in_period} malformed frames dropped")
    if snapshot.deadline_miss_rate > MISS_RATE_WARN:
        problems.append(f"deadline miss rate {snapshot.deadline_miss_rate:.0%}")
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
    array = DiagnosticArray()
    array.header.stamp = stamp
    array.status = [status]
    return array


def key_values(status: DiagnosticStatus) -> dict[str, str]:
    """The values of a status as a dict (for consumers: demo, tests, evaluation)."""
    return {kv.key: kv.value for kv in status.values}


def _fmt(value: float, digits: int) -> str:
    return "nan" if math.isnan(value) else f"{value:.{digits}f}"


def _fmt_optional(value: float | None, digits: int) -> str:
    return "none" if value is None else _fmt(value, digits)


def _fmt_bool(value: bool | None) -> str:
    return "none" if value is None else str(bool(value)).lower()
