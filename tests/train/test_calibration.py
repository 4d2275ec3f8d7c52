"""The calibration cache equals a direct evaluation and survives a save/load round trip."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mess_ros.common.exits import FINAL_EXIT
from mess_ros.common.metrics import confusion_matrix, mean_iou
from mess_ros.data.datasets import Sample, SegmentationDataset, build_dataset
from mess_ros.data.labels import LabelSet
from mess_ros.data.transforms import normalize_image
from mess_ros.model.checkpoint import load_checkpoint
from mess_ros.model.outputs import (
    CONFIDENCE_BINS,
    confident_share,
    logits_to_mask,
    threshold_bin,
)
from mess_ros.train.calibration import CalibrationCache, build_calibration_cache
from mess_ros.train.calibration import main as calibration_main
from mess_ros.train.errors import CalibrationError
from tests.train.helpers import Runs


def direct_evaluation(
    runs: Runs,
) -> tuple[list[str], dict[str, np.ndarray], dict[str, list[float]], list[int]]:
    """Per-exit summed confusion, per-image confident shares and difficulties, computed
    by walking the network stage by stage as the engine does (not through forward())."""
    model = load_checkpoint(runs.straight / "checkpoint.pt").model.eval()
    dataset = build_dataset(runs.config.val_dataset)
    num_classes = dataset.labels.num_classes
    confusion = {e: np.zeros((num_classes, num_classes), np.int64) for e in model.exit_ids}
    shares: dict[str, list[float]] = {e: [] for e in model.exit_ids}
    difficulties = []
    with torch.inference_mode():
        for index in range(len(dataset)):
            sample = dataset[index]
            difficulties.append(sample.difficulty)
            x = torch.from_numpy(normalize_image(sample.image, runs.config.input_hw))[None]
            features, point = x, None
            for exit_id in model.exit_ids:
                target = model.exit_point(exit_id)
                features = model.forward_backbone(features, point, target)
                point = target
                logits = model.forward_head(exit_id, features)
                mask = logits_to_mask(logits, sample.mask.shape)[0].numpy()
                confusion[exit_id] += confusion_matrix(sample.mask, mask, num_classes)
                shares[exit_id].append(float(confident_share(logits, 0.7)[0]))
    return model.exit_ids, confusion, shares, difficulties


def test_cache_equals_a_direct_stagewise_evaluation(runs: Runs) -> None:
    cache = CalibrationCache.load(runs.straight / "calibration.npz")
    exit_ids, confusion, shares, difficulties = direct_evaluation(runs)
    metrics = json.loads((runs.straight / "metrics.json").read_text())

    assert cache.exit_ids == exit_ids
    assert cache.difficulty.tolist() == difficulties
    assert cache.num_images == len(difficulties)
    for exit_id in exit_ids:
        assert np.array_equal(cache.exit_confusion(exit_id), confusion[exit_id]), exit_id
        direct_miou = mean_iou(confusion[exit_id])
        assert cache.exit_miou(exit_id) == pytest.approx(direct_miou, abs=1e-12)
        assert metrics["exits"][exit_id]["miou"] == pytest.approx(direct_miou, abs=1e-6)
        # The confident share at a grid threshold reads exactly off the histogram.
        hist = cache.conf_hist[:, cache.exit_index(exit_id)]
        from_hist = hist[:, threshold_bin(0.7) :].sum(axis=1) / hist.sum(axis=1)
        assert from_hist.tolist() == pytest.approx(shares[exit_id], abs=1e-6)


def test_per_difficulty_confusions_sum_to_the_total(runs: Runs) -> None:
    cache = CalibrationCache.load(runs.straight / "calibration.npz")
    levels = sorted(set(cache.difficulty.tolist()))
    for exit_id in cache.exit_ids:
        parts = [cache.exit_confusion(exit_id, cache.image_selection(lv)) for lv in levels]
        assert np.array_equal(sum(parts), cache.exit_confusion(exit_id))
    assert np.isnan(cache.exit_miou(FINAL_EXIT, difficulty=99))


def test_save_load_round_trip(runs: Runs, tmp_path: Path) -> None:
    cache = CalibrationCache.load(runs.straight / "calibration.npz")
    copy = tmp_path / "sub" / "cache.npz"
    cache.save(copy)
    loaded = CalibrationCache.load(copy)
    for field in dataclasses.fields(CalibrationCache):
        original, restored = getattr(cache, field.name), getattr(loaded, field.name)
        if isinstance(original, np.ndarray):
            assert restored.dtype == np.int64 and np.array_equal(original, restored)
        else:
            assert original == restored, field.name
    assert loaded.conf_hist.shape[-1] == CONFIDENCE_BINS


def test_build_matches_the_stored_cache(runs: Runs) -> None:
    checkpoint = load_checkpoint(runs.straight / "checkpoint.pt")
    dataset = build_dataset(runs.config.val_dataset)
    fresh = build_calibration_cache(checkpoint, dataset, runs.config.input_hw, progress=False)
    stored = CalibrationCache.load(runs.straight / "calibration.npz")
    assert np.array_equal(fresh.confusion, stored.confusion)
    assert np.array_equal(fresh.conf_hist, stored.conf_hist)
    assert fresh.checkpoint_fingerprint == stored.checkpoint_fingerprint


def test_build_refuses_a_dataset_with_other_classes(runs: Runs) -> None:
    checkpoint = load_checkpoint(runs.straight / "checkpoint.pt")
    dataset = Relabelled(build_dataset(runs.config.val_dataset))
    with pytest.raises(CalibrationError, match="2 classes"):
        build_calibration_cache(checkpoint, dataset, runs.config.input_hw, progress=False)


class Relabelled:
    """A dataset whose label set disagrees with the model's class count."""

    labels = LabelSet("two", ("a", "b"), ((0, 0, 0), (1, 1, 1)))

    def __init__(self, dataset: SegmentationDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Sample:
        return self.dataset[index]


def test_loading_garbage_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"this is not a zip archive")
    with pytest.raises(CalibrationError, match=r"broken\.npz"):
        CalibrationCache.load(bad)
    with pytest.raises(CalibrationError, match=r"missing\.npz.*does not exist"):
        CalibrationCache.load(tmp_path / "missing.npz")


def test_loading_an_inconsistent_cache_names_the_file(runs: Runs, tmp_path: Path) -> None:
    source = runs.straight / "calibration.npz"
    with np.load(source) as npz:
        arrays = {key: npz[key] for key in npz.files}

    truncated = tmp_path / "truncated.npz"
    np.savez(truncated, **{**arrays, "conf_hist": arrays["conf_hist"][:, :1]})
    with pytest.raises(CalibrationError, match=r"truncated\.npz.*conf_hist has shape"):
        CalibrationCache.load(truncated)

    incomplete = tmp_path / "incomplete.npz"
    np.savez(incomplete, meta=arrays["meta"], confusion=arrays["confusion"])
    with pytest.raises(CalibrationError, match=r"incomplete\.npz.* lacks conf_hist, difficulty"):
        CalibrationCache.load(incomplete)

    foreign = tmp_path / "foreign.npz"
    meta = json.loads(str(arrays["meta"]))
    np.savez(foreign, **{**arrays, "meta": np.array(json.dumps({**meta, "format": "other"}))})
    with pytest.raises(CalibrationError, match=r"foreign\.npz.* is not a mess_ros calibration"):
        CalibrationCache.load(foreign)


def test_unknown_exit_lists_the_cached_ones(runs: Runs) -> None:
    cache = CalibrationCache.load(runs.straight / "calibration.npz")
    with pytest.raises(CalibrationError, match="layer1_0:linear"):
        cache.exit_index("layer9_9:linear")


def test_a_version_1_cache_loads_and_says_how_to_rebuild(runs: Runs, tmp_path: Path) -> None:
    cache = CalibrationCache.load(runs.straight / "calibration.npz")
    assert cache.class_hist is not None
    old = dataclasses.replace(cache, class_hist=None)
    path = tmp_path / "old.npz"
    old.save(path)
    loaded = CalibrationCache.load(path)
    assert loaded.class_hist is None
    assert (loaded.confusion == cache.confusion).all()
    with pytest.raises(CalibrationError) as info:
        loaded.require_class_hist("the learnt decision", str(path))
    message = str(info.value)
    assert "version 1" in message and str(path) in message
    assert "python -m mess_ros.train.calibration CHECKPOINT" in message


def test_recalibrate_rebuilds_an_old_cache_in_the_current_format(
    runs: Runs, tmp_path: Path
) -> None:
    cache = CalibrationCache.load(runs.straight / "calibration.npz")
    path = tmp_path / "old.npz"
    dataclasses.replace(cache, class_hist=None).save(path)
    assert calibration_main([str(runs.straight / "checkpoint.pt"), str(path), "--no-progress"]) == 0
    rebuilt = CalibrationCache.load(path)
    assert rebuilt.class_hist is not None
    assert (rebuilt.class_hist == cache.class_hist).all()
    assert (rebuilt.confusion == cache.confusion).all()
