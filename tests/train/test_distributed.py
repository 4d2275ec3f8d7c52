"""DistributedDataParallel on two CPU processes (gloo), as torchrun would start them."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

from mess_ros.train.config import TrainConfig
from mess_ros.train.trainer import train
from tests.train.helpers import tiny_config

WORLD_SIZE = 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def worker(rank: int, config: TrainConfig, out_dir: Path, weights_dir: Path, port: int) -> None:
    """One rank with exactly the environment torchrun gives its processes."""
    os.environ.update(
        {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(WORLD_SIZE),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    torch.set_num_threads(1)
    result = train(config, out_dir, progress=False)
    assert result.finished
    assert (result.metrics is not None) == (rank == 0)  # only rank 0 evaluates and writes
    torch.save(result.model.state_dict(), weights_dir / f"rank{rank}.pt")


def test_two_gloo_ranks_end_with_identical_weights(tmp_path: Path) -> None:
    # Eight images, a global batch of 4 (2 per rank): each rank sees different images,
    # so equal weights at the end mean gradients really were averaged.
    config = tiny_config(
        dataset=tiny_config().dataset.__class__(
            kind="synthetic", split="train", num_images=8, height=32, width=64
        ),
        augment=True,
        stage1_steps=4,
        stage2_steps=2,
        eval_every=100,
        val_images=2,
    )
    out_dir, weights_dir = tmp_path / "run", tmp_path / "weights"
    weights_dir.mkdir()
    mp.spawn(worker, args=(config, out_dir, weights_dir, free_port()), nprocs=WORLD_SIZE)

    rank0 = torch.load(weights_dir / "rank0.pt", weights_only=True)
    rank1 = torch.load(weights_dir / "rank1.pt", weights_only=True)
    assert rank0.keys() == rank1.keys()
    for key, value in rank0.items():
        assert torch.equal(value, rank1[key]), key
    # Stage 2 trained the pool; the run directory is complete and written once.
    assert any(key.startswith("exit_heads.") and "fcn" in key for key in rank0)
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "calibration.npz",
        "checkpoint.pt",
        "config.yaml",
        "metrics.json",
        "train_log.csv",
        "train_state.pt",
    ]
