"""Multi-process training with DistributedDataParallel, launched by ``torchrun``.

``torchrun --nproc_per_node N -m mess_ros.train.cli ...`` starts N copies of
the trainer with ``RANK``/``LOCAL_RANK``/``WORLD_SIZE``/``MASTER_ADDR``/
``MASTER_PORT`` in the environment; the same code runs unchanged as a single
process when those are absent. CPU runs use the gloo backend, CUDA runs nccl
with one GPU per local rank. ``batch_size`` stays the *global* batch (split
evenly over ranks), so a config gives the same optimisation whatever the
number of processes. Only rank 0 writes files; the others wait at barriers.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mess_ros.train.device import resolve_device
from mess_ros.train.errors import TrainError


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job (a single process is rank 0 of 1)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """The one process that writes the run directory and shows progress bars."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """DDP wrapper that averages gradients across ranks (the bare model when alone).

        Must be called after the stage has chosen which parameters train: DDP
        registers its gradient hooks on the parameters that require grad at
        construction time.
        """
        if not self.enabled:
            return model
        device_ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def sync_buffers(self, model: nn.Module) -> None:
        """Give every rank rank 0's buffers (batch-norm statistics).

        DDP broadcasts buffers at the start of each forward, so after the last
        step each rank still holds statistics updated from its own batch;
        syncing at stage end makes all ranks hold the very same model.
        """
        if not self.enabled:
            return
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)

    def per_rank_batch(self, batch_size: int) -> int:
        if batch_size % self.world_size != 0:
            msg = (
                f"batch_size {batch_size} cannot be split evenly over {self.world_size} "
                "processes; use a multiple of the process count"
            )
            raise TrainError(msg)
        return batch_size // self.world_size


def _env_int(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError as err:
        raise TrainError(f"environment variable {name}={value!r} is not an integer") from err


@contextlib.contextmanager
def distributed_session(device_name: str) -> Iterator[tuple[DistContext, torch.device]]:
    """Join the process group described by torchrun's environment, if any, for the block.

    Single-process runs get a rank-0-of-1 context and no process group. The
    group is destroyed on exit (also on errors) so that a failed run does not
    leave peers waiting forever on a collective.
    """
    world_size = _env_int("WORLD_SIZE") if "WORLD_SIZE" in os.environ else 1
    if world_size <= 1:
        yield DistContext(), resolve_device(device_name)
        return
    rank = _env_int("RANK")
    local_rank = _env_int("LOCAL_RANK") if "LOCAL_RANK" in os.environ else rank
    device = resolve_device(device_name)
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if local_rank >= count:
            msg = f"local rank {local_rank} has no GPU: this machine has {count} CUDA device(s)"
            raise TrainError(msg)
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    try:
        yield DistContext(rank, local_rank, world_size, backend), device
    finally:
        dist.destroy_process_group()
