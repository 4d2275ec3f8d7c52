"""Device selection and mixed precision for training.

A wrong device string is the most common way a training run dies late (after
the dataset has been indexed and the model built), so it is resolved first
and failures say what this machine actually has.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from mess_ros.devices import cuda_problem, parse_device
from mess_ros.train.errors import TrainError

AMP_MODES = ("off", "bf16", "fp16")


def resolve_device(name: str) -> torch.device:
    """Turn ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into a usable device, or explain why not."""
    parsed = parse_device(name)
    if parsed is None:
        raise TrainError(f"device {name!r} is not valid; expected 'cpu', 'cuda' or 'cuda:N'")
    if parsed.kind == "cpu":
        return torch.device("cpu")
    problem = cuda_problem(name, parsed.index or 0)
    if problem:
        raise TrainError(f"{problem}; use --device cpu")
    # A bare "cuda" is the current device: the one a distributed launcher gave this process.
    index = parsed.index if parsed.index is not None else torch.cuda.current_device()
    return torch.device("cuda", index)


def check_amp(amp: str, device: torch.device) -> None:
    """Reject mixed-precision settings the device cannot honour before training starts."""
    if amp not in AMP_MODES:
        raise TrainError(f"amp {amp!r} is not valid; expected one of {', '.join(AMP_MODES)}")
    if amp != "off" and device.type != "cuda":
        msg = f"amp {amp!r} needs a CUDA device (training runs on {device}); use amp 'off'"
        raise TrainError(msg)
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        raise TrainError(f"amp 'bf16' is not supported by {torch.cuda.get_device_name(device)}")


@contextlib.contextmanager
def autocast(amp: str, device: torch.device) -> Iterator[None]:
    """Autocast region for the forward pass (a no-op when amp is off)."""
    if amp == "off":
        yield
        return
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def make_grad_scaler(amp: str, device: torch.device) -> torch.amp.GradScaler:
    """Loss scaler: only fp16 needs one (bf16 has float32's exponent range)."""
    return torch.amp.GradScaler(device.type, enabled=amp == "fp16")
