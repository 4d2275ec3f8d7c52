"""Live replay through the segmentation node over DDS, against the offline evaluation.

Every node runs on this host only (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``)
in a domain of its own in 1..101, and is stopped by PID whatever the test
outcome (the tool's own ``finally``, checked here through the process table).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest

pytest.importorskip("rclpy")

from mess_ros.config import SegmentationConfig, parameter_file
from mess_ros.data.labels import SYNTHETIC_LABELS
from mess_ros.data.sample import Sample
from mess_ros.eval.bag_writer import BagWriteOptions, write_bag
from mess_ros.eval.errors import EvalError, LiveError
from mess_ros.eval.messages import COMPRESSED_IMAGE_TYPE
from mess_ros.eval.offline import OfflineOptions, evaluate_offline
from mess_ros.eval.results import matched_miou
from mess_ros.eval.runs import build_runs
from mess_ros.ros.evaluate import main as evaluate_main
from mess_ros.ros.live_replay import LiveOptions, evaluate_live
from mess_ros.ros.processes import start_node
from tests.eval.builders import EARLY_EXIT, NUM_FRAMES, RATE_HZ
from tests.eval.conftest import base_config, checkpoint_path, samples, small_bag
from tests.ros.conftest import NODE_PROGRAM, next_domain_id

# The offline evaluation's fixtures: the same model, configuration and bag on both sides.
__all__ = ["base_config", "checkpoint_path", "samples", "small_bag"]

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _ros_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local discovery for this process and the nodes; the nodes import this checkout."""
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    leftovers = [p for p in psutil.Process().children(recursive=True) if p.is_running()]
    assert not [p for p in leftovers if p.status() != psutil.STATUS_ZOMBIE], leftovers


def options(tmp_path: Path, **kw: object) -> LiveOptions:
    values: dict[str, object] = {
        "node_command": NODE_PROGRAM,
        "domain_id": next_domain_id(),
        "progress": False,
        "startup_timeout_s": 90.0,
        "settle_s": 3.0,
        "log_dir": tmp_path / "logs",
    }
    values.update(kw)
    return LiveOptions(**values)  # type: ignore[arg-type]


def test_offline_and_live_give_the_same_miou_for_the_same_frames(
    tmp_path: Path, small_bag: Path, base_config: SegmentationConfig
) -> None:
    base_config.policy.image_thresholds = [0.0]  # "confidence" always stops at the first exit
    specs = build_runs(base_config, ["final", "confidence"])
    offline = evaluate_offline(small_bag, specs, OfflineOptions(progress=False))
    live = evaluate_live(small_bag, specs, SYNTHETIC_LABELS, options(tmp_path))
    assert live.mode == "live"
    for offline_run, live_run in zip(offline.runs, live.runs, strict=True):
        mine, theirs, count = matched_miou(offline_run, live_run)
        assert count == NUM_FRAMES  # at 20 Hz the node answers every frame
        assert theirs == pytest.approx(mine, abs=1e-12)
        summary = live_run.summary()
        assert summary.processed == NUM_FRAMES and summary.dropped == 0
        assert all(r.latency_ms is not None and r.latency_ms > 0 for r in live_run.records)
        assert [r.index for r in live_run.records] == list(range(NUM_FRAMES))
    assert live.runs[0].summary().exit_usage == {"final": NUM_FRAMES}
    assert live.runs[1].summary().exit_usage == {EARLY_EXIT: NUM_FRAMES}
    for offline_example, live_example in zip(offline.examples, live.examples, strict=True):
        assert offline_example.index == live_example.index
        for name in ("final", "confidence"):
            np.testing.assert_array_equal(offline_example.masks[name], live_example.masks[name])
    assert (tmp_path / "logs" / "params_final.yaml").is_file()


def test_compressed_frames_to_a_renamed_node_in_a_namespace(
    tmp_path: Path, samples: list[Sample], small_bag: Path, base_config: SegmentationConfig
) -> None:
    """PNG frames go to ``image/compressed`` of a node remapped into another name and namespace."""
    bag = tmp_path / "png.mcap"
    write_bag(bag, samples, BagWriteOptions(rate_hz=RATE_HZ, image_format="png"))
    specs = build_runs(base_config)
    offline = evaluate_offline(small_bag, specs, OfflineOptions(progress=False))
    live_options = options(tmp_path, namespace="/robot_1/", node_name="segmenter")
    live = evaluate_live(bag, specs, SYNTHETIC_LABELS, live_options)
    assert live.topics["camera_type"] == COMPRESSED_IMAGE_TYPE
    (run,) = live.runs
    assert run.summary().processed == NUM_FRAMES
    mine, theirs, count = matched_miou(offline.runs[0], run)
    assert count == NUM_FRAMES and theirs == pytest.approx(mine, abs=1e-12)
    log = (tmp_path / "logs" / "node_final.log").read_text()
    assert "[robot_1.segmenter]" in log and "/robot_1/image/compressed" in log


def test_clock_mode_keeps_recorded_stamps_on_simulated_time(
    tmp_path: Path, small_bag: Path, base_config: SegmentationConfig
) -> None:
    """With /clock the node's deadline counts from the recorded stamps, never from reception."""
    specs = build_runs(base_config, ["final@2000"])
    live = evaluate_live(small_bag, specs, SYNTHETIC_LABELS, options(tmp_path, clock=True))
    (run,) = live.runs
    summary = run.summary()
    assert summary.processed == NUM_FRAMES
    assert summary.deadline_misses == 0
    start = run.records[0].stamp_ns
    assert [r.stamp_ns - start for r in run.records] == [i * 50_000_000 for i in range(8)]
    log = (tmp_path / "logs" / "node_final_2000.log").read_text()
    assert "deadline counts from reception" not in log


def test_running_node_gets_each_configuration_through_its_parameters(
    tmp_path: Path, small_bag: Path, base_config: SegmentationConfig
) -> None:
    base_config.policy.image_thresholds = [0.0]
    base_config.node.image_qos_reliability = "reliable"
    params = tmp_path / "node.yaml"
    parameter_file.write(base_config, params)
    live_options = options(tmp_path, start_node=False)
    assert live_options.domain_id is not None
    (tmp_path / "logs").mkdir()
    node = start_node(params, live_options.domain_id, tmp_path / "node.log")
    try:
        specs = build_runs(base_config, ["confidence", "final"])
        live = evaluate_live(small_bag, specs, SYNTHETIC_LABELS, live_options)
    finally:
        node.stop()
    assert not node.alive()
    usage = [run.summary().exit_usage for run in live.runs]
    assert usage == [{EARLY_EXIT: NUM_FRAMES}, {"final": NUM_FRAMES}]


def test_node_that_cannot_start_is_reported_with_its_log_and_stopped(
    tmp_path: Path, small_bag: Path, base_config: SegmentationConfig
) -> None:
    not_a_model = tmp_path / "broken.pt"
    not_a_model.write_bytes(b"not a checkpoint")
    base_config.engine.model_path = str(not_a_model)
    specs = build_runs(base_config)
    expected = r"(?s)node exited with status 1.*cannot read checkpoint .*broken\.pt"
    with pytest.raises(LiveError, match=expected):
        evaluate_live(small_bag, specs, SYNTHETIC_LABELS, options(tmp_path))


def test_bad_options_are_refused_before_anything_starts(small_bag: Path) -> None:
    specs = build_runs(SegmentationConfig())
    with pytest.raises(EvalError, match="playback rate"):
        evaluate_live(small_bag, specs, SYNTHETIC_LABELS, LiveOptions(rate=0.0))
    with pytest.raises(EvalError, match="ROS_DOMAIN_ID"):
        evaluate_live(small_bag, specs, SYNTHETIC_LABELS, LiveOptions(domain_id=300))


def test_evaluate_command_live(
    tmp_path: Path, small_bag: Path, base_config: SegmentationConfig, checkpoint_path: Path
) -> None:
    params = tmp_path / "robot.yaml"
    parameter_file.write(base_config, params)
    out = tmp_path / "report"
    argv = [str(small_bag), "--model", str(checkpoint_path), "--params-file", str(params)]
    argv += ["--live", "--domain-id", str(next_domain_id()), "--max-frames", "4", "--rate", "2"]
    assert evaluate_main([*argv, "--quiet", "--out", str(out)]) == 0
    data = json.loads((out / "report.json").read_text())
    assert data["mode"] == "live" and data["settings"]["rate"] == 2.0
    (run,) = data["runs"]
    assert run["summary"]["frames"] == 4 and run["summary"]["processed"] == 4
    assert (out / "node_logs" / "node_final.log").is_file()
