"""Where a frame's deadline counts from."""

from __future__ import annotations

from mess_ros.ros.core import MAX_STAMP_AGE_NS, budget_origin_ns

MS = 1_000_000


def test_budget_starts_at_the_stamp() -> None:
    # Stamped 30 ms before reception: 30 ms of the budget are already spent.
    origin, why = budget_origin_ns(stamp_ns=1_000 * MS, clock_now_ns=1_030 * MS, received_ns=5 * MS)
    assert why is None
    assert origin == 5 * MS - 30 * MS


def test_small_future_skew_counts_as_now() -> None:
    origin, why = budget_origin_ns(1_000 * MS, 990 * MS, 7 * MS)
    assert why is None
    assert origin == 7 * MS


def test_unusable_stamps_count_from_reception() -> None:
    origin, why = budget_origin_ns(0, 1_000 * MS, 7 * MS)
    assert origin == 7 * MS
    assert why is not None and "no stamp" in why
    origin, why = budget_origin_ns(1, 1 + MAX_STAMP_AGE_NS + 1, 7 * MS)
    assert origin == 7 * MS
    assert why is not None and "--clock" in why
    origin, why = budget_origin_ns(5_000 * MS, 1_000 * MS, 7 * MS)
    assert origin == 7 * MS
    assert why is not None
