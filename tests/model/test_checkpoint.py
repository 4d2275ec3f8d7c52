"""Checkpoints: exact round trip, pruning, atomic writes and clear errors naming the file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from mess_ros.common.exits import FINAL_EXIT
from mess_ros.model import (
    CheckpointError,
    ExitSpec,
    HeadSpec,
    MESSNet,
    load_checkpoint,
    model_fingerprint,
    prune_checkpoint,
    save_checkpoint,
)
from mess_ros.model.checkpoint import PRUNED_FROM_KEY
from tests.model.conftest import linear_classifier

LABELS = {"name": "synthetic", "class_names": ["a", "b", "c", "d", "e"], "ignore_index": 255}
TRAIN_CONFIG = {"mode": "two_stage", "lr": 0.01, "input_hw": [33, 65], "exit_loss_weights": None}
METRICS = {"miou": {"final": 0.5, "layer1_0:linear": 0.25}}


@pytest.fixture
def saved(tmp_path: Path, model: MESSNet) -> Path:
    path = tmp_path / "run" / "checkpoint.pt"
    save_checkpoint(path, model, LABELS, TRAIN_CONFIG, METRICS)
    return path


def test_round_trip_gives_identical_outputs(
    saved: Path, model: MESSNet, image: torch.Tensor
) -> None:
    checkpoint = load_checkpoint(saved)
    assert checkpoint.path == saved
    assert (checkpoint.labels, checkpoint.train_config, checkpoint.metrics) == (
        LABELS,
        TRAIN_CONFIG,
        METRICS,
    )
    assert checkpoint.spec == model.spec
    assert not checkpoint.model.training
    assert checkpoint.fingerprint == model_fingerprint(model)
    assert re.fullmatch(r"[0-9a-f]{16}", checkpoint.fingerprint)
    with torch.no_grad():
        expected, got = model(image), checkpoint.model(image)
    assert list(got) == list(expected)
    for exit_id, value in expected.items():
        assert torch.equal(got[exit_id], value), exit_id


def test_fingerprint_tracks_the_weights(model: MESSNet) -> None:
    before = model_fingerprint(model)
    bias = linear_classifier(model, "layer1_0:linear").bias
    assert bias is not None
    with torch.no_grad():
        bias[0] += 1e-3
    assert model_fingerprint(model) != before


def test_pruned_checkpoint_keeps_only_chosen_heads(
    saved: Path, tmp_path: Path, image: torch.Tensor
) -> None:
    keep = ["layer2_1:fcn_c8_k2_d2", "layer1_1:linear"]
    dst = tmp_path / "deploy" / "pruned.pt"
    returned = prune_checkpoint(saved, dst, keep)
    pruned = load_checkpoint(dst)
    assert pruned.model.exit_ids == ["layer1_1:linear", "layer2_1:fcn_c8_k2_d2", FINAL_EXIT]
    assert pruned.fingerprint == returned.fingerprint
    assert pruned.labels == LABELS
    assert pruned.metrics == {**METRICS, PRUNED_FROM_KEY: load_checkpoint(saved).fingerprint}
    state = torch.load(dst, weights_only=True)["state_dict"]
    assert not any(k.startswith("exit_heads.layer3_0") for k in state)
    assert dst.stat().st_size < saved.stat().st_size
    full = load_checkpoint(saved)
    with torch.no_grad():
        expected, got = full.model(image), pruned.model(image)
    for exit_id in pruned.model.exit_ids:
        assert torch.equal(got[exit_id], expected[exit_id]), exit_id
    with pytest.raises(CheckpointError, match=f"cannot prune checkpoint {re.escape(str(saved))}"):
        prune_checkpoint(saved, dst, ["layer2_0:aspplite_c8"])


def test_half_precision_storage(
    tmp_path: Path, model: MESSNet, saved: Path, image: torch.Tensor
) -> None:
    half = tmp_path / "half.pt"
    save_checkpoint(half, model, LABELS, TRAIN_CONFIG, METRICS, weights_dtype="float16")
    stored = torch.load(half, weights_only=True)["state_dict"]
    assert all(t.dtype == torch.float16 for t in stored.values() if t.is_floating_point())
    assert any(not t.is_floating_point() for t in stored.values()), "integer buffers kept"
    assert half.stat().st_size < 0.6 * saved.stat().st_size
    loaded = load_checkpoint(half)
    assert loaded.weights_dtype == "float16"
    assert load_checkpoint(saved).weights_dtype == "float32"
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    # Stored values widen exactly: writing the loaded network again changes nothing.
    again = tmp_path / "again.pt"
    save_checkpoint(again, loaded.model, LABELS, TRAIN_CONFIG, METRICS, weights_dtype="float16")
    assert load_checkpoint(again).fingerprint == loaded.fingerprint
    model.eval()
    with torch.no_grad():
        full, rounded = model(image), loaded.model(image)
    assert torch.allclose(full[FINAL_EXIT], rounded[FINAL_EXIT], rtol=0.05, atol=0.05)
    pruned = prune_checkpoint(half, tmp_path / "pruned.pt", ["layer1_1:linear"])
    assert pruned.weights_dtype == "float16"
    assert load_checkpoint(tmp_path / "pruned.pt").weights_dtype == "float16"
    with pytest.raises(
        CheckpointError, match="weights_dtype 'int8' is not one of float32, float16"
    ):
        save_checkpoint(tmp_path / "bad.pt", model, LABELS, TRAIN_CONFIG, weights_dtype="int8")


def test_save_is_atomic_and_replaces(saved: Path, model: MESSNet) -> None:
    first = saved.read_bytes()
    save_checkpoint(saved, model.keep_exits([]), LABELS, TRAIN_CONFIG)
    assert saved.read_bytes() != first
    assert load_checkpoint(saved).model.exit_ids == [FINAL_EXIT]
    assert load_checkpoint(saved).metrics == {}
    assert [p.name for p in saved.parent.iterdir()] == ["checkpoint.pt"], "no temporary left"


@pytest.mark.parametrize(
    "bad", [{"rng": torch.zeros(2)}, {"path": Path("x")}, {1: "int key"}, {"n": [object()]}]
)
def test_save_refuses_metadata_that_would_not_load(
    tmp_path: Path, model: MESSNet, bad: dict[object, object]
) -> None:
    path = tmp_path / "c.pt"
    with pytest.raises(CheckpointError, match="train_config"):
        save_checkpoint(path, model, LABELS, bad)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def _payload(path: Path) -> dict[str, object]:
    payload: dict[str, object] = torch.load(path, weights_only=True)
    return payload


def expect_error(path: Path, message: str) -> None:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert re.search(message, str(info.value)), str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    expect_error(tmp_path / "absent.pt", "does not exist")
    expect_error(tmp_path, "is not a file")


def test_truncated_file(saved: Path) -> None:
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    expect_error(saved, "truncated, corrupt")


def test_corrupt_and_foreign_files(tmp_path: Path) -> None:
    text = tmp_path / "notes.pt"
    text.write_text("this is not a model\n")
    expect_error(text, "truncated, corrupt, not a torch file")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    expect_error(empty, "truncated, corrupt")


def test_weights_only_refuses_code(tmp_path: Path) -> None:
    path = tmp_path / "pickled.pt"
    torch.save({"format": "mess_ros.checkpoint", "thing": Path("x")}, path)
    expect_error(path, "holds more than weights")


def test_other_torch_files_are_not_checkpoints(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": {}}, path)
    expect_error(path, "is not a mess_ros checkpoint")
    torch.save(torch.zeros(3), path)
    expect_error(path, "is not a mess_ros checkpoint.*Tensor")


def test_newer_version_and_missing_parts(saved: Path) -> None:
    payload = _payload(saved)
    torch.save({**payload, "version": 2}, saved)
    expect_error(saved, "format version 2")
    torch.save({k: v for k, v in payload.items() if k != "labels"}, saved)
    expect_error(saved, "lacks labels")


def test_spec_and_state_mismatch(saved: Path) -> None:
    payload = _payload(saved)
    spec = payload["model_spec"]
    assert isinstance(spec, dict)
    torch.save({**payload, "model_spec": {**spec, "num_classes": 7}}, saved)
    expect_error(saved, r"do not match its model spec: .*expected \(7, 16, 1, 1\).*; and \d+ more")
    state = payload["state_dict"]
    assert isinstance(state, dict)
    del state["final_head.classifier.bias"]
    torch.save({**payload, "state_dict": state}, saved)
    expect_error(saved, "missing 1 tensors .*final_head.classifier.bias")
    torch.save({**payload, "model_spec": {**spec, "backbone": {"name": "vgg"}}}, saved)
    expect_error(saved, "invalid model spec: unknown backbone 'vgg'")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_map_location_moves_the_model(saved: Path, image: torch.Tensor) -> None:
    checkpoint = load_checkpoint(saved, map_location="cuda")
    assert all(p.is_cuda for p in checkpoint.model.parameters())
    with torch.no_grad():
        got = checkpoint.model(image.cuda())[FINAL_EXIT].cpu()
        expected = load_checkpoint(saved).model(image)[FINAL_EXIT]
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-3)
    checkpoint.model.add_exits([ExitSpec("layer1_0", HeadSpec("fcn", 4, 1, 1))])
    assert all(p.is_cuda for p in checkpoint.model.exit_parameters("layer1_0:fcn_c4_k1_d1"))
