"""Device names are read one way for training and the engine, and a missing GPU is explained."""

from __future__ import annotations

import pytest
import torch

from mess_ros.devices import DeviceName, cuda_problem, parse_device


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cpu", DeviceName("cpu")),
        (" cpu ", DeviceName("cpu")),
        ("cuda", DeviceName("cuda")),
        ("cuda:0", DeviceName("cuda", 0)),
        ("cuda:12", DeviceName("cuda", 12)),
    ],
)
def test_valid_names_are_taken_apart(name: str, expected: DeviceName) -> None:
    assert parse_device(name) == expected


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "cpu:1", "", "cuda:-1", "cuda:", "CUDA"])
def test_anything_else_is_no_device_name(name: str) -> None:
    assert parse_device(name) is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_without_cuda_the_problem_names_the_torch_build() -> None:
    problem = cuda_problem("cuda:0", 0)
    assert "'cuda:0' requested but CUDA is not available" in problem
    assert torch.__version__ in problem


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_an_index_past_the_devices_gives_their_count() -> None:
    count = torch.cuda.device_count()
    assert cuda_problem("cuda:0", 0) == ""
    assert f"has {count} CUDA device(s)" in cuda_problem(f"cuda:{count}", count)
