"""Bundling a run as the package's default model copies only consistent files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from mess_ros.model.checkpoint import load_checkpoint, save_checkpoint
from mess_ros.train.bundle import bundle_run, main
from mess_ros.train.calibration import CalibrationCache
from mess_ros.train.errors import TrainError
from tests.train.helpers import Runs


def test_bundle_copies_checkpoint_cache_and_metrics(runs: Runs, tmp_path: Path) -> None:
    out = tmp_path / "models"
    assert main([str(runs.straight), str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "default.pt",
        "default_calibration.npz",
        "default_metrics.json",
    ]
    checkpoint = load_checkpoint(out / "default.pt")
    cache = CalibrationCache.load(out / "default_calibration.npz")
    assert cache.checkpoint_fingerprint == checkpoint.fingerprint
    assert (out / "default_metrics.json").read_bytes() == (
        runs.straight / "metrics.json"
    ).read_bytes()


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
