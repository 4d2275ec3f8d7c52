"""The learnt exit decision: per exit, the probability that its mask is as good as the final one.

The paper's policy stops at an exit when enough pixels are confident. That
one number ignores *which* classes are uncertain and how the confidence is
spread, which is what tells an easy scene from a hard one whose early mask
is confidently wrong. The learnt decision reads more of the exit's output:
its per-class confidence histogram at the exit's own resolution (one softmax,
one bucketize, one bincount, the same numbers the calibration cache stores),
turns it into a few features (:func:`exit_features`) and scores them with a
logistic regression per exit, fitted offline from the calibration cache
(:mod:`mess_ros.deploy.decisions`). The score replaces the confident-pixel
share, so the image thresholds of the ``confidence`` and ``hybrid`` policies
threshold it unchanged.

Numpy only: the engine loads a small JSON file and scores one exit in a few
microseconds. The deployment search scores the calibration images with this
very code, image by image, so its predicted exit decisions are the engine's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from mess_ros.runtime.errors import PolicyError
from mess_ros.textfiles import write_text_atomically

EXIT_MODEL_FORMAT: Final = "mess_ros.exit_model"
EXIT_MODEL_VERSION: Final = 1

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

PROFILE_LEVELS: Final = (0.5, 0.7, 0.8, 0.9, 0.95)
"""Top-1 probabilities at which the share of pixels at or above is a feature."""
UNSURE_BELOW: Final = 0.7
"""A pixel of class c with top-1 probability below this counts as an unsure pixel of c."""


def feature_names(class_names: list[str] | tuple[str, ...]) -> list[str]:
    """Names of :func:`exit_features`' entries, in order (recorded in the model file)."""
    return [
        *(f"share_{name}" for name in class_names),
        *(f"unsure_{name}" for name in class_names),
        *(f"confident_{level:g}" for level in PROFILE_LEVELS),
        "mean_top1",
        "class_entropy",
    ]


def exit_features(class_hist: npt.NDArray[np.integer[Any]]) -> FloatArray:
    """Features of one exit's output from its (C, bins) top-1 class/probability histogram.

    Per class: its share of the pixels and its share of unsure pixels; over
    all pixels: the share at or above a few probabilities, the mean top-1
    probability (bin centres) and the entropy of the class shares.
    """
    counts = np.asarray(class_hist, dtype=np.float64)
    bins = counts.shape[1]
    total = counts.sum()
    if total <= 0:
        raise PolicyError("an exit's confidence histogram holds no pixel")
    share = counts / total
    class_share = share.sum(axis=1)
    unsure = share[:, : _bin(UNSURE_BELOW, bins)].sum(axis=1)
    profile = share.sum(axis=0)
    confident = [float(profile[_bin(level, bins) :].sum()) for level in PROFILE_LEVELS]
    centres = (np.arange(bins, dtype=np.float64) + 0.5) / bins
    mean_top1 = float(profile @ centres)
    present = class_share[class_share > 0]
    entropy = float(-(present * np.log(present)).sum())
    return np.concatenate((class_share, unsure, confident, [mean_top1, entropy]))


def _bin(level: float, bins: int) -> int:
    return round(level * bins)


@dataclass(frozen=True)
class ExitScorer:
    """Logistic regression on standardised features: P(this exit's mask is good enough)."""

    weights: tuple[float, ...]
    bias: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    _arrays: tuple[FloatArray, FloatArray, FloatArray] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not len(self.weights) == len(self.mean) == len(self.scale):
            raise PolicyError("weights, mean and scale of an exit scorer differ in length")
        arrays = tuple(
            np.asarray(v, dtype=np.float64) for v in (self.weights, self.mean, self.scale)
        )
        if not all(np.isfinite(a).all() for a in arrays) or (arrays[2] <= 0).any():
            raise PolicyError("an exit scorer needs finite weights and positive scales")
        object.__setattr__(self, "_arrays", arrays)

    def score(self, features: FloatArray) -> float:
        """Probability in [0, 1]; one dot product and a logistic function."""
        weights, mean, scale = self._arrays
        if features.shape != weights.shape:
            msg = f"{features.shape[0]} features for a scorer of {weights.shape[0]}"
            raise PolicyError(msg)
        logit = float(np.dot((features - mean) / scale, weights)) + self.bias
        if logit >= 0:
            return 1.0 / (1.0 + math.exp(-logit))
        odds = math.exp(logit)
        return odds / (1.0 + odds)

    def to_dict(self) -> dict[str, Any]:
        return {
            "weights": list(self.weights),
            "bias": self.bias,
            "mean": list(self.mean),
            "scale": list(self.scale),
        }


@dataclass(frozen=True)
class ExitPredictor:
    """One scorer per intermediate exit, for one checkpoint's label set and histogram grid.

    ``tolerance`` is what "as good as the final exit" meant when it was
    fitted: a per-image mIoU at most that far below the final exit's.
    ``fit`` records how it was fitted (images used, regularisation), for
    people reading the file.
    """

    class_names: tuple[str, ...]
    bins: int
    tolerance: float
    checkpoint_fingerprint: str
    scorers: Mapping[str, ExitScorer]
    fit: Mapping[str, Any] = field(default_factory=dict)

    @property
    def exit_ids(self) -> list[str]:
        return list(self.scorers)

    def score(self, exit_id: str, class_hist: npt.NDArray[np.integer[Any]]) -> float:
        """P(exit ``exit_id``'s mask is within ``tolerance`` of the final exit's)."""
        scorer = self.scorers.get(exit_id)
        if scorer is None:
            msg = f"the exit model has no scorer for exit {exit_id!r}; it has {self.exit_ids}"
            raise PolicyError(msg)
        if class_hist.shape != (len(self.class_names), self.bins):
            msg = (
                f"confidence histogram of shape {class_hist.shape}, the exit model expects "
                f"{(len(self.class_names), self.bins)}"
            )
            raise PolicyError(msg)
        return scorer.score(exit_features(class_hist))

    def check_covers(self, exit_ids: list[str], num_classes: int, source: str) -> None:
        """PolicyError when it cannot score these exits of a model with this many classes."""
        if num_classes != len(self.class_names):
            msg = (
                f"exit model {source} was fitted for {len(self.class_names)} classes, the model "
                f"predicts {num_classes}"
            )
            raise PolicyError(msg)
        missing = [e for e in exit_ids if e not in self.scorers]
        if missing:
            msg = (
                f"exit model {source} has no scorer for the active exit(s) {', '.join(missing)}; "
                f"it scores {', '.join(self.exit_ids) or 'none'} (fit it again for these exits)"
            )
            raise PolicyError(msg)

    def save(self, path: Path) -> None:
        data = {
            "format": EXIT_MODEL_FORMAT,
            "version": EXIT_MODEL_VERSION,
            "class_names": list(self.class_names),
            "bins": self.bins,
            "tolerance": self.tolerance,
            "checkpoint_fingerprint": self.checkpoint_fingerprint,
            "features": feature_names(self.class_names),
            "fit": dict(self.fit),
            "exits": {exit_id: s.to_dict() for exit_id, s in self.scorers.items()},
        }
        write_text_atomically(path, json.dumps(data, indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> ExitPredictor:
        """Read a file written by :meth:`save`; PolicyError names the file and the problem."""
        where = f"exit model {str(path)!r}"
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as err:
            raise PolicyError(f"cannot read {where}: {err}") from err
        except ValueError as err:
            raise PolicyError(f"{where} is not valid JSON: {err}") from err
        if not isinstance(data, dict) or data.get("format") != EXIT_MODEL_FORMAT:
            raise PolicyError(f"{where} is not a mess_ros exit model (format {EXIT_MODEL_FORMAT})")
        if data.get("version") != EXIT_MODEL_VERSION:
            msg = f"{where} has version {data.get('version')!r}; expected {EXIT_MODEL_VERSION}"
            raise PolicyError(msg)
        try:
            class_names = tuple(str(n) for n in data["class_names"])
            if data["features"] != feature_names(class_names):
                raise PolicyError(
                    f"{where} was fitted on other features than this mess_ros computes"
                )
            scorers = {
                str(exit_id): ExitScorer(
                    weights=tuple(float(v) for v in entry["weights"]),
                    bias=float(entry["bias"]),
                    mean=tuple(float(v) for v in entry["mean"]),
                    scale=tuple(float(v) for v in entry["scale"]),
                )
                for exit_id, entry in data["exits"].items()
            }
            return cls(
                class_names=class_names,
                bins=int(data["bins"]),
                tolerance=float(data["tolerance"]),
                checkpoint_fingerprint=str(data["checkpoint_fingerprint"]),
                scorers=scorers,
                fit=dict(data.get("fit", {})),
            )
        except PolicyError as err:
            raise PolicyError(f"{where}: {err}") from err
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise PolicyError(f"{where} is malformed: {err!r}") from err
