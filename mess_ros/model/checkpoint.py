"""Checkpoint files: weights plus everything needed to rebuild and use them.

A checkpoint records the model spec (so the exact network is rebuilt without
code), the label set, the training configuration and metrics, as plain data
and tensors only. It is read with ``torch.load(weights_only=True)``: a model
file received from elsewhere can then never execute code. Writes go through
a temporary file and a rename, so a crash or a full disk never leaves a
half-written checkpoint where a robot expects a model.

Weights may be stored in float16 (``weights_dtype="float16"``): the bundled
and deployed models are, which halves the files the package ships. Loading
always gives a float32 network (the stored values, widened exactly), so the
fingerprint, the calibration cache and every latency measured for a model
refer to the same numbers whichever way the file was written.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mess_ros.model.errors import CheckpointError, ModelError
from mess_ros.model.messnet import MESSNet, ModelSpec
from mess_ros.textfiles import atomic_write

CHECKPOINT_FORMAT = "mess_ros.checkpoint"
CHECKPOINT_VERSION = 1
_REQUIRED_KEYS = ("model_spec", "labels", "train_config", "state_dict")
#: Floating-point storage types of checkpoint weights (integer buffers are kept as they are).
WEIGHT_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16}

PathLike = str | os.PathLike[str]


@dataclass
class Checkpoint:
    """A loaded checkpoint: the network (in eval mode) and its metadata."""

    model: MESSNet
    labels: dict[str, Any]
    train_config: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    # How the file stores floating-point weights (the loaded model is float32 either way).
    weights_dtype: str = "float32"

    @property
    def spec(self) -> ModelSpec:
        return self.model.spec

    @property
    def fingerprint(self) -> str:
        """Identifies these weights; hashes the whole state, so it costs a pass over it."""
        return model_fingerprint(self.model)

    @property
    def trained_input_hw(self) -> tuple[int, int] | None:
        """The (height, width) the network was trained at, when its training config records it.

        Running a network at that size is the safe default: object scales match
        what the exits learnt, and its calibration cache applies unchanged.
        """
        recorded = self.train_config.get("input_hw")
        if not (isinstance(recorded, list | tuple) and len(recorded) == 2):
            return None
        return (int(recorded[0]), int(recorded[1]))


def model_fingerprint(model: MESSNet) -> str:
    """sha256 (first 16 hex digits) of the model spec and every state tensor's bytes.

    Calibration caches and latency tables carry it, so that results measured
    for one set of weights are never applied to another.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps(model.spec.to_dict(), sort_keys=True).encode())
    for key, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{key}|{data.dtype}|{tuple(data.shape)}".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _check_plain(value: object, where: str) -> None:
    """Refuse anything ``weights_only`` loading would reject, at save time rather than load time."""
    if value is None or isinstance(value, bool | int | float | str):
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CheckpointError(f"{where} has a non-string key {key!r}")
            _check_plain(item, f"{where}[{key!r}]")
        return
    raise CheckpointError(
        f"{where} holds a {type(value).__name__}; checkpoints store only plain data "
        "(str, int, float, bool, None, lists and dicts) so that they load with weights_only=True"
    )


def save_checkpoint(
    path: PathLike,
    model: MESSNet,
    labels: Mapping[str, Any],
    train_config: Mapping[str, Any],
    metrics: Mapping[str, Any] | None = None,
    weights_dtype: str = "float32",
) -> None:
    """Write ``model`` with its metadata to ``path`` atomically (weights moved to CPU).

    With ``weights_dtype="float16"`` floating-point tensors are rounded to
    half precision in the file; the network in memory is left untouched.
    """
    path = Path(path)
    if weights_dtype not in WEIGHT_DTYPES:
        valid = ", ".join(WEIGHT_DTYPES)
        raise CheckpointError(
            f"cannot write checkpoint {path}: weights_dtype {weights_dtype!r} is not one of {valid}"
        )
    storage = WEIGHT_DTYPES[weights_dtype]
    metadata = {
        "labels": dict(labels),
        "train_config": dict(train_config),
        "metrics": dict(metrics or {}),
    }
    for name, value in metadata.items():
        _check_plain(value, name)
    state = {
        key: _stored(t.detach().to("cpu"), storage).contiguous()
        for key, t in model.state_dict().items()
    }
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model_spec": model.spec.to_dict(),
        **metadata,
        "state_dict": state,
    }
    try:
        with atomic_write(path) as handle:
            torch.save(payload, handle)
    except OSError as err:
        raise CheckpointError(f"cannot write checkpoint {path}: {err}") from err


def _stored(tensor: Tensor, storage: torch.dtype) -> Tensor:
    return tensor.to(storage) if tensor.is_floating_point() else tensor


def _weights_dtype(state: Mapping[str, Any]) -> str:
    """ "float16" for a file written with half-precision weights, else "float32"."""
    floating = (t for t in state.values() if isinstance(t, Tensor) and t.is_floating_point())
    first = next(floating, None)
    return "float16" if first is not None and first.dtype == torch.float16 else "float32"


def _read_payload(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file")
    try:
        with warnings.catch_warnings():
            # Garbage bytes make torch warn about a "pickle protocol" before it fails;
            # the error below says everything the user needs, in one line.
            warnings.simplefilter("ignore", UserWarning)
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        # torch reports damage as RuntimeError, UnpicklingError, EOFError or
        # ValueError depending on where the bytes stop making sense; all of
        # them mean the same thing to the user.
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(
            f"cannot read checkpoint {path}: the file is truncated, corrupt, not a torch file "
            f"or holds more than weights and plain data ({type(err).__name__}: {reason})"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f"{path} is not a mess_ros checkpoint: expected a dict with format "
            f"{CHECKPOINT_FORMAT!r}, found {found!r}"
        )
    version = payload.get("version")
    if not isinstance(version, int) or not 1 <= version <= CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {version!r}; this mess_ros reads "
            f"version {CHECKPOINT_VERSION}"
        )
    missing = [key for key in _REQUIRED_KEYS if key not in payload]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}")
    for key in ("labels", "train_config", "metrics", "state_dict"):
        if not isinstance(payload.get(key, {}), dict):
            raise CheckpointError(f"checkpoint {path}: {key} must be a dict")
    return payload


def _check_state(path: Path, model: MESSNet, state: Mapping[str, Any]) -> None:
    """Name the tensors that disagree with the spec, instead of torch's long dump."""
    expected = model.state_dict()
    problems: list[str] = []
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    if missing:
        problems.append(f"missing {len(missing)} tensors (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors (e.g. {', '.join(unexpected[:3])})")
    for key, want in expected.items():
        got = state.get(key)
        if got is None:
            continue
        if not isinstance(got, Tensor):
            problems.append(f"{key} is a {type(got).__name__}, not a tensor")
        elif got.shape != want.shape:
            problems.append(f"{key} has shape {tuple(got.shape)}, expected {tuple(want.shape)}")
    if problems:
        shown = "; ".join(problems[:5])
        if len(problems) > 5:
            shown += f"; and {len(problems) - 5} more"
        raise CheckpointError(f"checkpoint {path}: weights do not match its model spec: {shown}")


def load_checkpoint(path: PathLike, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read and rebuild a checkpoint; any problem raises CheckpointError naming the file."""
    path = Path(path)
    payload = _read_payload(path, map_location)
    try:
        spec = ModelSpec.from_dict(payload["model_spec"])
        model = MESSNet(spec)
    except ModelError as err:
        raise CheckpointError(f"checkpoint {path} has an invalid model spec: {err}") from err
    state = payload["state_dict"]
    _check_state(path, model, state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        msg = f"checkpoint {path}: weights do not load into its model spec: {err}"
        raise CheckpointError(msg) from err
    model.to(torch.device(map_location))
    model.eval()
    return Checkpoint(
        model=model,
        labels=payload["labels"],
        train_config=payload["train_config"],
        metrics=payload.get("metrics", {}),
        path=path,
        weights_dtype=_weights_dtype(state),
    )


PRUNED_FROM_KEY = "pruned_from"
"""Key in a pruned checkpoint's ``metrics``: the fingerprint of the checkpoint it came from."""


def prune_checkpoint(src: PathLike, dst: PathLike, keep_exit_ids: Sequence[str]) -> Checkpoint:
    """Write to ``dst`` a copy of ``src`` holding only the chosen exits (and the final one).

    A deployed robot loads only the heads its configuration uses, which
    shrinks the file and the memory the network occupies.
    """
    checkpoint = load_checkpoint(src)
    try:
        pruned = checkpoint.model.keep_exits(keep_exit_ids)
    except ModelError as err:
        raise CheckpointError(f"cannot prune checkpoint {src}: {err}") from err
    # The source's fingerprint lets latency tables and calibration caches made for the
    # full checkpoint be recognised as valid for the pruned one.
    metrics = {**checkpoint.metrics, PRUNED_FROM_KEY: checkpoint.fingerprint}
    save_checkpoint(
        dst,
        pruned,
        checkpoint.labels,
        checkpoint.train_config,
        metrics,
        weights_dtype=checkpoint.weights_dtype,
    )
    return Checkpoint(
        model=pruned,
        labels=checkpoint.labels,
        train_config=checkpoint.train_config,
        metrics=metrics,
        path=Path(dst),
        weights_dtype=checkpoint.weights_dtype,
    )
