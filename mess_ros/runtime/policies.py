"""Exit policies: after each active exit, stop or go deeper.

The engine walks the active exits in depth order. At each one it first asks
the policy :meth:`ExitPolicy.before_head`: stop here, skip this exit's head
(go on), or evaluate the head to see its confidence. Policies that look at
confidence then get :meth:`ExitPolicy.after_head`. Skipping heads is what
lets ``deadline``, ``fixed`` and ``final`` pay only for the exit they take.

Every decision carries a reason written for a person reading ``exit_info``:
``"confident: 93.1% of pixels >= 0.90 (needs 80.0%)"``,
``"deadline: next exit needs 41.2 ms, 12.0 ms left"``, ``"late frame: ..."``.

Time predictions come from :class:`PathCosts`, which prices "from here to
finishing exit j" with the online latency model's high-quantile predictions,
so policies stay free of latency bookkeeping and are easy to test on
constructed cases.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from mess_ros.common.exits import FINAL_EXIT
from mess_ros.common.latency_table import head_key, output_key, segment_key
from mess_ros.config import PolicyConfig
from mess_ros.registry import Registry
from mess_ros.runtime.errors import PolicyError


class Action(enum.Enum):
    STOP = "stop"
    CONTINUE = "continue"
    EVALUATE = "evaluate"  # run this exit's head, then decide with its confidence
    DROP = "drop"


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str

    @property
    def stop(self) -> bool:
        return self.action is Action.STOP


class PathCosts:
    """Predicted time from the current exit to finishing a deeper one.

    ``exits`` are the active exits in depth order; ``exit_segments[k]`` the
    backbone blocks between exit ``k-1``'s point (exclusive) and exit ``k``'s
    point (inclusive). ``predict_ms`` prices a list of stage keys (the engine
    passes the frame's high-quantile prediction, including the in-frame
    slow-down factor, so costs follow the frame as it runs). ``tail_keys``
    follow every exit's mask (handing it to the consumers: a deadline is met
    when the mask is published, not when the network is done).
    """

    def __init__(
        self,
        exits: Sequence[str],
        exit_segments: Sequence[Sequence[str]],
        predict_ms: Callable[[Iterable[str]], float],
        tail_keys: Sequence[str] = (),
    ) -> None:
        if len(exits) != len(exit_segments):
            raise PolicyError("every active exit needs its list of backbone blocks")
        self.exits = tuple(exits)
        self.exit_segments = tuple(tuple(s) for s in exit_segments)
        self.tail_keys = tuple(tail_keys)
        self._predict_ms = predict_ms

    def cost_to_ms(
        self, position: int, target: int, *, own_head: bool, evaluate_between: bool
    ) -> float:
        """Time from exit ``position`` (its blocks done) to the mask of exit ``target``.

        ``own_head``: exit ``position``'s head still has to run first.
        ``evaluate_between``: the heads of the exits strictly between them run
        too (confidence-driven policies evaluate every exit they pass).
        """
        keys = [head_key(self.exits[position])] if own_head else []
        for k in range(position + 1, target + 1):
            keys.extend(segment_key(p) for p in self.exit_segments[k])
            if k == target or evaluate_between:
                keys.append(head_key(self.exits[k]))
        keys.append(output_key(self.exits[target]))
        return self._predict_ms([*keys, *self.tail_keys])


@dataclass(frozen=True)
class ExitContext:
    """What a policy knows when the backbone has reached an active exit's point."""

    position: int
    image_threshold: float
    remaining_ms: float | None  # until the deadline (None: no deadline)
    costs: PathCosts

    @property
    def exit_id(self) -> str:
        return self.costs.exits[self.position]

    @property
    def num_exits(self) -> int:
        return len(self.costs.exits)

    @property
    def is_last(self) -> bool:
        return self.position == self.num_exits - 1

    def next_cost_ms(self, *, own_head: bool) -> float:
        """Time to finish the next active exit, evaluating it (and this head if ``own_head``)."""
        return self.costs.cost_to_ms(
            self.position, self.position + 1, own_head=own_head, evaluate_between=True
        )


def _deadline_text(needed_ms: float, remaining_ms: float) -> str:
    return f"deadline: next exit needs {needed_ms:.1f} ms, {remaining_ms:.1f} ms left"


class ExitPolicy:
    """Base policy: the last active exit always stops; subclasses decide the others."""

    name: ClassVar[str] = ""
    uses_confidence: ClassVar[bool] = False
    plans_for_deadline: ClassVar[bool] = False

    def __init__(self, config: PolicyConfig) -> None:
        self.config = config
        if config.class_thresholds:
            self.pixel_text = "above their class threshold"
        else:
            self.pixel_text = f">= {config.pixel_threshold:.2f}"

    def score_text(self, confidence: float, ctx: ExitContext) -> str:
        """The exit's score against its threshold, for a person reading ``exit_info``."""
        if self.config.exit_model:
            return f"learnt P(as good as final) {confidence:.3f} (needs {ctx.image_threshold:.3f})"
        return f"{confidence:.1%} of pixels {self.pixel_text} (needs {ctx.image_threshold:.1%})"

    def before_head(self, ctx: ExitContext) -> Decision:
        if ctx.is_last:
            return Decision(Action.STOP, self.last_reason(ctx))
        return self.decide_before(ctx)

    def decide_before(self, ctx: ExitContext) -> Decision:
        raise NotImplementedError

    def after_head(self, ctx: ExitContext, confidence: float) -> Decision:
        """Only called after :attr:`Action.EVALUATE`; confidence policies override it."""
        raise PolicyError(f"policy {self.name!r} asked for a confidence it does not use")

    def last_reason(self, ctx: ExitContext) -> str:
        return "final"


POLICIES: Registry[type[ExitPolicy]] = Registry("exit policy", PolicyError)


def build_policy(config: PolicyConfig) -> ExitPolicy:
    """The policy named by ``config.name`` (PolicyError lists the valid names)."""
    return POLICIES.get(config.name)(config)


@POLICIES.register("final")
class FinalPolicy(ExitPolicy):
    """Always the last exit: the single-exit baseline (intermediate heads never run)."""

    name = "final"

    def decide_before(self, ctx: ExitContext) -> Decision:
        return Decision(Action.CONTINUE, "final policy")


@POLICIES.register("fixed")
class FixedPolicy(ExitPolicy):
    """Always ``fixed_exit`` (the exits before it skip their heads)."""

    name = "fixed"

    def decide_before(self, ctx: ExitContext) -> Decision:
        if ctx.exit_id == self.config.fixed_exit:
            return Decision(Action.STOP, "fixed")
        return Decision(Action.CONTINUE, "fixed: not the fixed exit")

    def last_reason(self, ctx: ExitContext) -> str:
        return "fixed" if self.config.fixed_exit in (ctx.exit_id, FINAL_EXIT) else "final"


@POLICIES.register("confidence")
class ConfidencePolicy(ExitPolicy):
    """The paper's policy: the first exit whose confident-pixel share reaches its threshold."""

    name = "confidence"
    uses_confidence = True

    def decide_before(self, ctx: ExitContext) -> Decision:
        return Decision(Action.EVALUATE, "evaluate confidence")

    def after_head(self, ctx: ExitContext, confidence: float) -> Decision:
        text = self.score_text(confidence, ctx)
        if confidence >= ctx.image_threshold:
            return Decision(Action.STOP, f"confident: {text}")
        return Decision(Action.CONTINUE, f"not confident: {text}")

    def last_reason(self, ctx: ExitContext) -> str:
        return "final: no earlier exit was confident" if ctx.position > 0 else "final"


@POLICIES.register("deadline")
class DeadlinePolicy(ExitPolicy):
    """The deepest exit predicted to finish before the deadline (heads of skipped exits never run).

    Re-evaluated at every exit with the time actually left, so a frame that
    runs slower than predicted falls back to the exit it is passing.
    """

    name = "deadline"
    plans_for_deadline = True

    def decide_before(self, ctx: ExitContext) -> Decision:
        remaining = ctx.remaining_ms
        if remaining is None:
            return Decision(Action.CONTINUE, "no deadline")
        for target in range(ctx.num_exits - 1, ctx.position, -1):
            needed = ctx.costs.cost_to_ms(
                ctx.position, target, own_head=False, evaluate_between=False
            )
            if needed <= remaining:
                return Decision(
                    Action.CONTINUE,
                    f"deadline: {ctx.costs.exits[target]} fits ({needed:.1f} ms, "
                    f"{remaining:.1f} ms left)",
                )
        needed = ctx.costs.cost_to_ms(
            ctx.position, ctx.position + 1, own_head=False, evaluate_between=False
        )
        return Decision(Action.STOP, _deadline_text(needed, remaining))

    def last_reason(self, ctx: ExitContext) -> str:
        return "final: no deadline" if ctx.remaining_ms is None else "deadline: final exit fits"


@POLICIES.register("hybrid")
class HybridPolicy(ConfidencePolicy):
    """First confident exit, but never start an exit that cannot finish before the deadline."""

    name = "hybrid"
    plans_for_deadline = True

    def decide_before(self, ctx: ExitContext) -> Decision:
        remaining = ctx.remaining_ms
        if remaining is not None:
            # Evaluating this head only pays if going deeper afterwards is still possible.
            needed = ctx.next_cost_ms(own_head=True)
            if needed > remaining:
                return Decision(Action.STOP, _deadline_text(needed, remaining))
        return Decision(Action.EVALUATE, "evaluate confidence")

    def after_head(self, ctx: ExitContext, confidence: float) -> Decision:
        decision = super().after_head(ctx, confidence)
        if decision.stop or ctx.remaining_ms is None:
            return decision
        needed = ctx.next_cost_ms(own_head=False)
        if needed > ctx.remaining_ms:
            text = self.score_text(confidence, ctx)
            return Decision(
                Action.STOP, f"{_deadline_text(needed, ctx.remaining_ms)} (not confident: {text})"
            )
        return decision


def late_frame_decision(
    remaining_ms: float | None, late_frame_action: str, earliest_ms: float | None = None
) -> Decision | None:
    """What to do with a frame that cannot meet its deadline (None: it can).

    A frame is late when its deadline passed before inference started, and
    infeasible when ``earliest_ms`` (the mean prediction of the earliest
    exit's whole path, from input to published mask; None where the policy
    does not plan for deadlines) exceeds the time left. Either way no exit
    choice can save it: ``late_frame_action`` says whether to run the
    earliest exit anyway or to drop the frame, decided before any work.
    """
    if late_frame_action not in ("earliest", "drop"):
        raise PolicyError(
            f"late_frame_action {late_frame_action!r} is not valid; expected 'earliest' or 'drop'"
        )
    if remaining_ms is None:
        return None
    if remaining_ms <= 0:
        why = f"late frame: deadline passed {abs(remaining_ms):.1f} ms before start"
    elif earliest_ms is not None and earliest_ms > remaining_ms:
        why = f"infeasible: earliest exit needs {earliest_ms:.1f} ms, {remaining_ms:.1f} ms left"
    else:
        return None
    if late_frame_action == "drop":
        return Decision(Action.DROP, f"{why}; dropped")
    return Decision(Action.STOP, f"{why}; earliest exit")
