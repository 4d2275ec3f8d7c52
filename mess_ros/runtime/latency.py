"""The online latency model behind deadline decisions.

A latency table (:mod:`mess_ros.common.latency_table`) is only a starting
point on the robot: the machine may differ from the one profiled, and other
processes load it. :class:`OnlineLatencyModel` therefore corrects the table
from the times the engine measures, learns how the externally reported load
(0..1) slows things down, per thread count, and follows slow-downs nobody
reports. Predictions are given at a high quantile so that deadline decisions
are robust to jitter.
"""

from __future__ import annotations

import math
import statistics
import threading
from collections.abc import Iterable
from typing import Final

from mess_ros.common.latency_table import (
    OUTPUT,
    LatencyTable,
    head_key,
    output_key,
    segment_key,
    stage_kind,
)
from mess_ros.config import DeadlineConfig
from mess_ros.runtime.errors import LoadValueError

# --- online model --------------------------------------------------------------------------


LOAD_KNOTS: Final = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
"""Loads at which the slow-down is learnt; in between it is interpolated linearly."""

# An unexplained slow-down must be followed within a few frames, a speed-up less urgently
# (over-predicting only costs accuracy, under-predicting costs deadlines).
_FAST_ALPHA: Final = 0.6
_MIN_SPREAD: Final = 0.02
# Frames after which a load level's measurement no longer bounds the prediction at higher loads.
_FLOOR_MEMORY_FRAMES: Final = 100
_FACTOR_RANGE: Final = (0.05, 50.0)

LOAD_REJECT_REASONS: Final = ("nan", "out_of_range", "stale")


def _knot_weights(load: float) -> list[tuple[int, float]]:
    """Linear-interpolation weights of the (at most two) knots around ``load``."""
    load = min(max(load, LOAD_KNOTS[0]), LOAD_KNOTS[-1])
    for i in range(len(LOAD_KNOTS) - 1):
        low, high = LOAD_KNOTS[i], LOAD_KNOTS[i + 1]
        if load <= high:
            w = (load - low) / (high - low)
            return [(i, 1.0 - w), (i + 1, w)] if w > 0 else [(i, 1.0)]
    return [(len(LOAD_KNOTS) - 1, 1.0)]  # pragma: no cover - the loop always returns


class _LoadCurve:
    """Slow-down factor and relative spread of frame times against the reported load.

    One value per knot of :data:`LOAD_KNOTS`, learnt only from frames run at
    loads near that knot. Frames at one load therefore never move what is
    predicted at a distant one: after a load step up and back down, the
    idle knot still holds the idle measurements, and a fitted global slope
    (which bends the idle prediction towards the loaded frames) cannot turn
    optimistic. Knots no frame has reached yet start from the configured
    prior ``1 + load_beta * load``; the factor is never smaller at a higher
    load than what frames at a lower load measured recently.

    Two factors are kept: ``levels`` rise fast and fall slowly (what
    decisions plan with: an unexplained slow-down is followed within a few
    frames), ``typical`` moves at the same pace both ways and rests on
    measured knots only, interpolated without any floor (the unbiased
    figure, for judging that a frame cannot make its deadline at all: a
    cautious prior or an old outlier must not declare frames lost that the
    machine can still serve).
    """

    def __init__(self, level: float, load_beta: float, spread: float) -> None:
        self.levels = [level * (1.0 + load_beta * knot) for knot in LOAD_KNOTS]
        self.typical = list(self.levels)
        self.seen = [0.0] * len(LOAD_KNOTS)
        self.updated_at = [-_FLOOR_MEMORY_FRAMES - 1] * len(LOAD_KNOTS)
        self.frames = 0
        self.spread_vars = [spread**2] * len(LOAD_KNOTS)

    def level(self, load: float, *, typical: bool = False) -> float:
        if typical:
            return self._measured_level(load)
        weights = _knot_weights(load)
        interpolated = sum(w * self.levels[i] for i, w in weights)
        # Never below what frames at a lower load measured recently (a prior, or a knot no frame
        # has reached for a while, does not count: it would pin the prediction for good).
        recent = [
            self.levels[i]
            for i in range(weights[0][0] + 1)
            if self.frames - self.updated_at[i] <= _FLOOR_MEMORY_FRAMES
        ]
        return max([interpolated, *recent])

    def _measured_level(self, load: float) -> float:
        """``typical`` interpolated between the knots frames have reached, flat beyond them."""
        knots = [(LOAD_KNOTS[i], self.typical[i]) for i, seen in enumerate(self.seen) if seen >= 1]
        if not knots:
            weights = _knot_weights(load)
            return sum(w * self.typical[i] for i, w in weights)
        below = [(knot, value) for knot, value in knots if knot <= load]
        above = [(knot, value) for knot, value in knots if knot > load]
        if not below:
            return above[0][1]
        if not above:
            return below[-1][1]
        (low_knot, low_value), (high_knot, high_value) = below[-1], above[0]
        w = (load - low_knot) / (high_knot - low_knot)
        return (1 - w) * low_value + w * high_value

    def spread(self, load: float) -> float:
        variance = sum(w * self.spread_vars[i] for i, w in _knot_weights(load))
        return math.sqrt(max(variance, _MIN_SPREAD**2))

    def learn(self, load: float, ratio: float, alpha: float) -> None:
        """Move the knots around ``load`` so that its prediction moves towards ``ratio``.

        A normalised least-mean-squares step: the interpolated prediction at
        ``load`` moves by exactly ``rate`` of its error, fast when the frame
        was slower than predicted.
        """
        weights = _knot_weights(load)
        norm = sum(w * w for _, w in weights)
        predicted = sum(w * self.levels[i] for i, w in weights)
        error = ratio / max(predicted, _FACTOR_RANGE[0]) - 1.0
        squared = min(error * error, 1.0)
        for i, w in weights:
            self.spread_vars[i] += alpha * w * (squared - self.spread_vars[i])
        rate = max(alpha, _FAST_ALPHA) if ratio > predicted else alpha
        typical = sum(w * self.typical[i] for i, w in weights)
        self.frames += 1
        for i, w in weights:
            self.seen[i] += w
            self.updated_at[i] = self.frames
            self.levels[i] = _clamp(self.levels[i] + rate * w / norm * (ratio - predicted))
            self.typical[i] = _clamp(self.typical[i] + alpha * w / norm * (ratio - typical))


class OnlineLatencyModel:
    """Per-stage latency predictions that follow the machine as it runs.

    Model of a frame's stage ``k`` under reported load ``L`` in regime ``r``::

        time_k = base_k * c_k * level_r(L)                 (mean)
        quantile = mean * (1 + z_q * spread_r(L))          (summed over a path)

    ``base_k`` is the table's mean; ``c_k`` a slow per-stage correction (the
    shape of the profile on this machine); ``level_r(L)`` the slow-down at
    load ``L`` (see :class:`_LoadCurve`), learnt with a fast rise so that a
    slow-down nobody reports is followed within a few frames; ``spread`` the
    relative error of recent frames at that load. A regime is a way of
    running the network that changes all stage times at once (on the CPU,
    the number of threads): each has its own curve, so switching threads
    back and forth never mixes their measurements.

    Learning happens in :meth:`end_frame` on the inference thread; load
    reports may arrive from any thread.
    """

    def __init__(self, table: LatencyTable, config: DeadlineConfig | None = None) -> None:
        self.table = table
        self.config = config or DeadlineConfig()
        self._base: dict[str, float] = {}
        for point, stat in table.segments.items():
            self._base[segment_key(point)] = stat.mean_ms
        for exit_id, stat in table.heads.items():
            self._base[head_key(exit_id)] = stat.mean_ms
        for exit_id, stat in table.outputs.items():
            self._base[output_key(exit_id)] = stat.mean_ms
        self._correction: dict[str, float] = dict.fromkeys(self._base, 1.0)
        self._initial_spread = max(table.relative_spread(), _MIN_SPREAD)
        self._curves: dict[int, _LoadCurve] = {}
        self._regime_priors: dict[int, float] = {}
        self._load_report: tuple[float, int] | None = None
        self._stale_report: tuple[float, int] | None = None
        self._lock = threading.Lock()
        self._rejected = dict.fromkeys(LOAD_REJECT_REASONS, 0)

    @property
    def z(self) -> float:
        """Standard-normal score of the quantile (the frame spread is modelled as normal)."""
        return statistics.NormalDist().inv_cdf(self.config.latency_quantile)

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
        if report is None or not self.config.use_load:
            return None
        load, stamp_ns = report
        if (now_ns - stamp_ns) / 1e6 > self.config.load_timeout_ms:
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

    # --- regimes and learned state (read-only views) ---------------------------------------

    def set_regime_prior(self, regime: int, relative_level: float) -> None:
        """How much slower than the profiled times ``regime`` runs, before it is measured."""
        self._regime_priors[regime] = _clamp(relative_level)

    def _curve(self, regime: int) -> _LoadCurve:
        curve = self._curves.get(regime)
        if curve is None:
            level = self._regime_priors.get(regime, 1.0)
            curve = _LoadCurve(level, self.config.load_beta, self._initial_spread)
            self._curves[regime] = curve
        return curve

    def beta(self, regime: int = 0) -> float:
        """Learned relative slow-down at full load: ``level(1) / level(0) - 1``."""
        curve = self._curve(regime)
        return curve.level(1.0) / curve.level(0.0) - 1.0

    def factor(self, load: float | None, regime: int = 0, *, typical: bool = False) -> float:
        """Multiplier of the profiled stage times at ``load`` (None = no load information).

        ``typical``: the unbiased factor instead of the fast-rising one decisions plan with.
        """
        return self._curve(regime).level(load or 0.0, typical=typical)

    def spread(self, load: float | None = None, regime: int = 0) -> float:
        """Relative standard deviation of frame times around the prediction at ``load``."""
        return self._curve(regime).spread(load or 0.0)

    def expected_ms(
        self, key: str, load: float | None, output_scale: float = 1.0, regime: int = 0
    ) -> float:
        """Mean predicted time of one stage."""
        return self.load_free_ms(key, output_scale) * self.factor(load, regime)

    def load_free_ms(self, key: str, output_scale: float = 1.0) -> float:
        """Mean time of a stage at no load: the table corrected per stage (0 if never seen)."""
        base = self._base.get(key)
        if base is None:
            return 0.0  # a stage never measured nor profiled: learnt at its first observation
        scale = output_scale if stage_kind(key) == OUTPUT else 1.0
        return base * self._correction[key] * scale

    # --- frames --------------------------------------------------------------------------

    def begin_frame(
        self, load: float | None, output_scale: float = 1.0, regime: int = 0
    ) -> FrameLatency:
        """Freeze the predictions for one frame (load, regime and factors at its start)."""
        return FrameLatency(self, load, output_scale, regime)

    def end_frame(self, frame: FrameLatency, load: float | None = None) -> float | None:
        """Learn from the stages a frame measured; returns its time over the load-free prediction.

        ``load`` is the load in force when the frame ended; the frame is
        learnt at the higher of it and the load it started with, so a frame
        that a load step caught half-way is charged to the load that slowed it.
        """
        measured = [(k, ms) for k, ms in frame.measurements if math.isfinite(ms) and ms >= 0]
        factor = self.factor(frame.load, frame.regime)
        for key, ms in measured:  # first sight of a stage the table lacks: adopt it
            if key not in self._base:
                self._base[key] = max(ms, 1e-6) / factor
                self._correction[key] = 1.0
        expected = {k: self.load_free_ms(k, frame.output_scale) for k, _ in measured}
        total_expected = sum(expected.values())
        total_measured = sum(ms for _, ms in measured)
        if total_expected <= 0 or total_measured <= 0:
            return None
        alpha = self.config.ewma_alpha
        ratio = total_measured / total_expected
        learnt_load = max(frame.load or 0.0, load or 0.0)
        self._curve(frame.regime).learn(learnt_load, ratio, alpha)
        for key, ms in measured:
            if expected[key] > 0:
                relative = (ms / expected[key]) / ratio
                self._correction[key] = _clamp(self._correction[key] * (1 + alpha * (relative - 1)))
        return ratio


def _clamp(value: float) -> float:
    return min(max(value, _FACTOR_RANGE[0]), _FACTOR_RANGE[1])


class FrameLatency:
    """Predictions and measurements of one frame.

    The factors are frozen at the frame's start; only the in-frame correction
    moves: once the stages measured so far exceed even their high-quantile
    prediction, the rest of the frame is assumed to be as slow, so a sudden
    slow-down changes decisions within the frame it hits.
    """

    def __init__(
        self, model: OnlineLatencyModel, load: float | None, output_scale: float, regime: int
    ) -> None:
        self.model = model
        self.load = load
        self.output_scale = output_scale
        self.regime = regime
        self.measurements: list[tuple[str, float]] = []
        self._factor = model.factor(load, regime)
        self._typical_factor = model.factor(load, regime, typical=True)
        self._quantile_scale = 1.0 + model.z * model.spread(load, regime)
        self._margin_ms = model.config.safety_margin_ms
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
        return mean * self._quantile_scale * self.in_frame_factor + self._margin_ms

    def typical_ms(self, keys: Iterable[str]) -> float:
        """Unbiased mean time of ``keys`` at this frame's load: could they make it at all?"""
        free = sum(self.model.load_free_ms(k, self.output_scale) for k in keys)
        return free * self._typical_factor

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
