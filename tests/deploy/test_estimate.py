"""Estimated latency tables: the work counted per stage, the roofline, the marking, the CLI."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest

from mess_ros.common.exits import FINAL_EXIT
from mess_ros.common.latency_table import LatencyTable
from mess_ros.common.metrics import mean_iou
from mess_ros.config import parameter_file
from mess_ros.deploy.cli import configure_main, profile_main
from mess_ros.deploy.errors import DeployError
from mess_ros.deploy.estimate import (
    DeviceFigures,
    StageWork,
    estimate_latency_table,
    measure_work,
    stage_ms,
)
from mess_ros.model import model_complexity
from mess_ros.runtime.engine import SegmentationEngine
from tests.deploy.conftest import INPUT_HW, TinyRun

ORIN = DeviceFigures("Orin-class test GPU", gmacs_per_s=5000.0, kernel_overhead_us=20.0)
# Compute-bound on purpose: no launch cost, memory far faster than arithmetic.
COMPUTE_ONLY = DeviceFigures("compute only", 1.0, memory_gb_per_s=1e12, kernel_overhead_us=0.0)


def test_work_counts_the_operators_of_each_stage(tiny_run: TinyRun) -> None:
    model = tiny_run.checkpoint.model
    work = measure_work(model, INPUT_HW, host_copy=False)
    macs = {(r.kind, r.name): r.macs for r in model_complexity(model, INPUT_HW)}
    assert list(work.segments) == model.block_points
    assert set(work.heads) == set(work.outputs) == set(model.exit_ids)
    for point, stage in work.segments.items():
        assert stage.macs == macs[("segment", point)] > 0
    for exit_id, stage in work.heads.items():
        assert stage.macs == macs[("head", exit_id)] > 0
    # Stem (conv, bn, relu, max pool) + basic block (conv, bn, relu, conv, bn, add, relu).
    assert work.segments["layer1_0"].kernels == 4 + 7
    # A block that changes width adds its projection shortcut (conv, bn).
    assert work.segments["layer2_0"].kernels == 7 + 2
    # A linear head is one conv, then the confidence: a handful of small kernels, no MACs.
    linear = work.heads["layer2_0:linear"]
    fcn = work.heads["layer2_0:fcn_c8_k1_d1"]
    assert 1 < linear.kernels < fcn.kernels
    assert linear.macs < fcn.macs and linear.bytes_moved < fcn.bytes_moved
    # Outputs do no MACs; their traffic grows with the logits' resolution, read once upsampled.
    classes = model.spec.num_classes
    pixels = INPUT_HW[0] * INPUT_HW[1]
    for stage in work.outputs.values():
        assert stage.macs == 0
        assert stage.bytes_moved >= 2 * classes * pixels * 4  # upsampled logits written and read
    copied = measure_work(model, INPUT_HW, host_copy=True).outputs[FINAL_EXIT]
    assert copied.kernels == work.outputs[FINAL_EXIT].kernels + 1
    assert copied.bytes_moved == work.outputs[FINAL_EXIT].bytes_moved + pixels


def test_stage_time_is_monotone_in_the_work() -> None:
    figures = DeviceFigures("d", 100.0, memory_gb_per_s=10.0, kernel_overhead_us=5.0)
    grid = [0, 10**5, 10**6, 10**7, 10**8]
    for macs, more in itertools.pairwise(grid):
        for bytes_moved, kernels in itertools.product(grid, (0, 3)):
            low = stage_ms(StageWork(macs, bytes_moved, kernels), figures)
            high = stage_ms(StageWork(more, bytes_moved, kernels), figures)
            assert high >= low
            assert stage_ms(StageWork(macs, bytes_moved, kernels + 1), figures) > low
    assert stage_ms(StageWork(10**8, 0, 0), figures) == pytest.approx(1.0)  # 1e8 / 1e11 s
    assert stage_ms(StageWork(0, 10**8, 0), figures) == pytest.approx(10.0)  # 1e8 / 1e10 s
    assert stage_ms(StageWork(0, 0, 4), figures) == pytest.approx(0.02)


def test_estimated_times_follow_the_macs(tiny_run: TinyRun) -> None:
    checkpoint = tiny_run.checkpoint
    table = estimate_latency_table(checkpoint, INPUT_HW, COMPUTE_ONLY)
    rows = model_complexity(checkpoint.model, INPUT_HW)
    estimated = {**table.segments, **table.heads}
    for row in rows:
        assert estimated[row.name].mean_ms == pytest.approx(row.macs / 1e9 * 1e3)
    by_macs = sorted(rows, key=lambda r: r.macs)
    times = [estimated[r.name].mean_ms for r in by_macs]
    assert times == sorted(times)
    faster = estimate_latency_table(
        checkpoint, INPUT_HW, dataclasses.replace(COMPUTE_ONLY, gmacs_per_s=2.0)
    )
    assert faster.path_ms([], FINAL_EXIT) == pytest.approx(table.path_ms([], FINAL_EXIT) / 2)


def test_table_is_marked_estimated(tiny_run: TinyRun, tmp_path: Path) -> None:
    table = estimate_latency_table(tiny_run.checkpoint, INPUT_HW, ORIN, quantile=0.95)
    assert table.model_fingerprint == tiny_run.checkpoint.fingerprint
    assert table.device == "cuda" and table.input_hw == INPUT_HW
    assert table.device_name.startswith("Orin-class test GPU (estimated: 5000 GMAC/s")
    assert "roofline" in table.notes["estimated"] and "20 us" in table.notes["estimated"]
    assert table.notes["estimate"]["gmacs_per_s"] == 5000.0
    assert table.versions["estimator"].startswith("mess_ros roofline")
    table.check_covers(
        tiny_run.checkpoint.model.block_points, tiny_run.checkpoint.model.exit_ids, ""
    )
    for stat in [*table.segments.values(), *table.heads.values(), *table.outputs.values()]:
        assert stat.mean_ms > 0 and stat.count == 0  # nothing was timed
        assert stat.p90_ms == pytest.approx(stat.mean_ms * ORIN.jitter)
    # Launch overhead dominates such a small network: at least 20 us per counted kernel.
    kernels = table.notes["work"]["segments"]["layer1_0"]["kernels"]
    assert table.segments["layer1_0"].mean_ms >= kernels * 0.02
    path = tmp_path / "estimated.json"
    table.save(path)
    loaded = LatencyTable.load(path)
    assert loaded.notes["estimated"] == table.notes["estimated"]
    assert loaded.path_ms([], FINAL_EXIT) == pytest.approx(table.path_ms([], FINAL_EXIT))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"gmacs_per_s": 0.0}, "throughput"),
        ({"memory_gb_per_s": float("nan")}, "memory bandwidth"),
        ({"kernel_overhead_us": -1.0}, "kernel overhead"),
        ({"jitter": 0.9}, "jitter"),
        ({"name": " "}, "needs a name"),
        ({"device": "tpu"}, "device 'tpu'"),
        ({"device": "cpu", "precision": "fp16"}, "CUDA devices only"),
    ],
)
def test_impossible_figures_are_refused(
    tiny_run: TinyRun, change: dict[str, object], message: str
) -> None:
    figures = dataclasses.replace(ORIN, **change)  # type: ignore[arg-type]
    with pytest.raises(DeployError, match=message):
        estimate_latency_table(tiny_run.checkpoint, INPUT_HW, figures)


def test_estimate_cli_feeds_configure_and_marks_the_robot_file(
    tiny_run: TinyRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table_path = tmp_path / "gpu.json"
    argv = ["--estimate", "--device-name", "Orin-class", "--gmacs-per-s", "5000"]
    argv += ["--kernel-overhead-us", "20", "--model", str(tiny_run.checkpoint_path)]
    argv += ["--input-size", "32x64", "--out", str(table_path)]
    assert profile_main(argv) == 0
    assert "ESTIMATED, not measured: roofline model for Orin-class" in capsys.readouterr().out
    table = LatencyTable.load(table_path)
    assert table.device == "cuda" and table.notes["estimate"]["memory_gb_per_s"] == 100.0

    out = tmp_path / "robots"
    final = tiny_run.cache.confusion[:, tiny_run.cache.exit_index(FINAL_EXIT)].sum(axis=0)
    floor = 0.5 * mean_iou(final)  # reachable: the final exit alone exceeds it
    rc = configure_main(
        [
            *("--run", str(tiny_run.root), "--latency-table", str(table_path)),
            *("--min-miou", str(floor), "--robot", "gpu", "--out-dir", str(out)),
            *("--pixel-thresholds", "0.5,0.9", "--image-thresholds", "0.3,0.8", "--no-progress"),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    text = (out / "gpu.yaml").read_text()
    header = [line for line in text.splitlines() if line.startswith("# ESTIMATED")]
    assert header == [
        f"# ESTIMATED latencies, not measured on the robot: {table.notes['estimated']}"
    ]
    params = parameter_file.read(out / "gpu.yaml")
    assert params.engine.device == "cuda"
    assert (params.engine.input_height, params.engine.input_width) == INPUT_HW
    # The file runs here too: without a GPU the engine falls back to the CPU and says so.
    engine = SegmentationEngine(params)
    assert engine.latency_table.notes["estimated"] == table.notes["estimated"]
    image = np.zeros((*INPUT_HW, 3), dtype=np.uint8)
    assert engine.infer(image).mask.shape == INPUT_HW


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--estimate", "--device-name", "x"], "--estimate needs --gmacs-per-s"),
        (["--estimate", "--gmacs-per-s", "5", "--device-name", "x", "--repeats", "3"], "--repeats"),
        (["--gmacs-per-s", "5"], "describe an estimate; add --estimate"),
        (["--estimate", "--gmacs-per-s", "5", "--device-name", "x", "--device", "gpu"], "'gpu'"),
    ],
)
def test_estimate_cli_refuses_mixed_modes(
    tiny_run: TinyRun,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    argv = ["--model", str(tiny_run.checkpoint_path), "--input-size", "32x64"]
    out = tmp_path / "t.json"
    assert profile_main([*argv, "--out", str(out), *extra]) == 1
    assert message in capsys.readouterr().err
    assert not out.exists()
