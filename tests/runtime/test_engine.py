"""The engine on a tiny random model saved as a real checkpoint."""

from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch

from mess_ros.common.errors import LatencyTableError
from mess_ros.common.latency_table import LatencyTable
from mess_ros.config import ConfigError, SegmentationConfig
from mess_ros.data.transforms import normalize_image
from mess_ros.model import Checkpoint, logits_to_mask, prune_checkpoint
from mess_ros.runtime.engine import (
    DEFAULT_MODEL_FILE,
    SegmentationEngine,
    model_directories,
    resolve_model_path,
    resolve_package_file,
)
from mess_ros.runtime.errors import EngineError, LoadValueError
from tests.runtime.conftest import ALL_EXITS, EXITS, INPUT_HW, constructed_table

MS = 1_000_000


def make_config(**policy: object) -> SegmentationConfig:
    config = SegmentationConfig()
    config.engine.input_height, config.engine.input_width = INPUT_HW
    config.engine.warmup_frames = 1
    config.engine.profile_repeats = 2
    # One thread: the tiny model gains nothing from more, and timings stay steady on a busy machine.
    config.engine.num_threads = 1
    for key, value in policy.items():
        setattr(config.policy, key, value)
    return config


def make_engine(
    checkpoint: Checkpoint, table: LatencyTable | None = None, **policy: object
) -> SegmentationEngine:
    return SegmentationEngine(make_config(**policy), checkpoint, latency_table=table)


def full_forward_masks(
    checkpoint: Checkpoint, image: npt.NDArray[np.uint8]
) -> dict[str, npt.NDArray[np.uint8]]:
    """Every exit's mask at the frame size from the model's ordinary (training) forward."""
    x = torch.from_numpy(normalize_image(image, INPUT_HW)).unsqueeze(0)
    with torch.inference_mode():
        logits = checkpoint.model(x)
    size = (image.shape[0], image.shape[1])
    return {e: logits_to_mask(v, size)[0].to(torch.uint8).numpy() for e, v in logits.items()}


@pytest.mark.parametrize("exit_id", ALL_EXITS)
def test_progressive_result_equals_full_forward(
    checkpoint: Checkpoint, image: npt.NDArray[np.uint8], exit_id: str
) -> None:
    engine = make_engine(checkpoint, name="fixed", fixed_exit=exit_id)
    result = engine.infer(image)
    expected = full_forward_masks(checkpoint, image)[exit_id]
    assert result.mask.shape == image.shape[:2] and result.mask.dtype == np.uint8
    assert np.array_equal(result.mask, expected)
    assert (result.exit_id, result.reason, result.dropped) == (exit_id, "fixed", False)
    assert result.exit_index == ALL_EXITS.index(exit_id) and result.num_exits == 4
    assert result.evaluated_exits == (exit_id,)  # no other head ran
    assert np.array_equal(
        engine.forward_to_exit(engine.preprocess(image), exit_id, image.shape[:2]), expected
    )


def test_result_carries_times_and_predictions(
    checkpoint: Checkpoint, image: npt.NDArray[np.uint8]
) -> None:
    engine = make_engine(checkpoint, name="final")
    result = engine.infer(image)
    keys = list(result.stage_times_ms)
    assert keys[0] == "preprocess"
    assert keys[1:5] == [
        "segment:layer1_0",
        "segment:layer2_0",
        "segment:layer3_0",
        "segment:layer4_0",
    ]
    assert keys[5:] == ["head:final", "output:final"]
    assert all(v >= 0 for v in result.stage_times_ms.values())
    assert result.measured_ms >= sum(result.stage_times_ms.values()) * 0.99
    assert result.predicted_ms > 0
    assert result.deadline_ms is None and result.met_deadline is None and result.load is None
    assert math.isnan(result.confidence)  # the final policy never computes one
    assert engine.labels.class_names == ("floor", "wall", "person", "box")


def test_confidence_policy_stops_early_or_late_by_threshold(
    checkpoint: Checkpoint, image: npt.NDArray[np.uint8]
) -> None:
    masks = full_forward_masks(checkpoint, image)
    eager = make_engine(checkpoint, name="confidence", pixel_threshold=0.0)
    result = eager.infer(image)
    assert result.exit_id == EXITS[0] and result.evaluated_exits == (EXITS[0],)
    assert result.confidence == 1.0 and result.reason.startswith("confident: 100.0%")
    assert np.array_equal(result.mask, masks[EXITS[0]])

    never = make_engine(checkpoint, name="confidence", pixel_threshold=1.0)
    result = never.infer(image)
    assert result.exit_id == "final" and result.evaluated_exits == ALL_EXITS
    assert result.reason == "final: no earlier exit was confident"
    assert np.array_equal(result.mask, masks["final"])


def test_confidence_equals_the_share_of_the_exit_taken(
    checkpoint: Checkpoint, image: npt.NDArray[np.uint8]
) -> None:
    from mess_ros.model import confident_share

    # An image threshold of 0 makes the confidence policy stop at the first active exit.
    only_exit = {"name": "confidence", "active_exits": [EXITS[1]], "image_thresholds": [0.0]}
    engine = make_engine(checkpoint, pixel_threshold=0.3, **only_exit)
    result = engine.infer(image)
    assert result.exit_id == EXITS[1]
    x = torch.from_numpy(normalize_image(image, INPUT_HW)).unsqueeze(0)
    with torch.inference_mode():
        logits = checkpoint.model(x)[EXITS[1]]
    assert result.confidence == pytest.approx(float(confident_share(logits, 0.3)[0]))
    # per-class thresholds: a class threshold of 0 makes every pixel of that class confident
    top1 = logits.argmax(dim=1)
    engine.reconfigure(make_config(class_thresholds=[0.0, 1.0, 1.0, 1.0], **only_exit))
    result = engine.infer(image)
    assert result.confidence == pytest.approx(float((top1 == 0).float().mean()))


def test_active_exit_subset(checkpoint: Checkpoint, image: npt.NDArray[np.uint8]) -> None:
    engine = make_engine(
        checkpoint, name="confidence", pixel_threshold=0.0, active_exits=[EXITS[2]]
    )
    result = engine.infer(image)
    assert engine.active_exits == (EXITS[2], "final")
    assert (result.exit_id, result.num_exits, result.exit_index) == (EXITS[2], 2, 0)
    assert np.array_equal(result.mask, full_forward_masks(checkpoint, image)[EXITS[2]])


def test_deadline_policy_with_tight_and_loose_deadlines(
    checkpoint: Checkpoint, image: npt.NDArray[np.uint8]
) -> None:
    # blocks "take" 100 ms each according to the table; the real tiny model is far faster
    table = constructed_table(100.0, 20.0, 10.0)
    engine = make_engine(checkpoint, table, name="deadline")
    now = time.monotonic_ns()
    tight = engine.infer(image, deadline_ns=now + 50 * MS)
    # the earliest exit alone is predicted at 130 ms (output scaled to the frame): 50 is too few
    assert tight.exit_id == EXITS[0] and tight.evaluated_exits == (EXITS[0],)
    assert tight.reason.startswith("infeasible: earliest exit needs 129.8 ms")
    assert tight.infeasible and tight.reason.endswith("earliest exit")
    assert tight.met_deadline is True and tight.deadline_ms == pytest.approx(50, abs=5)

    # 160 ms fits the earliest exit (130 ms) but not one more (195 ms at the table's spread)
    engine = make_engine(
        checkpoint, constructed_table(100.0, 20.0, 10.0, spread=0.5), name="deadline"
    )
    fits_one = engine.infer(image, deadline_ns=time.monotonic_ns() + 160 * MS)
    assert fits_one.exit_id == EXITS[0] and not fits_one.infeasible
    assert fits_one.reason.startswith("deadline: next exit needs")

    engine = make_engine(checkpoint, table, name="deadline")
    loose = engine.infer(image, deadline_ns=time.monotonic_ns() + 2000 * MS)
    assert loose.exit_id == "final" and loose.evaluated_exits == ("final",)


def test_deadline_from_config_counts_from_the_call(
    checkpoint: Checkpoint, image: npt.NDArray[np.uint8]
) -> None:
    config = make_config(name="hybrid", pixel_threshold=1.0)
    config.deadline.deadline_ms = 160.0
    engine = SegmentationEngine(
        config, checkpoint, latency_table=constructed_table(100.0, 20.0, 10.0, spread=0.5)
    )
    result = engine.infer(image)
    assert result.exit_id == EXITS[0]
    assert result.reason.startswith("deadline: next exit needs")
    assert result.deadline_ms == pytest.approx(160.0)


def test_late_frame_earliest_or_drop(checkpoint: Checkpoint, image: npt.NDArray[np.uint8]) -> None:
    engine = make_engine(checkpoint, name="final", late_frame_action="earliest")
    late = engine.infer(image, deadline_ns=time.monotonic_ns() - 5 * MS)
    assert late.exit_id == EXITS[0] and not late.dropped
    assert late.reason.startswith("late frame: deadline passed") and late.reason.endswith(
        "earliest exit"
    )
    assert late.met_deadline is False and late.deadline_ms is not None and late.deadline_ms < -4

    engine = make_engine(checkpoint, name="final", late_frame_action="drop")
    dropped = engine.infer(image, deadline_ns=time.monotonic_ns() - 5 * MS)
    assert dropped.dropped and dropped.exit_id == "" and dropped.exit_index == -1
    assert dropped.reason.endswith("dropped")
    assert dropped.mask.shape == image.shape[:2] and (dropped.mask == 255).all()


def test_load_reports(checkpoint: Checkpoint, image: npt.NDArray[np.uint8]) -> None:
    engine = make_engine(checkpoint, name="final")
    engine.report_load(0.7)
    assert engine.infer(image).load == 0.7
    engine.report_load(0.9, stamp_ns=time.monotonic_ns() - 5_000 * MS)  # 5 s old, timeout 1 s
    assert engine.infer(image).load is None
    assert engine.rejected_loads["stale"] == 1
    # deadlines on another clock (ROS time) do not age load readings taken on the engine's
    engine.report_load(0.4)
    result = engine.infer(image, time.time_ns() + 1000 * MS, now_ns=time.time_ns)
    assert result.load == 0.4 and result.met_deadline is True
    for bad in (math.nan, 2.0, -1.0):
        with pytest.raises(LoadValueError):
            engine.report_load(bad)
    assert engine.rejected_loads == {"nan": 1, "out_of_range": 2, "stale": 1}


def test_reported_load_changes_the_next_decision(
    checkpoint: Checkpoint, image: npt.NDArray[np.uint8]
) -> None:
    """A reported load changes the exit of the very next frame.

    Each step to the next exit (block + head + output) is predicted at about 133 ms with no
    load and twice that at full load (initial beta 1), so a 200 ms deadline lets the deadline
    policy go on at no load (the real tiny model takes far less) but not at full load.
    """
    table = constructed_table(100.0, 20.0, 10.0)
    engine = make_engine(checkpoint, table, name="deadline")
    deadline_ms = 200.0
    engine.report_load(0.0)
    assert engine.infer(image, time.monotonic_ns() + int(deadline_ms * MS)).exit_id == "final"
    engine = make_engine(checkpoint, table, name="deadline")
    engine.report_load(1.0)
    result = engine.infer(image, time.monotonic_ns() + int(deadline_ms * MS))
    assert (result.exit_id, result.load) == (EXITS[0], 1.0)


def test_invalid_reconfigure_keeps_the_running_config(
    checkpoint: Checkpoint, image: npt.NDArray[np.uint8]
) -> None:
    engine = make_engine(checkpoint, name="confidence", pixel_threshold=0.0)
    before = engine.config
    bad_configs = []
    unknown_exit = make_config(name="confidence", active_exits=["layer9_0:linear"])
    bad_configs.append((unknown_exit, "policy.active_exits"))
    out_of_range = make_config(name="final")
    out_of_range.policy.pixel_threshold = 1.5
    bad_configs.append((out_of_range, "policy.pixel_threshold"))
    read_only = make_config(name="final")
    read_only.engine.device = "cuda"
    bad_configs.append((read_only, "engine.device"))
    too_many = make_config(name="final", image_thresholds=[0.5, 0.5])
    bad_configs.append((too_many, "policy.image_thresholds"))
    class_count = make_config(name="final", class_thresholds=[0.5, 0.5])
    bad_configs.append((class_count, "policy.class_thresholds"))
    for config, parameter in bad_configs:
        with pytest.raises(ConfigError, match=parameter.replace(".", r"\.")):
            engine.reconfigure(config)
        assert engine.config == before
    assert engine.infer(image).exit_id == EXITS[0]


def test_valid_reconfigure_applies_on_the_next_frame(
    checkpoint: Checkpoint, image: npt.NDArray[np.uint8]
) -> None:
    engine = make_engine(checkpoint, name="confidence", pixel_threshold=0.0)
    assert engine.infer(image).exit_id == EXITS[0]
    config = engine.config
    config.policy.name = "final"
    engine.reconfigure(config)
    assert engine.config.policy.name == "final"
    assert engine.infer(image).exit_id == "final"
    config.policy.name = "fixed"  # the engine holds its own copy
    assert engine.infer(image).exit_id == "final"


def test_reconfigure_from_another_thread_never_mixes_plans(
    checkpoint: Checkpoint, image: npt.NDArray[np.uint8]
) -> None:
    engine = make_engine(checkpoint, name="fixed", fixed_exit=EXITS[0])
    stop = threading.Event()

    def toggle() -> None:
        choices = [make_config(name="fixed", fixed_exit=e) for e in (EXITS[1], EXITS[0])]
        i = 0
        while not stop.is_set():
            engine.reconfigure(choices[i % 2])
            i += 1

    thread = threading.Thread(target=toggle)
    thread.start()
    try:
        results = [engine.infer(image) for _ in range(30)]
    finally:
        stop.set()
        thread.join()
    for result in results:
        assert result.exit_id in EXITS[:2]
        assert result.evaluated_exits == (result.exit_id,)  # one plan for the whole frame


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_fallback_warns_or_fails(
    checkpoint: Checkpoint, image: npt.NDArray[np.uint8], caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(name="final")
    config.engine.device = "cuda:0"
    config.engine.precision = "fp16"
    with caplog.at_level(logging.WARNING, logger="mess_ros.runtime"):
        engine = SegmentationEngine(config, checkpoint)
    assert engine.device == torch.device("cpu")
    assert any("CUDA is not available" in w and "CPU instead" in w for w in engine.warnings)
    assert "CUDA is not available" in caplog.text
    assert engine.infer(image).exit_id == "final"

    config.engine.require_cuda = True
    with pytest.raises(EngineError, match="require_cuda"):
        SegmentationEngine(config, checkpoint)


def test_latency_table_from_file_and_mismatch(checkpoint: Checkpoint, tmp_path: Path) -> None:
    path = tmp_path / "latency.json"
    constructed_table().save(path)
    config = make_config(name="final")
    config.engine.latency_table = str(path)
    engine = SegmentationEngine(config, checkpoint)
    assert engine.latency_table == constructed_table()
    assert any("weights" in w for w in engine.warnings)  # constructed fingerprint differs

    config.engine.input_width = 96
    with pytest.raises(LatencyTableError, match=r"measured at input 32x64.*runs at 32x96"):
        SegmentationEngine(config, checkpoint)
    table = constructed_table()
    del table.heads["layer1_0:linear"], table.outputs["layer1_0:linear"]
    with pytest.raises(LatencyTableError, match="no entry for exit"):
        make_engine(checkpoint, table)


def test_table_of_the_full_checkpoint_fits_its_pruned_copy(
    checkpoint: Checkpoint, checkpoint_path: Path, tmp_path: Path
) -> None:
    table = constructed_table()
    table.model_fingerprint = checkpoint.fingerprint
    pruned = prune_checkpoint(checkpoint_path, tmp_path / "pruned.pt", ["layer1_0:linear"])
    engine = make_engine(pruned, table)
    assert not any("weights" in w for w in engine.warnings)
    other = constructed_table()
    other.model_fingerprint = "0123456789abcdef"
    assert any("weights" in w for w in make_engine(pruned, other).warnings)


def test_self_profile_when_no_table(checkpoint: Checkpoint) -> None:
    engine = make_engine(checkpoint)
    assert list(engine.latency_table.heads) == list(ALL_EXITS)
    assert engine.latency_table.input_hw == INPUT_HW


def test_model_path_from_config(checkpoint_path: Path, image: npt.NDArray[np.uint8]) -> None:
    config = make_config(name="final")
    config.engine.model_path = str(checkpoint_path)
    engine = SegmentationEngine(config)
    assert engine.checkpoint.path == checkpoint_path
    assert engine.infer(image).exit_id == "final"
    assert resolve_model_path(str(checkpoint_path)) == checkpoint_path


def packaged_robot(checkpoint_path: Path, prefix: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``robot.pt`` installed in the models of an ament prefix; returns that models folder."""
    share = prefix / "share" / "mess_ros" / "models"
    share.mkdir(parents=True)
    (share / "robot.pt").write_bytes(checkpoint_path.read_bytes())
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    return share


def test_bare_file_names_are_looked_up_among_the_packaged_models(
    checkpoint_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    share = packaged_robot(checkpoint_path, tmp_path / "prefix", monkeypatch)
    monkeypatch.chdir(tmp_path)
    assert share in model_directories()
    assert resolve_model_path("robot.pt") == share / "robot.pt"
    # Empty selects the bundled model by its file name.
    bundled = resolve_model_path("")
    assert bundled.name == DEFAULT_MODEL_FILE and bundled.parent in model_directories()
    with pytest.raises(EngineError, match=r"engine\.latency_table 'nope\.json' was not found"):
        resolve_package_file("nope.json", "engine.latency_table")


def test_bad_images_are_rejected(checkpoint: Checkpoint) -> None:
    engine = make_engine(checkpoint, name="final")
    bad_images: list[npt.NDArray[Any]] = [
        np.zeros((10, 10), dtype=np.uint8),
        np.zeros((10, 10, 3), dtype=np.float32),
        np.zeros((0, 10, 3), dtype=np.uint8),
    ]
    for bad in bad_images:
        with pytest.raises(EngineError, match="image"):
            engine.infer(bad)


def test_deadline_is_judged_once_the_mask_is_delivered(
    checkpoint: Checkpoint, image: npt.NDArray[np.uint8]
) -> None:
    """Inference alone fits easily; a slow hand-over makes the frame late, and is learnt."""
    engine = make_engine(checkpoint, name="final")
    delivered: list[npt.NDArray[np.uint8]] = []

    def slow_deliver(mask: npt.NDArray[np.uint8]) -> None:
        time.sleep(0.06)
        delivered.append(mask)

    start = time.monotonic_ns()
    result = engine.infer(image, deadline_ns=start + 40 * MS, deliver=slow_deliver)
    assert len(delivered) == 1 and (delivered[0] == result.mask).all()
    assert result.measured_ms < 40.0  # the network was done in time ...
    assert result.met_deadline is False  # ... but the consumers got the mask too late
    assert result.done_ns - start >= 60 * MS
    key = next(k for k in result.stage_times_ms if k.startswith("deliver:"))
    assert key == "deliver:40x50" and result.stage_times_ms[key] >= 59.0
    # the hand-over is priced from now on: the earliest exit no longer fits 40 ms
    result = engine.infer(image, deadline_ns=time.monotonic_ns() + 40 * MS, deliver=slow_deliver)
    assert engine.latency_model.load_free_ms(key) >= 50.0
    engine.reconfigure(make_config(name="deadline"))
    planned = engine.infer(image, deadline_ns=time.monotonic_ns() + 40 * MS, deliver=slow_deliver)
    assert planned.infeasible and planned.reason.startswith("infeasible: earliest exit needs")


def test_infeasible_frames_follow_late_frame_action(
    checkpoint: Checkpoint, image: npt.NDArray[np.uint8]
) -> None:
    table = constructed_table(100.0, 20.0, 10.0)
    engine = make_engine(checkpoint, table, name="hybrid", late_frame_action="drop")
    result = engine.infer(image, deadline_ns=time.monotonic_ns() + 60 * MS)
    assert result.dropped and result.infeasible and result.met_deadline is False
    assert result.reason.startswith("infeasible: earliest exit needs") and not result.stage_times_ms
    # a policy that does not plan for deadlines runs as configured and simply misses
    engine = make_engine(checkpoint, table, name="final", late_frame_action="drop")
    result = engine.infer(image, deadline_ns=time.monotonic_ns() + 60 * MS)
    assert not result.dropped and not result.infeasible and result.exit_id == "final"


def test_threads_follow_a_contention_signal(
    checkpoint: Checkpoint, image: npt.NDArray[np.uint8]
) -> None:
    share: list[float | None] = [0.0]
    config = make_config(name="final")
    config.engine.num_threads = 2
    engine = SegmentationEngine(config, checkpoint, others_cpu_share=lambda: share[0])
    # one thread is priced apart from the start, from a measurement at warm-up
    assert engine.single_thread_slowdown > 0
    assert engine.latency_model.factor(None, regime=1) == pytest.approx(
        engine.single_thread_slowdown
    )
    assert engine.infer(image).threads == 2
    share[0] = 0.6  # another process takes more than a core
    busy = engine.infer(image)
    assert busy.threads == 1 and torch.get_num_threads() == 1
    assert (
        engine.last_thread_change is not None and "of 2 cores" in engine.last_thread_change.reason
    )
    share[0] = 0.0
    assert engine.infer(image).threads == 1  # cores must stay free for a while first
    time.sleep(1.1)
    assert engine.infer(image).threads == 2 and torch.get_num_threads() == 2
    assert engine.thread_changes == 2


def test_adaptive_threads_off_keeps_the_thread_count(
    checkpoint: Checkpoint, image: npt.NDArray[np.uint8]
) -> None:
    config = make_config(name="final")
    config.engine.num_threads = 2
    config.engine.adaptive_threads = False
    engine = SegmentationEngine(config, checkpoint, others_cpu_share=lambda: 1.0)
    assert [engine.infer(image).threads for _ in range(3)] == [2, 2, 2]


def test_a_stray_file_in_the_current_directory_never_replaces_a_packaged_one(
    checkpoint_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    share = packaged_robot(checkpoint_path, tmp_path / "prefix", monkeypatch)
    work = tmp_path / "work"
    work.mkdir()
    (work / "robot.pt").write_bytes(b"not a checkpoint")
    (work / "only_here.pt").write_bytes(b"not a checkpoint")
    monkeypatch.chdir(work)
    assert resolve_model_path("robot.pt") == share / "robot.pt"
    with pytest.raises(EngineError, match="give an absolute path"):
        resolve_model_path("only_here.pt")


def test_fixed_exit_must_be_an_exit_of_the_model_whatever_the_policy(
    checkpoint: Checkpoint,
) -> None:
    with pytest.raises(ConfigError, match=r"policy\.fixed_exit = 'layer9_9:nope'"):
        make_engine(checkpoint, name="confidence", fixed_exit="layer9_9:nope")
    engine = make_engine(checkpoint, name="confidence", fixed_exit=EXITS[0])
    with pytest.raises(ConfigError, match=r"policy\.fixed_exit"):
        engine.reconfigure(make_config(name="final", fixed_exit="layer9_9:nope"))


def test_a_planning_deadline_shapes_exits_but_not_the_judgement(
    checkpoint: Checkpoint, image: npt.NDArray[np.uint8]
) -> None:
    """Frames of other cameras waiting behind: exits plan for less, met is judged as before."""
    # Planned with 160 ms, the earliest exit (130 ms) fits, one more (at p90) does not.
    table = constructed_table(100.0, 20.0, 10.0, spread=0.5)
    engine = make_engine(checkpoint, table, name="deadline")
    # The earliest exit's path, output at the frame size, as the scheduler reserves it.
    assert engine.earliest_exit_ms(image.shape[:2]) == pytest.approx(129.8, abs=0.1)
    now = time.monotonic_ns()
    planned = engine.infer(image, deadline_ns=now + 2000 * MS, plan_deadline_ns=now + 160 * MS)
    assert planned.exit_id == EXITS[0] and planned.reason.startswith("deadline: next exit needs")
    assert planned.planned_ms == pytest.approx(160, abs=5)
    assert planned.deadline_ms == pytest.approx(2000, abs=5)
    assert planned.met_deadline is True and not planned.infeasible
    # A planning deadline below the earliest exit does not make a feasible frame infeasible.
    now = time.monotonic_ns()
    squeezed = engine.infer(image, deadline_ns=now + 2000 * MS, plan_deadline_ns=now + 50 * MS)
    assert squeezed.exit_id == EXITS[0] and not squeezed.infeasible
    # Without one, the frame's own deadline is planned for.
    alone = engine.infer(image, deadline_ns=time.monotonic_ns() + 2000 * MS)
    assert alone.exit_id == "final" and alone.planned_ms == pytest.approx(2000, abs=5)
