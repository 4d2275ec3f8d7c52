"""Device strings and mixed-precision settings fail early with a message that says why."""

from __future__ import annotations

import pytest
import torch

from mess_ros.train.device import check_amp, resolve_device
from mess_ros.train.errors import TrainError


def test_cpu_resolves() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" cpu ") == torch.device("cpu")


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "cpu:1", "", "cuda:-1"])
def test_malformed_devices_are_rejected(name: str) -> None:
    with pytest.raises(TrainError, match="is not valid"):
        resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_says_so() -> None:
    with pytest.raises(TrainError, match=r"CUDA is not available.*--device cpu"):
        resolve_device("cuda:0")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_missing_gpu_index_lists_the_count() -> None:
    count = torch.cuda.device_count()
    with pytest.raises(TrainError, match=f"has {count} CUDA device"):
        resolve_device(f"cuda:{count}")


def test_amp_needs_cuda() -> None:
    check_amp("off", torch.device("cpu"))
    with pytest.raises(TrainError, match="needs a CUDA device"):
        check_amp("bf16", torch.device("cpu"))
    with pytest.raises(TrainError, match="expected one of off, bf16, fp16"):
        check_amp("half", torch.device("cpu"))
