"""Device selection and mixed precision for training.

A wrong device string is the most common way a training run dies late (after
the dataset has been indexed and the model built), so it is resolved first
and failures say what this machine actually has.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import torch

from mess_ros.train.errors import TrainError

AMP_MODES = ("off", "bf16", "fp16")
_DEVICE_RE = re.compile(r"^(cpu|cuda)(?::(\d+))?$")


def resolve_device(name: str) -> torch.device:
    """Turn ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into a usable device, or explain why not."""
    match = _DEVICE_RE.match(name.strip())
    if match is None:
        msg = f"device {name!r} is not valid; expected 'cpu', 'cuda' or 'cuda:N'"
        raise TrainError(msg)
    kind, index = match.group(1), match.group(2)
    if kind == "cpu":
        if index is not None:
            raise TrainError(f"device {name!r} is not valid; the CPU device takes no index")
        return torch.device("cpu")
    if not torch.cuda.is_available():
        msg = (
            f"device {name!r} requested but CUDA is not available "
            f"(torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none'}); "
            "use --device cpu"
        )
        raise TrainError(msg)
    count = torch.cuda.device_count()
    ordinal = int(index) if index is not None else torch.cuda.current_device()
    if ordinal >= count:
        msg = (
            f"device {name!r} requested but this machine has {count} CUDA device(s) "
            f"(0..{count - 1})"
        )
        raise TrainError(msg)
    return torch.device("cuda", ordinal)


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
