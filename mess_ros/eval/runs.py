"""The configurations an evaluation compares, written ``POLICY[@DEADLINE_MS]``.

A comparison is usually "the same deployment with another policy or another
deadline" (``final@60 hybrid@60 hybrid@40``), so each one is the base
configuration (parameter file + model) with those two parameters replaced,
validated by the same rules as the node's parameters.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

from mess_ros.config import POLICY_NAMES, ConfigError, ParamValue, SegmentationConfig
from mess_ros.eval.errors import EvalError


@dataclass(frozen=True)
class RunSpec:
    """One named configuration to evaluate."""

    name: str
    config: SegmentationConfig

    def parameters(self) -> dict[str, ParamValue]:
        """The flat ROS parameters of this configuration (what the report records)."""
        return self.config.to_parameters()


def run_name(config: SegmentationConfig) -> str:
    """``policy@deadline`` (just the policy when there is no deadline)."""
    deadline_ms = float(config.deadline.deadline_ms)
    if deadline_ms <= 0:
        return config.policy.name
    return f"{config.policy.name}@{deadline_ms:g}"


def parse_run(text: str, base: SegmentationConfig) -> RunSpec:
    """``"hybrid@60"`` -> ``base`` with policy hybrid and a 60 ms deadline.

    Without ``@`` the base deadline is kept. Errors say what was expected.
    """
    policy, sep, deadline_text = text.strip().partition("@")
    if policy not in POLICY_NAMES:
        raise EvalError(
            f"configuration {text!r}: unknown policy {policy!r}; expected POLICY[@DEADLINE_MS] "
            f"with POLICY one of {', '.join(POLICY_NAMES)} (e.g. hybrid@60)"
        )
    params: dict[str, ParamValue] = {"policy.name": policy}
    if sep:
        try:
            deadline_ms = float(deadline_text)
        except ValueError as err:
            raise EvalError(
                f"configuration {text!r}: deadline {deadline_text!r} is not a number of "
                "milliseconds; expected POLICY[@DEADLINE_MS], e.g. hybrid@60"
            ) from err
        if not math.isfinite(deadline_ms) or deadline_ms < 0:
            raise EvalError(
                f"configuration {text!r}: the deadline must be >= 0 ms (0 = none), "
                f"got {deadline_text}"
            )
        params["deadline.deadline_ms"] = deadline_ms
    try:
        config = SegmentationConfig.from_parameters(params, base)
    except ConfigError as err:
        raise EvalError(f"configuration {text!r} is not valid: {err}") from err
    return RunSpec(run_name(config), config)


def build_runs(base: SegmentationConfig, compare: Sequence[str] = ()) -> list[RunSpec]:
    """The base configuration alone, or one configuration per ``compare`` entry.

    Names must be unique because every table and plot is keyed by them.
    """
    if not compare:
        return [RunSpec(run_name(base), copy.deepcopy(base))]
    specs = [parse_run(text, base) for text in compare]
    names = [spec.name for spec in specs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise EvalError(f"configurations compared twice: {', '.join(repeated)}")
    return specs
