"""The run directory: what a training run leaves behind, and its resumable state.

::

    <out>/checkpoint.pt      final model (mess_ros.model.checkpoint format) with labels,
                             train config and metrics
    <out>/config.yaml        the exact TrainConfig (mess_train --config reads it back)
    <out>/metrics.json       per-exit mIoU on the validation split, overall and per difficulty
    <out>/calibration.npz    the calibration cache the deployment search consumes
    <out>/train_log.csv      one row per training step (loss terms, lr, periodic validation)
    <out>/train_state.pt     model + optimiser state of the last saved step (for --resume)

Only rank 0 of a distributed job writes; every rank reads the state on resume.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mess_ros.textfiles import atomic_write, write_text_atomically
from mess_ros.train.config import TrainConfig, load_config
from mess_ros.train.errors import TrainError

STATE_FORMAT = "mess_ros.train_state"
STATE_VERSION = 1
LOG_COLUMNS = (
    "stage",
    "step",
    "loss",
    "ce_loss",
    "distill_loss",
    "lr",
    "elapsed_s",
    "val_miou_final",
    "val_miou_exits_mean",
)
# Settings that may differ when a run is resumed: they change where and how fast it
# runs, not what it computes.
RESUMABLE_CHANGES = frozenset({"device", "workers", "amp"})
# Settings only stage 2 reads: they may still change while a run has not left stage 1,
# so stage 2 can be tuned (edit the run's config.yaml, then --resume) without
# training the backbone again.
STAGE2_SETTINGS = frozenset({"stage2_steps", "stage2_lr", "distill_weight", "distill_temperature"})


@dataclass(frozen=True)
class TrainState:
    """A resumable point of training: stage ``stage_index`` has completed ``step`` steps."""

    stage_index: int
    stage_name: str
    step: int
    config: dict[str, Any]
    model_spec: dict[str, Any]
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scaler: dict[str, Any]
    torch_rng: torch.Tensor
    cuda_rng: torch.Tensor | None
    elapsed_s: float


class RunDir:
    """Paths and writers of one run directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.checkpoint_path = self.root / "checkpoint.pt"
        self.config_path = self.root / "config.yaml"
        self.metrics_path = self.root / "metrics.json"
        self.calibration_path = self.root / "calibration.npz"
        self.log_path = self.root / "train_log.csv"
        self.state_path = self.root / "train_state.pt"

    def check_new(self) -> None:
        """Refuse to overwrite an earlier run silently (read-only, so every rank may call it)."""
        if self.root.exists() and not self.root.is_dir():
            raise TrainError(f"output path {str(self.root)!r} exists and is not a directory")
        existing = [p.name for p in (self.state_path, self.checkpoint_path) if p.exists()]
        if existing:
            msg = (
                f"output directory {str(self.root)!r} already holds a run ({', '.join(existing)}); "
                "pass --resume to continue it or choose another --out"
            )
            raise TrainError(msg)

    def saved_config(self) -> TrainConfig:
        """The config a run was started with (what --resume continues)."""
        if not self.config_path.exists():
            msg = f"cannot resume: {str(self.config_path)!r} does not exist (no run started there)"
            raise TrainError(msg)
        return load_config(self.config_path)

    def write_config(self, config: TrainConfig) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_text_atomically(self.config_path, config.yaml_text())

    def write_metrics(self, metrics: Mapping[str, Any]) -> None:
        write_text_atomically(
            self.metrics_path, json.dumps(metrics, indent=2, sort_keys=False) + "\n"
        )

    # --- resumable state ------------------------------------------------------------------

    def save_state(self, state: TrainState) -> None:
        payload = {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "stage_index": state.stage_index,
            "stage_name": state.stage_name,
            "step": state.step,
            "config": state.config,
            "model_spec": state.model_spec,
            "model": state.model,
            "optimizer": state.optimizer,
            "scaler": state.scaler,
            "torch_rng": state.torch_rng,
            "cuda_rng": state.cuda_rng,
            "elapsed_s": state.elapsed_s,
        }
        with atomic_write(self.state_path) as handle:
            torch.save(payload, handle)

    def load_state(self, config: TrainConfig) -> TrainState | None:
        """The last saved state, checked against ``config``; None when no step was saved yet."""
        if not self.state_path.exists():
            return None
        where = f"training state {str(self.state_path)!r}"
        try:
            payload = torch.load(self.state_path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types for a corrupt file
            raise TrainError(f"{where} cannot be read ({err}); delete it to restart") from err
        if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
            raise TrainError(f"{where} is not a mess_ros training state")
        if payload.get("version") != STATE_VERSION:
            raise TrainError(f"{where} has unsupported version {payload.get('version')!r}")
        stored = payload["config"]
        current = config.to_dict()
        free = RESUMABLE_CHANGES
        if payload.get("stage_index") == 0 and stored.get("mode") == "two_stage":
            free = free | STAGE2_SETTINGS
        # A setting added after the state was saved counts as its default there.
        defaults = TrainConfig.scalar_defaults()
        changed = sorted(
            key
            for key in set(stored) | set(current)
            if key not in free and stored.get(key, defaults.get(key)) != current.get(key)
        )
        if changed:
            msg = (
                f"{where} was saved with different settings ({', '.join(changed)}); "
                "resume with the run's own config or start a new --out"
            )
            raise TrainError(msg)
        try:
            return TrainState(
                stage_index=int(payload["stage_index"]),
                stage_name=str(payload["stage_name"]),
                step=int(payload["step"]),
                config=stored,
                model_spec=payload["model_spec"],
                model=payload["model"],
                optimizer=payload["optimizer"],
                scaler=payload["scaler"],
                torch_rng=payload["torch_rng"],
                cuda_rng=payload.get("cuda_rng"),
                elapsed_s=float(payload["elapsed_s"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise TrainError(f"{where} is incomplete: {err!r}") from err


class TrainLog:
    """Append-only CSV of training steps that survives (and is trimmed by) a resume."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def start(self, stage_names: list[str], resume_at: tuple[int, int] | None) -> int:
        """Create the log, or on resume drop rows written after the resumed step.

        A crash between a log write and the next state save leaves rows the
        resumed run will produce again; trimming keeps one row per step.
        Returns how many logged steps were dropped: the steps a resume repeats.
        """
        existing = list(self.rows()) if self.path.exists() else []
        rows = existing if resume_at is not None else []
        if resume_at is not None:
            stage_index, step = resume_at
            rows = [
                row
                for row in rows
                if row["stage"] in stage_names
                and (stage_names.index(row["stage"]), int(row["step"])) <= (stage_index, step)
            ]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=LOG_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        return len(existing) - len(rows)

    def append(self, row: Mapping[str, Any]) -> None:
        with self.path.open("a", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=LOG_COLUMNS)
            writer.writerow({key: _format_cell(row.get(key)) for key in LOG_COLUMNS})

    def rows(self) -> Iterator[dict[str, str]]:
        with self.path.open(newline="", encoding="utf-8") as handle:
            yield from csv.DictReader(handle)


def _format_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
