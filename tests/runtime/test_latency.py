"""Latency tables and the online latency model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from mess_ros.common.errors import LatencyTableError
from mess_ros.common.latency_table import (
    PREPROCESS_KEY,
    LatencyStat,
    LatencyTable,
    head_key,
    output_key,
    segment_key,
)
from mess_ros.config import DeadlineConfig
from mess_ros.runtime.errors import LoadValueError
from mess_ros.runtime.latency import OnlineLatencyModel
from tests.runtime.conftest import ALL_EXITS, EXITS, constructed_table

SEGMENTS = ("layer1_0", "layer2_0", "layer3_0", "layer4_0")
MS = 1_000_000  # ns per ms


def frame_keys(exit_id: str = "final") -> list[str]:
    """Stage keys of a frame that runs every block and head and outputs ``exit_id``."""
    keys = [segment_key(p) for p in SEGMENTS]
    keys += [head_key(e) for e in ALL_EXITS]
    return [*keys, output_key(exit_id)]


def run_frame(model: OnlineLatencyModel, load: float | None, slowdown: float) -> float:
    """Feed one frame whose every stage takes ``slowdown`` x the table; returns its prediction."""
    frame = model.begin_frame(load)
    predicted = frame.predict_ms(frame_keys(), quantile=False)
    for key in frame_keys():
        frame.record(key, model.table.base_ms(key) * slowdown)  # type: ignore[operator]
    model.end_frame(frame)
    return predicted


def table_total() -> float:
    return constructed_table().path_ms(EXITS, "final")


def test_stat_from_samples() -> None:
    stat = LatencyStat.from_samples([1.0, 2.0, 3.0, 4.0, 10.0], quantile=0.9)
    assert stat.mean_ms == pytest.approx(4.0)
    assert stat.p90_ms == pytest.approx(7.6)  # linear interpolation between 4 and 10
    assert stat.count == 5
    with pytest.raises(ValueError, match="at least one sample"):
        LatencyStat.from_samples([])


def test_path_ms_counts_blocks_heads_and_one_output() -> None:
    table = constructed_table(segment_ms=10.0, head_ms=2.0, output_ms=1.0)
    # layer2_0:linear after evaluating layer1_0:linear: 2 blocks, 2 heads, 1 output
    assert table.path_ms(EXITS, "layer2_0:linear") == pytest.approx(25.0)
    # only the final exit active: 4 blocks + final head + output
    assert table.path_ms([], "final") == pytest.approx(43.0)
    assert table.path_ms(EXITS, "final") == pytest.approx(40 + 4 * 2 + 1)
    assert table.path_ms(EXITS, "final", stat="p90") == pytest.approx(49.0)
    with pytest.raises(LatencyTableError, match="no entry for exit"):
        table.path_ms(["layer1_0:fcn_c8_k1_d1"], "final")


def test_table_file_round_trip(tmp_path: Path) -> None:
    table = constructed_table(spread=0.2)
    path = tmp_path / "latency.json"
    table.save(path)
    loaded = LatencyTable.load(path)
    assert loaded == table
    assert list(loaded.segments) == list(SEGMENTS)


def _corrupt(data: dict[str, object], change: str) -> None:
    segments = data["segments"]
    assert isinstance(segments, dict)
    if change == "negative":
        segments["layer1_0"]["mean_ms"] = -1.0
    elif change == "nan":
        segments["layer1_0"]["p90_ms"] = math.nan
    elif change == "missing":
        del data["heads"]
    elif change == "format":
        data["format"] = "something else"
    elif change == "outputs":
        del data["outputs"]["final"]  # type: ignore[attr-defined]
    elif change == "hw":
        data["input_hw"] = [32]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("negative", "finite time >= 0"),
        ("nan", "finite time >= 0"),
        ("missing", "missing field 'heads'"),
        ("format", "format must be"),
        ("outputs", "same exits"),
        ("hw", "input_hw"),
    ],
)
def test_bad_table_file_is_rejected_naming_it(tmp_path: Path, change: str, expected: str) -> None:
    data = constructed_table().to_dict()
    _corrupt(data, change)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(LatencyTableError) as info:
        LatencyTable.load(path)
    assert str(path) in str(info.value) and expected in str(info.value)


def test_unreadable_table_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(LatencyTableError, match="cannot read latency table"):
        LatencyTable.load(tmp_path / "absent.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(LatencyTableError, match="not valid JSON"):
        LatencyTable.load(tmp_path / "x.json")


def test_starts_from_the_table() -> None:
    model = OnlineLatencyModel(constructed_table())
    frame = model.begin_frame(None)
    assert frame.predict_ms(frame_keys(), quantile=False) == pytest.approx(table_total())
    # the quantile prediction adds the spread margin on top of the mean
    assert frame.predict_ms(frame_keys()) > table_total()


def test_reported_load_step_is_followed_within_one_frame() -> None:
    model = OnlineLatencyModel(constructed_table(), DeadlineConfig(load_beta=1.0))
    for _ in range(20):
        run_frame(model, 0.0, 1.0)
    model.report_load(1.0, stamp_ns=0)
    load = model.load_at(now_ns=1 * MS)
    assert load == 1.0
    # the very next frame is predicted about 2x slower, before any slow frame was seen
    first = run_frame(model, load, 2.0)
    assert first == pytest.approx(2 * table_total(), rel=0.05)


def test_load_relation_is_learned_online() -> None:
    """True slow-down 1 + 3 * load; the model starts believing 1 + 1 * load."""
    model = OnlineLatencyModel(constructed_table(), DeadlineConfig(load_beta=1.0))
    loads = [0.0, 0.5, 1.0, 0.25, 0.75]
    for i in range(150):
        load = loads[i % len(loads)]
        run_frame(model, load, 1 + 3 * load)
    assert model.beta() == pytest.approx(3.0, rel=0.1)
    # after learning, a load step (reported) is predicted right in the first frame
    prediction = model.begin_frame(0.6).predict_ms(frame_keys(), quantile=False)
    assert prediction == pytest.approx((1 + 3 * 0.6) * table_total(), rel=0.1)


def test_unreported_slowdown_is_followed_within_a_few_frames() -> None:
    model = OnlineLatencyModel(constructed_table(), DeadlineConfig(use_load=False))
    for _ in range(20):
        run_frame(model, None, 1.0)
    predictions = [run_frame(model, None, 2.0) for _ in range(4)]
    assert predictions[0] == pytest.approx(table_total(), rel=0.05)  # not known yet
    # three slow frames later the high-quantile prediction covers the new time
    frame = model.begin_frame(None)
    assert frame.predict_ms(frame_keys()) >= 2.0 * table_total()
    assert predictions[3] >= 1.75 * table_total()
    # and when the slow-down goes away, predictions come back down
    for _ in range(30):
        run_frame(model, None, 1.0)
    assert model.begin_frame(None).predict_ms(frame_keys(), quantile=False) == pytest.approx(
        table_total(), rel=0.1
    )


def test_in_frame_slowdown_raises_the_rest_of_the_frame() -> None:
    model = OnlineLatencyModel(constructed_table())
    frame = model.begin_frame(None)
    rest = [segment_key("layer3_0"), segment_key("layer4_0")]
    before = frame.predict_ms(rest)
    frame.record(segment_key("layer1_0"), 30.0)  # table says 10 ms
    assert frame.in_frame_factor > 2.0
    assert frame.predict_ms(rest) == pytest.approx(before * frame.in_frame_factor)


def test_per_stage_correction_learns_the_machine_profile() -> None:
    """One block is 3x slower than profiled while the rest match: only it is corrected."""
    model = OnlineLatencyModel(constructed_table())
    slow = segment_key("layer3_0")
    for _ in range(60):
        frame = model.begin_frame(None)
        for key in frame_keys():
            base = model.table.base_ms(key)
            assert base is not None
            frame.record(key, base * (3.0 if key == slow else 1.0))
        model.end_frame(frame)
    frame = model.begin_frame(None)
    assert frame.expected_ms(slow) == pytest.approx(30.0, rel=0.1)
    assert frame.expected_ms(segment_key("layer1_0")) == pytest.approx(10.0, rel=0.1)


def test_stage_missing_from_the_table_is_learned_at_first_sight() -> None:
    model = OnlineLatencyModel(constructed_table())
    frame = model.begin_frame(None)
    assert frame.expected_ms(PREPROCESS_KEY) == 0.0
    frame.record(PREPROCESS_KEY, 4.0)
    model.end_frame(frame)
    assert model.begin_frame(None).expected_ms(PREPROCESS_KEY) == pytest.approx(4.0)


def test_output_cost_scales_with_the_frame_size() -> None:
    model = OnlineLatencyModel(constructed_table(output_ms=1.0))
    frame = model.begin_frame(None, output_scale=4.0)
    assert frame.expected_ms(output_key("final")) == pytest.approx(4.0)
    assert frame.expected_ms(head_key("final")) == pytest.approx(2.0)


def test_stale_load_is_ignored_and_counted() -> None:
    model = OnlineLatencyModel(constructed_table(), DeadlineConfig(load_timeout_ms=500.0))
    model.report_load(0.8, stamp_ns=0)
    assert model.load_at(400 * MS) == 0.8
    assert model.load_at(600 * MS) is None
    assert model.load_at(700 * MS) is None
    assert model.rejected_loads["stale"] == 1  # one expired report, counted once
    model.report_load(0.3, stamp_ns=650 * MS)
    assert model.load_at(700 * MS) == 0.3


@pytest.mark.parametrize(
    ("value", "reason"),
    [(math.nan, "nan"), (1.5, "out_of_range"), (-0.1, "out_of_range"), (math.inf, "out_of_range")],
)
def test_bad_loads_are_rejected_and_counted(value: float, reason: str) -> None:
    model = OnlineLatencyModel(constructed_table())
    model.report_load(0.4, stamp_ns=0)
    with pytest.raises(LoadValueError):
        model.report_load(value, stamp_ns=1)
    with pytest.raises(ValueError, match="expected a number in"):
        model.report_load(value, stamp_ns=2)
    assert model.rejected_loads[reason] == 2
    assert model.load_at(3) == 0.4  # the last valid reading stays in force


def test_load_ignored_when_disabled() -> None:
    model = OnlineLatencyModel(constructed_table(), DeadlineConfig(use_load=False))
    model.report_load(0.9, stamp_ns=0)
    assert model.load_at(1) is None


def test_load_step_up_and_down_returns_to_the_idle_times_at_once() -> None:
    """Frames under a reported load never move what is predicted at no load."""
    model = OnlineLatencyModel(constructed_table(), DeadlineConfig(load_beta=1.0))
    for _ in range(30):
        run_frame(model, 0.0, 1.0)
    idle = model.begin_frame(0.0).predict_ms(frame_keys())
    for _ in range(30):
        run_frame(model, 0.9, 3.0)
    after = [run_frame(model, 0.0, 1.0) for _ in range(3)]
    assert after[0] == pytest.approx(table_total(), rel=0.02)  # the very first frame back
    assert model.begin_frame(0.0).predict_ms(frame_keys()) == pytest.approx(idle, rel=0.02)


@pytest.mark.parametrize("load", [0.3, 0.7, 0.9, 1.0])
def test_a_reported_load_never_predicts_faster_than_measured_there(load: float) -> None:
    """Six times slower at a load the prior expects far less of: learnt within a few frames."""
    model = OnlineLatencyModel(constructed_table(), DeadlineConfig(load_beta=0.5))
    for _ in range(20):
        run_frame(model, 0.0, 1.0)
    for _ in range(6):
        run_frame(model, load, 6.0)
    mean = model.begin_frame(load).predict_ms(frame_keys(), quantile=False)
    assert mean >= 0.95 * 6.0 * table_total()
    # and no higher load is predicted faster than that one
    assert model.factor(min(load + 0.1, 1.0)) >= model.factor(load)


def test_regimes_learn_apart() -> None:
    """Measurements on one thread count never move the predictions of another."""
    model = OnlineLatencyModel(constructed_table())
    model.set_regime_prior(1, 1.6)
    assert model.factor(None, regime=1) == pytest.approx(1.6)
    for _ in range(20):
        frame = model.begin_frame(None, regime=1)
        for key in frame_keys():
            frame.record(key, model.table.base_ms(key) * 2.5)  # type: ignore[operator]
        model.end_frame(frame)
    assert model.factor(None, regime=1) == pytest.approx(2.5, rel=0.05)
    assert model.factor(None, regime=0) == pytest.approx(1.0)


def test_a_frame_caught_by_a_load_step_is_learnt_at_the_higher_load() -> None:
    model = OnlineLatencyModel(constructed_table(), DeadlineConfig(load_beta=1.0))
    frame = model.begin_frame(0.0)
    for key in frame_keys():
        frame.record(key, model.table.base_ms(key) * 4.0)  # type: ignore[operator]
    model.end_frame(frame, load=1.0)
    assert model.factor(0.0) == pytest.approx(1.0)
    assert model.factor(1.0) > 2.0


def test_typical_factor_is_unbiased_where_the_planning_factor_is_cautious() -> None:
    """Times alternating 1x and 2x: planning follows the slow frames, the typical the mean."""
    model = OnlineLatencyModel(constructed_table())
    for i in range(200):
        run_frame(model, None, 2.0 if i % 2 else 1.0)
    assert model.factor(None, typical=True) == pytest.approx(1.5, rel=0.1)
    assert model.factor(None) > 1.6
    frame = model.begin_frame(None)
    assert frame.typical_ms(frame_keys()) == pytest.approx(
        model.factor(None, typical=True) * table_total()
    )


def test_typical_factor_rests_on_measured_loads_only() -> None:
    """A cautious prior at loads no frame ran at must not make the typical factor pessimistic."""
    model = OnlineLatencyModel(constructed_table(), DeadlineConfig(load_beta=5.0))
    for _ in range(40):
        run_frame(model, 0.0, 1.0)
        run_frame(model, 1.0, 1.5)
    assert model.factor(0.5) > 2.0  # planning: the prior at 0.4 and 0.6 still counts
    assert model.factor(0.5, typical=True) == pytest.approx(1.25, rel=0.05)
    assert model.factor(1.0, typical=True) == pytest.approx(1.5, rel=0.05)


def test_an_old_outlier_at_a_lower_load_stops_bounding_higher_loads() -> None:
    """One slow frame at no load, then a long run at high load: the outlier fades from there."""
    model = OnlineLatencyModel(constructed_table(), DeadlineConfig(load_beta=1.0))
    for _ in range(20):
        run_frame(model, 0.0, 1.0)
        run_frame(model, 0.9, 1.5)
    run_frame(model, 0.0, 8.0)
    assert model.factor(0.9) >= 4.0  # recent: it bounds what higher loads are predicted at
    assert model.factor(0.9, typical=True) == pytest.approx(1.5, rel=0.1)  # never floored
    for _ in range(150):
        run_frame(model, 0.9, 1.5)
    assert model.factor(0.9) == pytest.approx(1.5, rel=0.1)
