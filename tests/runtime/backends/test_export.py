"""The per-stage ONNX export: what it holds, that it computes what torch does, its cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from mess_ros.model import Checkpoint, load_checkpoint, model_fingerprint, save_checkpoint
from mess_ros.runtime.backends.export import CACHE_ENV, export_stages
from mess_ros.runtime.backends.stages import MANIFEST, load_export
from tests.runtime.conftest import INPUT_HW, LABELS, tiny_model

# float32 through a few convolutions in another order of operations: ~1e-6 relative.
ATOL = 1e-4


def run_onnx(path: Path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"input": x.numpy()})[0])


def test_every_block_and_head_is_exported_and_computes_what_torch_does(
    checkpoint_path: Path, checkpoint: Checkpoint
) -> None:
    model = checkpoint.model
    export = export_stages(model, INPUT_HW, checkpoint_path, progress=False)
    fingerprint = model_fingerprint(model)
    assert export.directory.parent == checkpoint_path.parent / "tiny.pt.stages"
    assert export.directory.name == f"32x64-fp32-{fingerprint}"
    assert list(export.blocks) == model.block_points == list(export.segments)
    assert set(export.heads) == set(model.exit_ids)
    manifest = json.loads((export.directory / MANIFEST).read_text())
    assert manifest["model_fingerprint"] == fingerprint and manifest["input_hw"] == [32, 64]

    features = torch.randn(1, 3, *INPUT_HW, generator=torch.Generator().manual_seed(0))
    previous = None
    with torch.inference_mode():
        for point in model.block_points:
            exported = run_onnx(export.segment(point).path, features)
            features = model.forward_backbone(features, previous, point)
            previous = point
            np.testing.assert_allclose(exported, features.numpy(), atol=ATOL)
            assert export.segment(point).output_shape == tuple(features.shape)
            for exit_id in model.exit_ids:
                if model.exit_point(exit_id) == point:
                    logits = model.forward_head(exit_id, features).numpy()
                    np.testing.assert_allclose(
                        run_onnx(export.head(exit_id).path, features), logits, atol=ATOL
                    )


def test_the_export_is_reused_and_redone_when_the_weights_or_the_size_change(
    tmp_path: Path,
) -> None:
    path = tmp_path / "robot.pt"
    save_checkpoint(path, tiny_model(), LABELS.to_dict(), {})
    model = load_checkpoint(path).model
    first = export_stages(model, INPUT_HW, path, progress=False)
    written = (first.directory / MANIFEST).stat().st_mtime_ns
    assert export_stages(model, INPUT_HW, path, progress=False) == first
    assert (first.directory / MANIFEST).stat().st_mtime_ns == written  # not exported again

    wider = export_stages(model, (32, 96), path, progress=False)
    assert wider.directory != first.directory and wider.segment("layer1_0").input_shape[-1] == 96
    assert load_export(first.directory) is not None  # another size of the same weights stays

    with torch.no_grad():  # the checkpoint is replaced by other weights
        next(model.parameters()).add_(0.5)
    save_checkpoint(path, model, LABELS.to_dict(), {})
    retrained = export_stages(load_checkpoint(path).model, INPUT_HW, path, progress=False)
    assert retrained.directory != first.directory
    assert retrained.model_fingerprint == model_fingerprint(model)
    assert not first.directory.exists() and not wider.directory.exists()  # earlier weights go


def test_an_incomplete_export_is_redone(checkpoint_path: Path, checkpoint: Checkpoint) -> None:
    export = export_stages(checkpoint.model, INPUT_HW, checkpoint_path, progress=False)
    export.head("final").path.unlink()
    assert load_export(export.directory) is None
    again = export_stages(checkpoint.model, INPUT_HW, checkpoint_path, progress=False)
    assert again.head("final").path.is_file()


def test_checkpoints_in_read_only_folders_export_to_the_user_cache(
    tmp_path: Path, checkpoint: Checkpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    share = tmp_path / "share" / "models"
    share.mkdir(parents=True)
    path = share / "robot.pt"
    save_checkpoint(path, checkpoint.model, LABELS.to_dict(), {})
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))
    if os.geteuid() == 0:
        # root writes through any permission bits: the folder is read-only as the tool sees it.
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != share and real_access(p, mode))
    share.chmod(0o555)
    try:
        export = export_stages(checkpoint.model, INPUT_HW, path, progress=False)
    finally:
        share.chmod(0o755)
    assert export.directory.parent == cache / "stages"
    assert export.directory.name.startswith("robot.pt-32x64-fp32-")
    assert list(share.iterdir()) == [path]
    # a model held only in memory goes there too
    assert export_stages(checkpoint.model, INPUT_HW, None, progress=False).directory.is_relative_to(
        cache
    )
