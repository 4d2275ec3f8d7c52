"""Pure parts of the synthetic camera: load schedule and camera model."""

from __future__ import annotations

import pytest

from mess_ros.ros.errors import RosError
from mess_ros.ros.synthetic_camera import (
    LoadStep,
    load_at,
    parse_load_schedule,
    pinhole_camera_info,
)


def test_load_schedule() -> None:
    schedule = parse_load_schedule("10:0.8, 0:0.1,20:0")
    assert schedule == [LoadStep(0.0, 0.1), LoadStep(10.0, 0.8), LoadStep(20.0, 0.0)]
    assert load_at(schedule, 5.0) == 0.1
    assert load_at(schedule, 10.0) == 0.8
    assert load_at(schedule, 99.0) == 0.0
    assert load_at(parse_load_schedule("3:0.5"), 1.0) is None
    assert parse_load_schedule("") == []


@pytest.mark.parametrize("text", ["5", "a:0.5", "1:1.5", "-1:0.2", "1:nan"])
def test_bad_load_schedule(text: str) -> None:
    with pytest.raises(RosError, match="load schedule entry"):
        parse_load_schedule(text)


def test_pinhole_camera_info() -> None:
    info = pinhole_camera_info(480, 640, "cam")
    assert (info.width, info.height) == (640, 480)
    assert info.k[0] == pytest.approx(320.0)  # 90 degree horizontal field of view
    assert info.k[2] == pytest.approx(319.5)
    assert info.header.frame_id == "cam"
