"""Latency tables and the online latency model behind deadline decisions.

A :class:`LatencyTable` is what profiling measures once per device: the time
of every backbone block, every exit head (including its confidence) and every
exit's output step (upsample + argmax). The deploy search prices
configurations with it and the engine starts its predictions from it.

On the robot the table is only a starting point: the machine may differ from
the one profiled, and other processes load it. :class:`OnlineLatencyModel`
therefore corrects the table from the times the engine measures, learns how
the externally reported load (0..1) slows things down, and keeps a fast
correction for slow-downs nobody reports. Predictions are given at a high
quantile so that deadline decisions are robust to jitter.

Stage keys are plain strings (``segment:<point>``, ``head:<exit id>``,
``output:<exit id>``, ``preprocess``) so they double as the names of the
per-stage times the engine reports.
"""

from __future__ import annotations

import json
import math
import statistics
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from mess_ros.runtime.config import FINAL_EXIT, DeadlineConfig
from mess_ros.runtime.errors import LatencyTableError, LoadValueError
from mess_ros.textfiles import read_text

TABLE_FORMAT: Final = "mess_ros.latency_table"
TABLE_VERSION: Final = 1

SEGMENT: Final = "segment"
HEAD: Final = "head"
OUTPUT: Final = "output"
PREPROCESS_KEY: Final = "preprocess"


def segment_key(point: str) -> str:
    """Stage key of the backbone block ending at ``point`` (the first one includes the stem)."""
    return f"{SEGMENT}:{point}"


def head_key(exit_id: str) -> str:
    """Stage key of an exit head plus its confidence computation."""
    return f"{HEAD}:{exit_id}"


def output_key(exit_id: str) -> str:
    """Stage key of turning an exit's logits into the mask (upsample + argmax + copy)."""
    return f"{OUTPUT}:{exit_id}"


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
        point = exit_id.partition(":")[0]
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
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
            tmp.replace(target)
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
        if exit_id != FINAL_EXIT and exit_id.partition(":")[0] not in segments:
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
    )


# --- online model --------------------------------------------------------------------------


@dataclass(frozen=True)
class LatencyModelParams:
    """Tuning of :class:`OnlineLatencyModel`, taken from :class:`DeadlineConfig`."""

    quantile: float = 0.9
    alpha: float = 0.2
    load_timeout_ms: float = 1000.0
    use_load: bool = True
    load_beta: float = 1.0
    margin_ms: float = 0.0

    @classmethod
    def from_config(cls, config: DeadlineConfig) -> LatencyModelParams:
        return cls(
            quantile=config.latency_quantile,
            alpha=config.ewma_alpha,
            load_timeout_ms=config.load_timeout_ms,
            use_load=config.use_load,
            load_beta=config.load_beta,
            margin_ms=config.safety_margin_ms,
        )

    @property
    def z(self) -> float:
        """Standard-normal score of the quantile (the frame spread is modelled as normal)."""
        return statistics.NormalDist().inv_cdf(self.quantile)


# An unexplained slow-down must be followed within a few frames, a speed-up less urgently
# (over-predicting only costs accuracy, under-predicting costs deadlines).
_FAST_ALPHA: Final = 0.6
# Forgetting factor of the load regression: memory of about 1 / (1 - 0.98) = 50 frames.
_FORGETTING: Final = 0.98
# Caps on the regression covariance against wind-up while the load stays constant.
_P_MAX_INTERCEPT: Final = 0.5
_P_MAX_SLOPE: Final = 4.0
_MIN_SPREAD: Final = 0.02
_FACTOR_RANGE: Final = (0.05, 50.0)

LOAD_REJECT_REASONS: Final = ("nan", "out_of_range", "stale")


class OnlineLatencyModel:
    """Per-stage latency predictions that follow the machine as it runs.

    Model of a frame's stage ``k`` under reported load ``L``::

        time_k = base_k * c_k * (theta0 + theta1 * L) * g        (mean)
        quantile = mean * (1 + z_q * spread)                       (summed over a path)

    ``base_k`` is the table's mean; ``c_k`` a slow per-stage correction (the
    shape of the profile on this machine); ``theta`` a recursive-least-squares
    fit of frame time ratio against load (``theta1 / theta0`` is the learned
    ``beta`` of ``time = base * (1 + beta * load)``); ``g`` a fast factor that
    absorbs slow-downs the load signal does not explain, rising within a few
    frames; ``spread`` an EWMA of the frame's relative prediction error.

    Learning happens in :meth:`end_frame` on the inference thread; load
    reports may arrive from any thread.
    """

    def __init__(self, table: LatencyTable, params: LatencyModelParams | None = None) -> None:
        self.table = table
        self.params = params or LatencyModelParams()
        self._base: dict[str, float] = {}
        for point, stat in table.segments.items():
            self._base[segment_key(point)] = stat.mean_ms
        for exit_id, stat in table.heads.items():
            self._base[head_key(exit_id)] = stat.mean_ms
        for exit_id, stat in table.outputs.items():
            self._base[output_key(exit_id)] = stat.mean_ms
        self._correction: dict[str, float] = dict.fromkeys(self._base, 1.0)
        self._theta = [1.0, self.params.load_beta]
        self._cov = [[_P_MAX_INTERCEPT * 0.2, 0.0], [0.0, _P_MAX_SLOPE]]
        self._unexplained = 1.0
        self._spread_var = max(table.relative_spread(), _MIN_SPREAD) ** 2
        self._frames = 0
        self._load_report: tuple[float, int] | None = None
        self._stale_report: tuple[float, int] | None = None
        self._lock = threading.Lock()
        self._rejected = dict.fromkeys(LOAD_REJECT_REASONS, 0)

    # --- load ----------------------------------------------------------------------------

    def report_load(self, load: float, stamp_ns: int) -> None:
        """Record an external load reading (share of the machine used by others, 0..1).

        NaN, infinite and out-of-range readings raise :class:`LoadValueError` and
        are counted by reason; the previous valid reading stays in force until
        it times out.
        """
        reason = ""
        if not isinstance(load, int | float) or isinstance(load, bool) or math.isnan(load):
            reason = "nan"
        elif not 0.0 <= load <= 1.0:
            reason = "out_of_range"
        if reason:
            with self._lock:
                self._rejected[reason] += 1
            raise LoadValueError(f"load {load!r} rejected: expected a number in [0, 1]")
        self._load_report = (float(load), int(stamp_ns))

    def load_at(self, now_ns: int) -> float | None:
        """The load in force at ``now_ns``: None when disabled, never reported or stale."""
        report = self._load_report
        if report is None or not self.params.use_load:
            return None
        load, stamp_ns = report
        if (now_ns - stamp_ns) / 1e6 > self.params.load_timeout_ms:
            with self._lock:
                if self._stale_report is not report:  # count each expired report once
                    self._stale_report = report
                    self._rejected["stale"] += 1
            return None
        return load

    @property
    def rejected_loads(self) -> dict[str, int]:
        """Rejected load reports by reason (``nan``, ``out_of_range``, ``stale``)."""
        with self._lock:
            return dict(self._rejected)

    # --- learned state (read-only views) ---------------------------------------------------

    @property
    def beta(self) -> float:
        """Learned slope of ``time = base * (1 + beta * load)``."""
        return self._theta[1] / self._theta[0]

    @property
    def unexplained_factor(self) -> float:
        """Current correction for slow-downs the load signal does not explain."""
        return self._unexplained

    @property
    def spread(self) -> float:
        """Relative standard deviation of frame times around the prediction."""
        return math.sqrt(self._spread_var)

    @property
    def frames_observed(self) -> int:
        return self._frames

    def factor(self, load: float | None) -> float:
        """Multiplier of the load-free stage times at ``load`` (None = no load information)."""
        level = self._theta[0] + self._theta[1] * (load or 0.0)
        return max(level, _FACTOR_RANGE[0]) * self._unexplained

    def expected_ms(self, key: str, load: float | None, output_scale: float = 1.0) -> float:
        """Mean predicted time of one stage."""
        return self.load_free_ms(key, output_scale) * self.factor(load)

    def load_free_ms(self, key: str, output_scale: float = 1.0) -> float:
        """Mean time of a stage at no load: the table corrected per stage (0 if never seen)."""
        base = self._base.get(key)
        if base is None:
            return 0.0  # a stage never measured nor profiled: learnt at its first observation
        scale = output_scale if stage_kind(key) == OUTPUT else 1.0
        return base * self._correction[key] * scale

    # --- frames --------------------------------------------------------------------------

    def begin_frame(self, load: float | None, output_scale: float = 1.0) -> FrameLatency:
        """Freeze the predictions for one frame (load and factors at its start)."""
        return FrameLatency(self, load, output_scale)

    def end_frame(self, frame: FrameLatency) -> None:
        """Learn from the stages a frame measured."""
        measured = [(k, ms) for k, ms in frame.measurements if math.isfinite(ms) and ms >= 0]
        for key, ms in measured:  # first sight of a stage the table lacks: adopt it
            if key not in self._base:
                self._base[key] = max(ms, 1e-6) / self.factor(frame.load)
                self._correction[key] = 1.0
        expected = {k: self.load_free_ms(k, frame.output_scale) for k, _ in measured}
        total_expected = sum(expected.values())
        total_measured = sum(ms for _, ms in measured)
        if total_expected <= 0 or total_measured <= 0:
            return
        alpha = self.params.alpha
        load = frame.load or 0.0
        ratio = total_measured / total_expected
        level = max(self._theta[0] + self._theta[1] * load, _FACTOR_RANGE[0])
        error = ratio / (level * self._unexplained) - 1.0
        self._spread_var = max((1 - alpha) * self._spread_var + alpha * error**2, _MIN_SPREAD**2)
        # The regression moves first; the fast factor then only takes what it left unexplained,
        # so a residual is never corrected twice.
        self._update_regression(load, ratio)
        level = max(self._theta[0] + self._theta[1] * load, _FACTOR_RANGE[0])
        target = ratio / level
        rate = max(alpha, _FAST_ALPHA) if target > self._unexplained else alpha
        self._unexplained = _clamp(self._unexplained + rate * (target - self._unexplained))
        for key, ms in measured:
            if expected[key] > 0:
                relative = (ms / expected[key]) / ratio
                self._correction[key] = _clamp(self._correction[key] * (1 + alpha * (relative - 1)))
        self._frames += 1

    def _update_regression(self, load: float, ratio: float) -> None:
        """One recursive-least-squares step of ``ratio = theta0 + theta1 * load``."""
        x = (1.0, load)
        p = self._cov
        px = (p[0][0] * x[0] + p[0][1] * x[1], p[1][0] * x[0] + p[1][1] * x[1])
        denominator = _FORGETTING + x[0] * px[0] + x[1] * px[1]
        gain = (px[0] / denominator, px[1] / denominator)
        residual = ratio - (self._theta[0] + self._theta[1] * load)
        self._theta = [
            max(self._theta[0] + gain[0] * residual, _FACTOR_RANGE[0]),
            max(self._theta[1] + gain[1] * residual, 0.0),  # load never speeds things up
        ]
        new = [[(p[i][j] - gain[i] * px[j]) / _FORGETTING for j in range(2)] for i in range(2)]
        for i, cap in ((0, _P_MAX_INTERCEPT), (1, _P_MAX_SLOPE)):
            if new[i][i] > cap:  # rescale row and column: keeps the matrix positive definite
                shrink = math.sqrt(cap / new[i][i])
                for j in range(2):
                    new[i][j] *= shrink
                    new[j][i] *= shrink
        self._cov = new


def _clamp(value: float) -> float:
    return min(max(value, _FACTOR_RANGE[0]), _FACTOR_RANGE[1])


class FrameLatency:
    """Predictions and measurements of one frame.

    The factors are frozen at the frame's start; only the in-frame correction
    moves: once the stages measured so far exceed even their high-quantile
    prediction, the rest of the frame is assumed to be as slow, so a sudden
    slow-down changes decisions within the frame it hits.
    """

    def __init__(self, model: OnlineLatencyModel, load: float | None, output_scale: float) -> None:
        self.model = model
        self.load = load
        self.output_scale = output_scale
        self.measurements: list[tuple[str, float]] = []
        self._factor = model.factor(load)
        self._quantile_scale = 1.0 + model.params.z * model.spread
        self._measured_ms = 0.0
        self._predicted_high_ms = 0.0

    def expected_ms(self, key: str) -> float:
        """Mean prediction of a stage at this frame's load."""
        return self.model.load_free_ms(key, self.output_scale) * self._factor

    def predict_ms(self, keys: Iterable[str], quantile: bool = True) -> float:
        """Predicted time of running ``keys`` from now (high quantile + margin by default)."""
        mean = sum(self.expected_ms(k) for k in keys)
        if not quantile:
            return mean
        return mean * self._quantile_scale * self.in_frame_factor + self.model.params.margin_ms

    @property
    def in_frame_factor(self) -> float:
        """How much slower than its high-quantile prediction this frame has run so far (>= 1)."""
        if self._predicted_high_ms <= 0:
            return 1.0
        return max(1.0, self._measured_ms / self._predicted_high_ms)

    def record(self, key: str, measured_ms: float) -> None:
        self.measurements.append((key, measured_ms))
        expected = self.expected_ms(key)
        if expected > 0:  # a stage with no prediction yet says nothing about this frame's pace
            self._measured_ms += measured_ms
            self._predicted_high_ms += expected * self._quantile_scale
