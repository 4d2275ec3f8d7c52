"""Exit policies on constructed confidence and latency cases."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from mess_ros.config import POLICY_NAMES, PolicyConfig
from mess_ros.runtime.errors import PolicyError
from mess_ros.runtime.latency import OnlineLatencyModel
from mess_ros.runtime.policies import (
    POLICIES,
    Action,
    Decision,
    ExitContext,
    PathCosts,
    build_policy,
    late_frame_decision,
)
from tests.runtime.conftest import ALL_EXITS, constructed_table

# Blocks between consecutive active exits when all four exits of the tiny model are active.
SEGMENTS = (("layer1_0",), ("layer2_0",), ("layer3_0",), ("layer4_0",))


def exact_costs() -> PathCosts:
    """Each block 10 ms, each head 2 ms, each output 1 ms, no margin: easy to check by hand."""
    model = OnlineLatencyModel(constructed_table(10.0, 2.0, 1.0))
    frame = model.begin_frame(None)
    return PathCosts(ALL_EXITS, SEGMENTS, lambda keys: frame.predict_ms(keys, quantile=False))


def context(position: int, remaining_ms: float | None, threshold: float = 0.8) -> ExitContext:
    return ExitContext(position, threshold, remaining_ms, exact_costs())


def walk(
    name: str,
    remaining_ms: Iterable[float | None],
    confidences: Iterable[float],
    thresholds: Iterable[float] = (0.8, 0.8, 0.8, 0.0),
    **changes: object,
) -> tuple[int, list[str], list[Decision]]:
    """Drive a policy like the engine does; time left and confidences per exit are constructed."""
    chosen = build_policy(PolicyConfig(name=name, **changes))  # type: ignore[arg-type]
    evaluated: list[str] = []
    decisions: list[Decision] = []
    for position, (remaining, confidence, threshold) in enumerate(
        zip(remaining_ms, confidences, thresholds, strict=True)
    ):
        ctx = ExitContext(position, threshold, remaining, exact_costs())
        decision = chosen.before_head(ctx)
        decisions.append(decision)
        if decision.action is Action.CONTINUE:
            continue
        evaluated.append(ctx.exit_id)
        if decision.action is Action.EVALUATE:
            decision = chosen.after_head(ctx, confidence)
            decisions.append(decision)
            if decision.action is Action.CONTINUE:
                continue
        return position, evaluated, decisions
    raise AssertionError("the policy never stopped")


NO_DEADLINE = (None, None, None, None)


def test_registry_holds_exactly_the_configurable_policies() -> None:
    assert tuple(sorted(POLICIES.names())) == tuple(sorted(POLICY_NAMES))
    with pytest.raises(PolicyError, match="valid names: confidence, deadline, final"):
        POLICIES.get("greedy")


def test_path_costs_by_hand() -> None:
    costs = exact_costs()
    # from exit 0 (head not run) to the mask of exit 2, evaluating exit 1 on the way
    assert costs.cost_to_ms(0, 2, own_head=False, evaluate_between=True) == pytest.approx(
        10 + 2 + 10 + 2 + 1
    )
    assert costs.cost_to_ms(0, 2, own_head=True, evaluate_between=False) == pytest.approx(
        2 + 10 + 10 + 2 + 1
    )


def test_final_runs_only_the_final_head() -> None:
    position, evaluated, decisions = walk("final", NO_DEADLINE, (1.0, 1.0, 1.0, 1.0))
    assert position == 3 and evaluated == ["final"]
    assert decisions[-1].reason == "final"


def test_fixed_stops_at_its_exit_without_other_heads() -> None:
    position, evaluated, decisions = walk(
        "fixed", NO_DEADLINE, (1.0, 1.0, 1.0, 1.0), fixed_exit="layer2_0:linear"
    )
    assert (position, evaluated) == (1, ["layer2_0:linear"])
    assert decisions[-1] == Decision(Action.STOP, "fixed")


def test_confidence_stops_at_first_confident_exit() -> None:
    position, evaluated, decisions = walk("confidence", NO_DEADLINE, (0.5, 0.85, 0.99, 0.0))
    assert position == 1
    assert evaluated == ["layer1_0:linear", "layer2_0:linear"]
    assert decisions[1].reason == "not confident: 50.0% of pixels >= 0.90 (needs 80.0%)"
    assert decisions[-1].reason == "confident: 85.0% of pixels >= 0.90 (needs 80.0%)"


def test_confidence_uses_per_exit_thresholds() -> None:
    position, _, _ = walk(
        "confidence", NO_DEADLINE, (0.85, 0.85, 0.85, 0.0), thresholds=(0.9, 0.95, 0.8, 0.0)
    )
    assert position == 2


def test_confidence_falls_through_to_final() -> None:
    position, evaluated, decisions = walk("confidence", NO_DEADLINE, (0.1, 0.2, 0.3, 0.0))
    assert position == 3 and len(evaluated) == 4
    assert decisions[-1].reason == "final: no earlier exit was confident"


def test_confidence_reason_mentions_class_thresholds() -> None:
    chosen = build_policy(PolicyConfig(name="confidence", class_thresholds=[0.5, 0.9]))
    decision = chosen.after_head(context(0, None), 0.95)
    assert decision.reason == "confident: 95.0% of pixels above their class threshold (needs 80.0%)"


def test_deadline_picks_the_deepest_exit_that_fits() -> None:
    # finishing exit k from the start costs 10(k+1) + 2 + 1 ms (skipped heads never run);
    # 35 ms left after the first block: exit 2 needs 10+10+2+1 = 23, the final 33; both fit
    position, evaluated, decisions = walk("deadline", (35.0, 25.0, 15.0, 5.0), (0, 0, 0, 0))
    assert position == 3 and evaluated == ["final"]
    # 24 ms left after the first block: exit 2 needs 23 ms -> go on; then at exit 2 the final
    # needs 10+2+1 = 13 ms with 3 ms left -> stop at exit 2
    position, evaluated, decisions = walk("deadline", (24.0, 14.0, 3.0, None), (0, 0, 0, 0))
    assert (position, evaluated) == (2, ["layer3_0:fcn_c8_k1_d1"])
    assert decisions[0].reason == "deadline: layer3_0:fcn_c8_k1_d1 fits (23.0 ms, 24.0 ms left)"
    assert decisions[-1] == Decision(Action.STOP, "deadline: next exit needs 13.0 ms, 3.0 ms left")


def test_deadline_stops_at_the_first_exit_when_nothing_deeper_fits() -> None:
    position, evaluated, decisions = walk("deadline", (12.0, None, None, None), (0, 0, 0, 0))
    assert (position, evaluated) == (0, ["layer1_0:linear"])
    assert decisions[0].reason == "deadline: next exit needs 13.0 ms, 12.0 ms left"


def test_deadline_without_deadline_runs_the_final_exit() -> None:
    position, _, decisions = walk("deadline", NO_DEADLINE, (1.0, 1.0, 1.0, 1.0))
    assert position == 3
    assert decisions[0].reason == "no deadline"
    assert decisions[-1].reason == "final: no deadline"


def test_hybrid_stops_when_confident() -> None:
    position, evaluated, decisions = walk("hybrid", (100.0, 90.0, 80.0, 70.0), (0.5, 0.9, 0, 0))
    assert (position, len(evaluated)) == (1, 2)
    assert decisions[-1].reason.startswith("confident:")


def test_hybrid_never_starts_an_exit_that_cannot_finish() -> None:
    # at exit 0: own head 2 + block 10 + head 2 + output 1 = 15 ms; 14 ms left -> stop now,
    # without paying for a confidence that could not change the outcome
    position, evaluated, decisions = walk("hybrid", (14.0, None, None, None), (0.0, 0, 0, 0))
    assert (position, evaluated) == (0, ["layer1_0:linear"])
    assert decisions[0] == Decision(Action.STOP, "deadline: next exit needs 15.0 ms, 14.0 ms left")


def test_hybrid_stops_unconfident_when_the_head_used_up_the_time() -> None:
    # at exit 0: 16 ms left >= 15 needed -> evaluate; not confident, the next exit needs 13 ms
    # -> continue; at exit 1 only 2 ms are left -> stop there without evaluating further
    position, _, decisions = walk("hybrid", (16.0, 2.0, None, None), (0.1, 0.1, 0, 0))
    assert position == 1
    assert decisions[-1].reason == "deadline: next exit needs 15.0 ms, 2.0 ms left"

    chosen = build_policy(PolicyConfig(name="hybrid"))
    decision = chosen.after_head(context(0, 12.0), 0.1)
    assert decision.stop
    assert decision.reason == (
        "deadline: next exit needs 13.0 ms, 12.0 ms left "
        "(not confident: 10.0% of pixels >= 0.90 (needs 80.0%))"
    )


def test_hybrid_without_deadline_is_the_confidence_policy() -> None:
    for confidences in ((0.9, 0, 0, 0), (0.1, 0.1, 0.95, 0), (0.1, 0.1, 0.1, 0.0)):
        assert (
            walk("hybrid", NO_DEADLINE, confidences)[:2]
            == walk("confidence", NO_DEADLINE, confidences)[:2]
        )


def test_quantile_predictions_make_deadline_decisions_conservative() -> None:
    """With jitter in the table, the high-quantile cost is used and an exit that fits on
    average but not at the quantile is not started."""
    model = OnlineLatencyModel(constructed_table(10.0, 2.0, 1.0, spread=0.3))
    frame = model.begin_frame(None)
    costs = PathCosts(ALL_EXITS, SEGMENTS, frame.predict_ms)
    mean_cost = frame.predict_ms(["segment:layer2_0", "head:layer2_0:linear"], quantile=False)
    needed = costs.cost_to_ms(0, 1, own_head=False, evaluate_between=False)
    assert needed > mean_cost + 1.0
    ctx = ExitContext(2, 0.8, (needed + mean_cost + 1.0) / 2, costs)
    chosen = build_policy(PolicyConfig(name="deadline"))
    assert chosen.before_head(ctx).stop


@pytest.mark.parametrize(
    ("remaining", "action", "expected"),
    [
        (5.0, "drop", None),
        (None, "drop", None),
        (
            -3.3,
            "drop",
            Decision(Action.DROP, "late frame: deadline passed 3.3 ms before start; dropped"),
        ),
        (
            0.0,
            "earliest",
            Decision(Action.STOP, "late frame: deadline passed 0.0 ms before start; earliest exit"),
        ),
    ],
)
def test_late_frames(remaining: float | None, action: str, expected: Decision | None) -> None:
    assert late_frame_decision(remaining, action) == expected


def test_late_frame_action_must_be_known() -> None:
    with pytest.raises(PolicyError, match="late_frame_action"):
        late_frame_decision(-1.0, "panic")
