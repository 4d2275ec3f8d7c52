"""Scheduling priority of the threads that turn a frame into a published mask.

A robot's perception process competes with everything else on the machine.
Real-time robot stacks give the threads on the sensor-to-actuator path a
higher priority than background work, so that a busy process slows the
background, not the masks. Two ways exist on Linux, both per thread:

* ``other`` with a niceness (-20..19; lower runs first): the normal
  time-sharing scheduler, which still gives every process some time, so a
  mistake cannot freeze the machine; raising it (a negative niceness) needs
  ``CAP_SYS_NICE`` or an ``RLIMIT_NICE`` allowance.
* ``fifo`` / ``rr`` with a real-time priority (1..99): these threads run
  before any time-shared one whenever they are ready; needs
  ``CAP_SYS_NICE`` or an ``RLIMIT_RTPRIO`` allowance.

The setting is applied to every thread of the process (inference, torch's
worker threads, the DDS threads that receive images and send masks); threads
created later inherit it from the thread that creates them.

Kernels with autogroup scheduling (``/proc/sys/kernel/sched_autogroup_enabled``,
on by default in most desktop and many robot kernels) first share the CPU
equally between sessions and only then apply niceness inside each session:
a niceness alone then does nothing against a busy process started from
another terminal or service. A niceness is therefore also written to the
session's autogroup (``/proc/self/autogroup``), which raises every process
of the node's session (under ``ros2 launch``: the nodes it started).
Real-time policies stand above both and need no such step.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from mess_ros.config import SCHEDULING_POLICIES

_HOW_TO_ALLOW: Final = (
    "grant the capability (setcap cap_sys_nice+ep on the Python interpreter, or "
    "CapAmbient/AmbientCapabilities=CAP_SYS_NICE in a systemd unit), or allow it for the user "
    "in /etc/security/limits.conf ({limit}); the node runs on at its current priority"
)


def thread_ids() -> list[int]:
    """Kernel ids of every thread of this process."""
    try:
        return sorted(int(path.name) for path in Path("/proc/self/task").iterdir())
    except OSError:
        return [os.getpid()]


def describe(policy: str, priority: int) -> str:
    """``niceness -10`` or ``SCHED_FIFO priority 20``, for messages."""
    if policy == "other":
        return f"niceness {priority}"
    return f"SCHED_{policy.upper()} priority {priority}"


def apply_scheduling(policy: str, priority: int, tids: Iterable[int] | None = None) -> list[str]:
    """Set ``policy``/``priority`` on the given threads (all of this process by default).

    Returns warnings instead of raising: a refused priority is a deployment
    fact the node reports and survives, not a reason to stop publishing
    masks. ``other`` with priority 0 leaves the threads as they are.
    """
    if policy not in SCHEDULING_POLICIES:
        return [f"unknown scheduling policy {policy!r}; expected one of {SCHEDULING_POLICIES}"]
    if policy == "other" and priority == 0:
        return []
    targets = list(thread_ids() if tids is None else tids)
    refused: list[str] = []
    vanished = 0
    for tid in targets:
        try:
            if policy == "other":
                os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
                os.setpriority(os.PRIO_PROCESS, tid, priority)
            else:
                kind = os.SCHED_FIFO if policy == "fifo" else os.SCHED_RR
                os.sched_setscheduler(tid, kind, os.sched_param(priority))
        except PermissionError as err:
            refused.append(str(err.strerror or err))
        except (ProcessLookupError, FileNotFoundError):
            vanished += 1  # a thread that ended meanwhile needs no priority
        except OSError as err:
            refused.append(str(err.strerror or err))
    if policy == "other" and not refused:
        refused += _set_autogroup_niceness(priority)
    if not refused:
        return []
    limit = "rtprio" if policy != "other" else "nice"
    return [
        f"could not set {describe(policy, priority)} on {len(refused)} of "
        f"{len(targets) - vanished} threads ({refused[0]}): "
        + _HOW_TO_ALLOW.format(limit=f"'<user> - {limit} {abs(priority)}'")
    ]


def _set_autogroup_niceness(priority: int) -> list[str]:
    """Give this process's session the niceness too (kernels with autogroup scheduling)."""
    autogroup = Path("/proc/self/autogroup")
    enabled = Path("/proc/sys/kernel/sched_autogroup_enabled")
    try:
        if not autogroup.exists() or enabled.read_text(encoding="utf-8").strip() != "1":
            return []
        autogroup.write_text(f"{priority}\n", encoding="utf-8")
    except OSError as err:
        return [f"session autogroup: {err.strerror or err}"]
    return []


def freeze_heap() -> None:
    """Collect once, then leave every object alive now out of later garbage collections.

    A full collection walks every tracked object and holds the interpreter
    meanwhile: with torch and a model loaded that is about 200,000 objects
    and 76-100 ms on the README's CPU, about once a minute at 15 frames a
    second. A process that times frames (the node, a camera, a client
    measuring masks) calls this once it is set up, so that later collections
    walk only what it allocated since. ``gc.unfreeze()`` hands the objects
    back (e.g. when a model is released).
    """
    gc.collect()
    gc.freeze()
