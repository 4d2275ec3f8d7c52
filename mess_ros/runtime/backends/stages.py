"""The per-stage export on disk: file names, ``manifest.json`` and reading it back.

Written by :mod:`mess_ros.runtime.backends.export` (which needs torch to
trace the network); read by the runtimes that execute it, which need only
this module: a robot running ONNX Runtime reads the export without PyTorch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from mess_ros.runtime.backends.errors import BackendError

EXPORT_FORMAT: Final = "mess_ros.stage_export"
EXPORT_VERSION: Final = 1
INPUT_NAME: Final = "input"
OUTPUT_NAME: Final = "output"
OUTPUT_LOGITS: Final = "logits"
OUTPUT_SIZE: Final = "size_hw"
MANIFEST: Final = "manifest.json"


@dataclass(frozen=True)
class StageFile:
    """One exported stage: its file and the shapes it was exported at."""

    path: Path
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]


@dataclass(frozen=True)
class StageExport:
    """The exported stages of one model at one input size and precision."""

    directory: Path
    model_fingerprint: str
    input_hw: tuple[int, int]
    precision: str
    blocks: tuple[str, ...]
    segments: dict[str, StageFile]
    heads: dict[str, StageFile]
    output: Path

    def segment(self, point: str) -> StageFile:
        return self._find(self.segments, point, "block")

    def head(self, exit_id: str) -> StageFile:
        return self._find(self.heads, exit_id, "exit")

    def _find(self, files: Mapping[str, StageFile], name: str, what: str) -> StageFile:
        try:
            return files[name]
        except KeyError as err:
            msg = (
                f"the export in {self.directory} has no {what} {name!r}; it holds "
                f"{', '.join(files)}"
            )
            raise BackendError(msg) from err


def load_export(directory: Path) -> StageExport | None:
    """The export in ``directory``, or None when it is missing, incomplete or of another format."""
    try:
        data = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
        if data.get("format") != EXPORT_FORMAT or data.get("version") != EXPORT_VERSION:
            return None
        segments = {k: _stage_file(directory, v) for k, v in data["segments"].items()}
        heads = {k: _stage_file(directory, v) for k, v in data["heads"].items()}
        output = directory / str(data["output"])
        files = [*(s.path for s in segments.values()), *(h.path for h in heads.values()), output]
        if not all(path.is_file() for path in files):
            return None
        height, width = (int(v) for v in data["input_hw"])
        return StageExport(
            directory=directory,
            model_fingerprint=str(data["model_fingerprint"]),
            input_hw=(height, width),
            precision=str(data["precision"]),
            blocks=tuple(str(b) for b in data["blocks"]),
            segments=segments,
            heads=heads,
            output=output,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _stage_file(directory: Path, entry: Mapping[str, Any]) -> StageFile:
    return StageFile(
        path=directory / str(entry["file"]),
        input_shape=tuple(int(v) for v in entry["input_shape"]),
        output_shape=tuple(int(v) for v in entry["output_shape"]),
    )
