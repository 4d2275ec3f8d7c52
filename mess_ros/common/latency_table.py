"""The latency table: a file format, read and written without torch.

A :class:`LatencyTable` is what profiling measures once per device: the time
of every backbone block, every exit head (including its confidence) and every
exit's output step (upsample + argmax). The deploy search prices
configurations with it and the engine starts its online predictions from it
(:mod:`mess_ros.runtime.latency`). It is produced by ``mess_profile`` and read
by the search, the engine and the benchmarks, so it lives below all of them.

Stage keys are plain strings (``segment:<point>``, ``head:<exit id>``,
``output:<exit id>``, ``preprocess``, ``deliver:<h>x<w>``) so they double as
the names of the per-stage times the engine reports.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from mess_ros.common.errors import LatencyTableError
from mess_ros.common.exits import FINAL_EXIT, exit_point
from mess_ros.textfiles import read_text, write_text_atomically

TABLE_FORMAT: Final = "mess_ros.latency_table"
TABLE_VERSION: Final = 1

SEGMENT: Final = "segment"
HEAD: Final = "head"
OUTPUT: Final = "output"
PREPROCESS_KEY: Final = "preprocess"
DELIVER: Final = "deliver"


def segment_key(point: str) -> str:
    """Stage key of the backbone block ending at ``point`` (the first one includes the stem)."""
    return f"{SEGMENT}:{point}"


def head_key(exit_id: str) -> str:
    """Stage key of an exit head plus its confidence computation."""
    return f"{HEAD}:{exit_id}"


def output_key(exit_id: str) -> str:
    """Stage key of turning an exit's logits into the mask (upsample + argmax + copy)."""
    return f"{OUTPUT}:{exit_id}"


def deliver_key(frame_hw: tuple[int, int]) -> str:
    """Stage key of handing a finished mask to its consumers (conversion, publishing).

    Keyed by frame size: converting and publishing a mask costs in proportion
    to its pixels, and a node may see frames of several sizes.
    """
    return f"{DELIVER}:{frame_hw[0]}x{frame_hw[1]}"


def stage_kind(key: str) -> str:
    """``segment``, ``head``, ``output`` or the key itself for stages without a name."""
    return key.partition(":")[0]


@dataclass(frozen=True)
class LatencyStat:
    """Time of one stage: mean and the table's high quantile (``LatencyTable.quantile``)."""

    mean_ms: float
    p90_ms: float
    std_ms: float = 0.0
    count: int = 0

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float], quantile: float = 0.9) -> LatencyStat:
        """Summarise measured times; ``p90_ms`` holds the ``quantile`` of the samples."""
        if not samples_ms:
            raise ValueError("a latency statistic needs at least one sample")
        ordered = sorted(samples_ms)
        position = quantile * (len(ordered) - 1)
        low = math.floor(position)
        high = min(low + 1, len(ordered) - 1)
        value = ordered[low] + (ordered[high] - ordered[low]) * (position - low)
        std = statistics.pstdev(ordered) if len(ordered) > 1 else 0.0
        return cls(statistics.fmean(ordered), value, std, len(ordered))

    def value(self, stat: str) -> float:
        """``stat`` is ``mean`` or ``p90`` (the table's high quantile; ``high`` is an alias)."""
        if stat == "mean":
            return self.mean_ms
        if stat in ("p90", "high", "quantile"):
            return self.p90_ms
        raise ValueError(f"unknown latency statistic {stat!r}; expected 'mean' or 'p90'")

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean_ms": self.mean_ms,
            "p90_ms": self.p90_ms,
            "std_ms": self.std_ms,
            "count": self.count,
        }


@dataclass
class LatencyTable:
    """Profiled per-stage latency of one model at one input size on one device.

    ``segments`` is in depth order: the block ending at each point, the first
    one including the stem, the last one ending at the final point.
    """

    model_fingerprint: str
    input_hw: tuple[int, int]
    device: str
    device_name: str
    versions: dict[str, str]
    quantile: float
    segments: dict[str, LatencyStat]
    heads: dict[str, LatencyStat]
    outputs: dict[str, LatencyStat]
    precision: str = "fp32"
    notes: dict[str, Any] = field(default_factory=dict)
    backend: str = "torch"
    """Runtime that executed the stages (``engine.backend``); tables of other runtimes misprice."""

    # --- structure -----------------------------------------------------------------------

    @property
    def points(self) -> list[str]:
        return list(self.segments)

    @property
    def final_point(self) -> str:
        return self.points[-1]

    def exit_point(self, exit_id: str) -> str:
        """Block after which ``exit_id`` sits ('final' sits after the last block)."""
        if exit_id == FINAL_EXIT:
            return self.final_point
        point = exit_point(exit_id)
        if point not in self.segments:
            raise LatencyTableError(
                f"exit {exit_id!r} sits at {point!r}, which the latency table does not know; "
                f"known points: {', '.join(self.segments)}"
            )
        return point

    def exit_order(self, exit_ids: Iterable[str]) -> list[str]:
        """Exits sorted as the engine evaluates them: by depth, then name, 'final' last."""
        depth = {p: i for i, p in enumerate(self.segments)}
        return sorted(
            set(exit_ids),
            key=lambda e: (e == FINAL_EXIT, depth[self.exit_point(e)], e),
        )

    def segments_through(self, point: str) -> list[str]:
        """Points of the blocks from the input up to and including ``point``."""
        points = self.points
        return points[: points.index(point) + 1]

    # --- costs ---------------------------------------------------------------------------

    def path_ms(self, active_exits: Sequence[str], taken: str, stat: str = "mean") -> float:
        """Cost of a frame that stops at ``taken`` after evaluating every active exit before it.

        Blocks up to ``taken``'s point + heads of the active exits up to and
        including ``taken`` + the output step of ``taken``: the price the
        confidence-based policies pay, which the deploy search optimises.
        """
        exits = self.exit_order([*active_exits, taken])
        evaluated = exits[: exits.index(taken) + 1]
        missing = [e for e in evaluated if e not in self.heads or e not in self.outputs]
        if missing:
            raise LatencyTableError(
                f"the latency table has no entry for exit(s) {', '.join(missing)}; "
                f"known exits: {', '.join(self.heads)}"
            )
        total = sum(
            self.segments[p].value(stat) for p in self.segments_through(self.exit_point(taken))
        )
        total += sum(self.heads[e].value(stat) for e in evaluated)
        return total + self.outputs[taken].value(stat)

    def base_ms(self, key: str) -> float | None:
        """Mean time of a stage key, or None for stages the table does not hold."""
        kind, _, name = key.partition(":")
        source = {SEGMENT: self.segments, HEAD: self.heads, OUTPUT: self.outputs}.get(kind)
        stat = source.get(name) if source is not None else None
        return stat.mean_ms if stat is not None else None

    def relative_spread(self) -> float:
        """Typical relative deviation of a whole frame, from the segment statistics.

        Uses each block's std when recorded, else infers it from the high
        quantile assuming normal jitter; blocks are assumed fully correlated
        (they are under load), so spreads add up.
        """
        z = statistics.NormalDist().inv_cdf(self.quantile)
        mean = sum(s.mean_ms for s in self.segments.values())
        spread = sum(
            s.std_ms if s.std_ms > 0 else max(s.p90_ms - s.mean_ms, 0.0) / z
            for s in self.segments.values()
        )
        return spread / mean if mean > 0 else 0.0

    def check_covers(self, points: Sequence[str], exit_ids: Sequence[str], source: str) -> None:
        """Raise :class:`LatencyTableError` unless the table prices every block and exit given."""
        problems = []
        if list(points) != self.points:
            problems.append(
                f"blocks {', '.join(self.points)} but the model has {', '.join(points)}"
            )
        missing = [e for e in exit_ids if e not in self.heads or e not in self.outputs]
        if missing:
            problems.append(f"no entry for exit(s) {', '.join(missing)}")
        if problems:
            raise LatencyTableError(
                f"latency table {source} does not fit the model: " + "; ".join(problems)
            )

    # --- files ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": TABLE_FORMAT,
            "version": TABLE_VERSION,
            "model_fingerprint": self.model_fingerprint,
            "input_hw": list(self.input_hw),
            "device": self.device,
            "device_name": self.device_name,
            "precision": self.precision,
            "backend": self.backend,
            "versions": dict(self.versions),
            "quantile": self.quantile,
            "segments": {k: v.to_dict() for k, v in self.segments.items()},
            "heads": {k: v.to_dict() for k, v in self.heads.items()},
            "outputs": {k: v.to_dict() for k, v in self.outputs.items()},
            "notes": dict(self.notes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "latency table") -> LatencyTable:
        """Build and validate a table; every error names ``source``."""
        try:
            return _table_from_dict(data)
        except (KeyError, TypeError, ValueError) as err:
            detail = f"missing field {err}" if isinstance(err, KeyError) else str(err)
            raise LatencyTableError(f"{source} is not a valid latency table: {detail}") from err

    def save(self, path: str | Path) -> None:
        target = Path(path)
        try:
            write_text_atomically(target, json.dumps(self.to_dict(), indent=2) + "\n")
        except OSError as err:
            raise LatencyTableError(f"cannot write latency table {target}: {err}") from err

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        source = Path(path)
        expected = "a JSON latency table written by mess_profile"
        text = read_text(source, "latency table", expected, LatencyTableError)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise LatencyTableError(f"latency table {source} is not valid JSON: {err}") from err
        if not isinstance(data, Mapping):
            raise LatencyTableError(f"latency table {source} must hold a JSON object")
        return cls.from_dict(data, str(source))


def _stat_from_dict(name: str, data: object) -> LatencyStat:
    if not isinstance(data, Mapping):
        raise TypeError(f"{name} must be an object with mean_ms and p90_ms")
    values = {}
    for key in ("mean_ms", "p90_ms", "std_ms"):
        raw = data.get(key, 0.0) if key == "std_ms" else data[key]
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise TypeError(f"{name}.{key} must be a number, got {raw!r}")
        if not math.isfinite(raw) or raw < 0:
            raise ValueError(f"{name}.{key} must be a finite time >= 0 ms, got {raw!r}")
        values[key] = float(raw)
    count = data.get("count", 0)
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise TypeError(f"{name}.count must be an integer >= 0, got {count!r}")
    return LatencyStat(values["mean_ms"], values["p90_ms"], values["std_ms"], count)


def _stats(data: Mapping[str, Any], section: str) -> dict[str, LatencyStat]:
    raw = data[section]
    if not isinstance(raw, Mapping):
        raise TypeError(f"{section} must map names to statistics")
    return {str(k): _stat_from_dict(f"{section}.{k}", v) for k, v in raw.items()}


def _table_from_dict(data: Mapping[str, Any]) -> LatencyTable:
    if data.get("format") != TABLE_FORMAT:
        raise ValueError(f"format must be {TABLE_FORMAT!r}, got {data.get('format')!r}")
    if data.get("version") != TABLE_VERSION:
        raise ValueError(
            f"version {data.get('version')!r} is not supported (expected {TABLE_VERSION})"
        )
    hw = data["input_hw"]
    if not (
        isinstance(hw, list | tuple)
        and len(hw) == 2
        and all(isinstance(v, int) and v > 0 for v in hw)
    ):
        raise ValueError(f"input_hw must be [height, width] in pixels, got {hw!r}")
    quantile = data["quantile"]
    if not isinstance(quantile, int | float) or not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile!r}")
    segments, heads, outputs = (
        _stats(data, "segments"),
        _stats(data, "heads"),
        _stats(data, "outputs"),
    )
    if not segments:
        raise ValueError("segments must list at least one backbone block")
    if FINAL_EXIT not in heads:
        raise ValueError(f"heads must include the {FINAL_EXIT!r} exit")
    if set(heads) != set(outputs):
        raise ValueError(
            f"heads and outputs must list the same exits (heads: {', '.join(heads)}; "
            f"outputs: {', '.join(outputs)})"
        )
    for exit_id in heads:
        if exit_id != FINAL_EXIT and exit_point(exit_id) not in segments:
            raise ValueError(f"exit {exit_id!r} sits at a block missing from segments")
    versions = data.get("versions", {})
    notes = data.get("notes", {})
    if not isinstance(versions, Mapping) or not isinstance(notes, Mapping):
        raise TypeError("versions and notes must be objects")
    return LatencyTable(
        model_fingerprint=str(data["model_fingerprint"]),
        input_hw=(int(hw[0]), int(hw[1])),
        device=str(data["device"]),
        device_name=str(data["device_name"]),
        versions={str(k): str(v) for k, v in versions.items()},
        quantile=float(quantile),
        segments=segments,
        heads=heads,
        outputs=outputs,
        precision=str(data.get("precision", "fp32")),
        notes=dict(notes),
        backend=str(data.get("backend", "torch")),  # tables written before backends existed
    )
