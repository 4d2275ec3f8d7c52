"""Profiling a tiny model into a latency table."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mess_ros.common.latency_table import LatencyTable
from mess_ros.model import Checkpoint, model_fingerprint
from mess_ros.runtime.errors import EngineError
from mess_ros.runtime.profiling import profile_model
from tests.runtime.conftest import ALL_EXITS, INPUT_HW


def test_profile_covers_every_stage(checkpoint: Checkpoint, tmp_path: Path) -> None:
    model = checkpoint.model
    table = profile_model(model, INPUT_HW, "cpu", warmup=1, repeats=3, quantile=0.9)
    assert list(table.segments) == [*model.points, model.final_point]
    assert list(table.heads) == list(ALL_EXITS)
    assert list(table.outputs) == list(ALL_EXITS)
    stats = [*table.segments.values(), *table.heads.values(), *table.outputs.values()]
    assert all(s.mean_ms > 0 and s.p90_ms > 0 and s.count == 3 for s in stats)
    assert table.input_hw == INPUT_HW
    assert table.device == "cpu" and table.device_name
    assert table.versions["torch"] == torch.__version__ and "python" in table.versions
    assert table.model_fingerprint == model_fingerprint(model)
    path = tmp_path / "table.json"
    table.save(path)
    assert LatencyTable.load(path) == table


def test_profile_subset_of_exits_keeps_final(checkpoint: Checkpoint) -> None:
    table = profile_model(
        checkpoint.model, INPUT_HW, warmup=0, repeats=1, exit_ids=["layer2_0:linear"]
    )
    assert list(table.heads) == ["layer2_0:linear", "final"]


def test_profile_rejects_unknown_exits_and_bad_counts(checkpoint: Checkpoint) -> None:
    with pytest.raises(EngineError, match="unknown exit"):
        profile_model(checkpoint.model, INPUT_HW, exit_ids=["layer9_9:linear"])
    with pytest.raises(EngineError, match="repeats >= 1"):
        profile_model(checkpoint.model, INPUT_HW, repeats=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_profiling_on_missing_cuda_is_an_error(checkpoint: Checkpoint) -> None:
    """Profiling must measure the device asked for; a silent CPU fallback would lie."""
    with pytest.raises(EngineError, match="CUDA is not available"):
        profile_model(checkpoint.model, INPUT_HW, "cuda", repeats=1)
