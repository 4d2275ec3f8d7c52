"""``POLICY[@DEADLINE_MS]`` configurations built on a base configuration."""

from __future__ import annotations

import pytest

from mess_ros.config import SegmentationConfig
from mess_ros.eval.errors import EvalError
from mess_ros.eval.runs import build_runs, parse_run, run_name


def test_policy_and_deadline_replace_only_those_parameters() -> None:
    base = SegmentationConfig.from_parameters(
        {
            "engine.input_height": 64,
            "engine.input_width": 128,
            "deadline.deadline_ms": 80.0,
            "policy.pixel_threshold": 0.7,
        }
    )
    spec = parse_run("hybrid@60", base)
    assert spec.name == "hybrid@60"
    assert spec.config.policy.name == "hybrid"
    assert spec.config.deadline.deadline_ms == 60.0
    assert spec.config.engine.input_height == 64
    assert spec.config.policy.pixel_threshold == 0.7
    assert base.deadline.deadline_ms == 80.0  # the base is never modified
    kept = parse_run("final", base)
    assert (kept.name, kept.config.deadline.deadline_ms) == ("final@80", 80.0)
    assert parse_run("deadline@12.5", base).name == "deadline@12.5"


def test_name_without_deadline_is_the_policy() -> None:
    assert run_name(SegmentationConfig()) == SegmentationConfig().policy.name
    assert parse_run("confidence@0", SegmentationConfig()).name == "confidence"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("fastest@10", "unknown policy 'fastest'.*final, fixed, confidence, deadline, hybrid"),
        ("hybrid@soon", "deadline 'soon' is not a number"),
        ("hybrid@-5", "must be >= 0"),
        ("hybrid@nan", "must be >= 0"),
    ],
)
def test_bad_configurations_say_what_is_expected(text: str, match: str) -> None:
    with pytest.raises(EvalError, match=match):
        parse_run(text, SegmentationConfig())


def test_invalid_combination_is_reported_by_the_configuration_rules() -> None:
    base = SegmentationConfig()
    base.policy.fixed_exit = "nonsense"
    with pytest.raises(EvalError, match=r"'fixed' is not valid.*policy\.fixed_exit"):
        parse_run("fixed", base)


def test_build_runs_defaults_to_the_base_and_rejects_duplicates() -> None:
    base = SegmentationConfig.from_parameters(
        {"policy.name": "hybrid", "deadline.deadline_ms": 50.0}
    )
    (only,) = build_runs(base)
    assert only.name == "hybrid@50"
    assert [s.name for s in build_runs(base, ["final@50", "hybrid@50", "hybrid@30"])] == [
        "final@50",
        "hybrid@50",
        "hybrid@30",
    ]
    with pytest.raises(EvalError, match="compared twice: hybrid@50"):
        build_runs(base, ["hybrid", "hybrid@50"])
