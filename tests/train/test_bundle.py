"""Bundling a run as the package's default model copies only consistent files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from mess_ros.model.checkpoint import load_checkpoint, save_checkpoint
from mess_ros.train.bundle import bundle_run, main
from mess_ros.train.calibration import CalibrationCache
from mess_ros.train.errors import TrainError
from tests.train.helpers import Runs


def test_bundle_ships_half_precision_weights_with_a_matching_cache(
    runs: Runs, tmp_path: Path
) -> None:
    out = tmp_path / "models"
    assert main([str(runs.straight), str(out), "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "default.pt",
        "default_calibration.npz",
        "default_metrics.json",
    ]
    stored = torch.load(out / "default.pt", weights_only=True)["state_dict"]
    floating = [t for t in stored.values() if t.is_floating_point()]
    assert floating and all(t.dtype == torch.float16 for t in floating)
    assert (out / "default.pt").stat().st_size < 0.6 * (
        runs.straight / "checkpoint.pt"
    ).stat().st_size

    shipped = load_checkpoint(out / "default.pt")
    assert shipped.weights_dtype == "float16"
    assert all(p.dtype == torch.float32 for p in shipped.model.parameters())
    cache = CalibrationCache.load(out / "default_calibration.npz")
    assert cache.checkpoint_fingerprint == shipped.fingerprint
    assert cache.exit_ids == shipped.model.exit_ids
    metrics = json.loads((out / "default_metrics.json").read_text(encoding="utf-8"))
    assert metrics["weights_dtype"] == "float16"
    assert shipped.metrics["exits"] == metrics["exits"]
    run_metrics = json.loads((runs.straight / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["training"] == run_metrics["training"]
    for exit_id, run_exit in run_metrics["exits"].items():
        # Rounding to float16 moves a weight by at most 1/2048 of its value.
        assert abs(metrics["exits"][exit_id]["miou"] - run_exit["miou"]) < 0.01


def test_bundle_refuses_a_cache_of_other_weights(runs: Runs, tmp_path: Path) -> None:
    run = tmp_path / "tampered"
    shutil.copytree(runs.straight, run)
    checkpoint = load_checkpoint(run / "checkpoint.pt")
    with torch.no_grad():
        next(checkpoint.model.parameters()).add_(1.0)
    save_checkpoint(run / "checkpoint.pt", checkpoint.model, checkpoint.labels, {})
    with pytest.raises(TrainError, match="was computed for weights"):
        bundle_run(run, tmp_path / "models")
    assert not (tmp_path / "models").exists()


def test_bundle_of_an_unfinished_run(
    runs: Runs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "unfinished"
    run.mkdir()
    shutil.copy(runs.straight / "config.yaml", run)
    assert main([str(run), str(tmp_path / "models")]) == 2
    err = capsys.readouterr().err
    assert "checkpoint.pt" in err and "is missing" in err


def test_bundle_calibrates_on_a_longer_validation_split(runs: Runs, tmp_path: Path) -> None:
    run_cache = CalibrationCache.load(runs.straight / "calibration.npz")
    longer = run_cache.num_images + 5
    out = tmp_path / "models"
    bundle_run(runs.straight, out, progress=False, calibration_images=longer)
    cache = CalibrationCache.load(out / "default_calibration.npz")
    assert cache.num_images == longer
    # The run's validation images come first: the same scenes, scored again.
    assert (cache.difficulty[: run_cache.num_images] == run_cache.difficulty).all()
    assert cache.dataset["num_images"] == longer


def test_bundle_refuses_an_empty_calibration_split(runs: Runs, tmp_path: Path) -> None:
    with pytest.raises(TrainError, match="positive count, got 0"):
        bundle_run(runs.straight, tmp_path / "models", calibration_images=0)
    assert not (tmp_path / "models").exists()
