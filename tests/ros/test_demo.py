"""mess_demo end to end on the tiny model, and its report from recorded frames."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mess_ros.config import SegmentationConfig, parameter_file
from mess_ros.ros.demo_report import (
    DemoSummary,
    FrameRecord,
    format_summary,
    summarize_phase,
    write_report,
)
from tests.ros.conftest import next_domain_id, ros_env


def record(
    t_s: float,
    phase: str,
    exit_id: str,
    index: int,
    ms: float,
    met: bool | None,
    *,
    infeasible: bool = False,
) -> FrameRecord:
    return FrameRecord(
        t_s=t_s,
        phase=phase,
        exit_id=exit_id,
        exit_index=index,
        num_exits=3,
        measured_ms=ms,
        end_to_end_ms=ms + 1.0,
        predicted_ms=ms,
        met_deadline=met,
        load=0.5 if phase == "loaded" else 0.0,
        dropped=False,
        infeasible=infeasible,
    )


def test_phase_statistics() -> None:
    records = [record(i * 0.1, "idle", "final", 2, 10.0 + i, True) for i in range(10)]
    records.append(record(1.0, "idle", "layer1_0:linear", 0, 5.0, False))
    confusion = np.array([[8, 2], [0, 10]], dtype=np.int64)
    phase = summarize_phase("idle", records, confusion, scored_masks=11)
    assert phase.masks == 11
    assert phase.exits == {"final": 10, "layer1_0:linear": 1}
    assert phase.latency_p50_ms == pytest.approx(14.0)
    assert phase.deadline_misses == 1
    assert phase.deadline_frames == 11
    assert phase.miss_rate == pytest.approx(1 / 11)
    # IoU class 0: 8 / (8 + 2 + 0) = 0.8; class 1: 10 / (10 + 2) = 0.833...
    assert phase.miou == pytest.approx((0.8 + 10 / 12) / 2)
    assert phase.mean_load == 0.0
    assert (phase.infeasible_misses, phase.avoidable_misses) == (0, 1)
    empty = summarize_phase("loaded", [], None, 0)
    assert empty.masks == 0
    assert math.isnan(empty.miou)


def test_misses_split_into_infeasible_and_avoidable() -> None:
    records = [
        record(0.0, "loaded", "final", 2, 30.0, False),
        record(0.1, "loaded", "layer1_0:linear", 0, 30.0, False, infeasible=True),
        record(0.2, "loaded", "layer1_0:linear", 0, 5.0, True, infeasible=True),
        record(0.3, "loaded", "final", 2, 9.0, True),
    ]
    phase = summarize_phase("loaded", records, None, 0)
    assert phase.deadline_misses == 2
    assert (phase.infeasible_misses, phase.avoidable_misses) == (1, 1)


def test_report_files(tmp_path: Path) -> None:
    idle = [record(i * 0.1, "idle", "final", 2, 10.0, True) for i in range(5)]
    loaded = [record(1 + i * 0.1, "loaded", "layer1_0:linear", 0, 6.0, True) for i in range(5)]
    phases = [
        summarize_phase("idle", idle, None, 0),
        summarize_phase("loaded", loaded, None, 0),
    ]
    summary = DemoSummary(
        duration_s=2.0,
        rate_hz=5.0,
        frames_published=12,
        masks_received=10,
        warmup_masks=7,
        deadline_ms=12.0,
        deadline_source="test",
        load_started_s=1.0,
        load_processes=1,
        policy="deadline",
        device="cpu",
        phases=phases,
        overall=summarize_phase("all", idle + loaded, None, 0),
    )
    text = format_summary(summary)
    assert "layer1_0:linear 5" in text
    assert "not counted: 7 masks of the warm-up" in text
    written = write_report(tmp_path, summary, idle + loaded, [(0.0, 0.0), (1.0, 0.5)])
    assert {p.name for p in written} == {"summary.json", "report.md", "timeline.png", "exits.png"}
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["phases"][1]["exits"] == {"layer1_0:linear": 5}
    assert data["overall"]["miou"] is None  # NaN is not JSON
    assert (tmp_path / "timeline.png").read_bytes()[:4] == b"\x89PNG"
    assert "![timeline.png](timeline.png)" in (tmp_path / "report.md").read_text()


@pytest.mark.ros
@pytest.mark.parametrize("cameras", [1, 2])
def test_demo_runs_end_to_end(tmp_path: Path, tiny_checkpoint: Path, cameras: int) -> None:
    out = tmp_path / "demo"
    # config/default.yaml names exits of the bundled model; the tiny model has others.
    params_file = tmp_path / "params.yaml"
    parameter_file.write(SegmentationConfig(), params_file)
    argv = [
        sys.executable,
        "-m",
        "mess_ros.ros.demo",
        "--params-file", str(params_file),
        "--duration", "6",
        "--warmup", "2",
        "--rate", "10",
        "--height", "60",
        "--width", "80",
        "--model", str(tiny_checkpoint),
        "--set", "engine.input_height:=32",
        "--set", "engine.input_width:=64",
        "--set", "engine.profile_repeats:=2",
        "--set", "engine.num_threads:=1",
        "--policy", "deadline",
        "--load-processes", "1",
        "--out", str(out),
        "--domain-id", str(next_domain_id()),
        "--cameras", str(cameras),
    ]  # fmt: skip
    result = subprocess.run(
        argv, env=ros_env(0), capture_output=True, text=True, timeout=240, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "mIoU" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_published"] > 20
    assert summary["masks_received"] > 10
    assert summary["deadline_ms"] > 0
    assert summary["warmup_masks"] > 0
    for phase in summary["phases"]:
        assert phase["deadline_frames"] > 0
        assert phase["infeasible_misses"] + phase["avoidable_misses"] == phase["deadline_misses"]
    assert summary["policy"] == "deadline"
    assert [p["name"] for p in summary["phases"]] == ["idle", "loaded"]
    assert summary["overall"]["scored_masks"] > 0
    assert 0.0 <= summary["overall"]["miou"] <= 1.0
    # Every process the demo started was stopped and reaped; node and camera cleanly.
    codes = summary["exit_codes"]
    camera_processes = (
        {f"synthetic_camera_cam{i}" for i in range(cameras)}
        if cameras > 1
        else {"synthetic_camera"}
    )
    assert set(codes) == {"segmentation_node", "cpu_load_0", *camera_processes}
    assert codes["segmentation_node"] == 0, (out / "logs" / "node.log").read_text()
    assert all(codes[name] == 0 for name in camera_processes)
    # With several cameras, each is summarised alone too, and every one was served.
    per_camera = summary["cameras"]
    assert [c["name"] for c in per_camera] == ([f"cam{i}" for i in range(cameras)] * (cameras > 1))
    assert all(c["masks"] > 0 and c["scored_masks"] > 0 for c in per_camera)
    for name in ("report.md", "timeline.png", "exits.png", "logs/node.log"):
        assert (out / name).is_file(), name
