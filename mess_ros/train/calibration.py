"""The calibration cache: per image and per candidate exit, a confusion matrix and
histograms of pixel confidences (over all pixels, and per top-1 class).

Confusion matrices add, and the confidence policy only looks at the share of
pixels whose top-1 probability passes a threshold, which the histogram gives
exactly for thresholds on its bin edges. So the accuracy of *any* exit
configuration and threshold on the calibration images can be computed by
summing cached arrays, without running the network again; this is what makes
the exhaustive deployment search run in seconds. The per-class histogram
(format version 2) does the same for per-class thresholds and is what the
learnt exit decision is trained on; a version-1 cache still loads, and what
needs the per-class numbers says how to rebuild it.

The cache is only worth anything if its numbers equal what the engine would
measure. It therefore uses the very functions the engine uses:
:func:`mess_ros.data.transforms.normalize_image` for preprocessing and
:mod:`mess_ros.model.outputs` for masks and confidences, batch size 1, eval
mode, one bilinear upsample of each exit's logits to the label resolution.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from tqdm import tqdm

from mess_ros.common.exits import FINAL_EXIT
from mess_ros.common.metrics import confusion_matrix, mean_iou, pixel_accuracy
from mess_ros.data.datasets import DatasetSpec, Sample, SegmentationDataset, build_dataset
from mess_ros.data.synthetic import DIFFICULTY_LEVELS
from mess_ros.data.transforms import normalize_image
from mess_ros.errors import MessError
from mess_ros.model.checkpoint import Checkpoint, load_checkpoint
from mess_ros.model.messnet import MESSNet
from mess_ros.model.outputs import (
    CLASS_CONFIDENCE_BINS,
    CONFIDENCE_BINS,
    class_confidence_histogram,
    confidence_histogram,
    logits_to_mask,
)
from mess_ros.textfiles import atomic_write
from mess_ros.train.errors import CalibrationError

CACHE_FORMAT = "mess_ros.calibration"
CACHE_VERSION = 2
READABLE_VERSIONS = (1, 2)
"""Version 1 lacks ``class_hist``; everything else reads the same."""
_ARRAYS = ("confusion", "conf_hist", "difficulty")
RECALIBRATE_COMMAND = "python -m mess_ros.train.calibration"


def rebuild_hint(path: str) -> str:
    """How to bring an old cache to the current format (said by every error that needs it)."""
    return f"rebuild it with `{RECALIBRATE_COMMAND} CHECKPOINT {path}` (same images, new format)"


@dataclass
class CalibrationCache:
    """Cached per-image, per-exit outcomes of one checkpoint on one image set."""

    exit_ids: list[str]
    confusion: npt.NDArray[np.int64]  # [N_images, N_exits, C, C], rows = ground truth
    conf_hist: npt.NDArray[np.int64]  # [N_images, N_exits, CONFIDENCE_BINS]
    difficulty: npt.NDArray[np.int64]  # [N_images], -1 when unknown
    input_hw: tuple[int, int]
    num_classes: int
    class_names: list[str]
    checkpoint_fingerprint: str
    dataset: dict[str, Any]
    class_hist: npt.NDArray[np.int64] | None = None
    """[N_images, N_exits, C, CLASS_CONFIDENCE_BINS]; None in a version-1 cache."""

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise CalibrationError("inconsistent calibration cache: " + "; ".join(problems))

    def problems(self) -> list[str]:
        """Every inconsistency between the arrays and the metadata (empty when valid)."""
        problems: list[str] = []
        n_exits, n_classes = len(self.exit_ids), self.num_classes
        if len(set(self.exit_ids)) != n_exits:
            problems.append(f"exit ids are not unique: {self.exit_ids}")
        if FINAL_EXIT not in self.exit_ids:
            problems.append(f"exit ids {self.exit_ids} lack {FINAL_EXIT!r}")
        if len(self.class_names) != n_classes:
            problems.append(f"{len(self.class_names)} class names for {n_classes} classes")
        arrays = {
            "confusion": (self.confusion, 4),
            "conf_hist": (self.conf_hist, 3),
            "difficulty": (self.difficulty, 1),
        }
        for name, (array, ndim) in arrays.items():
            if not isinstance(array, np.ndarray) or array.dtype != np.int64 or array.ndim != ndim:
                problems.append(f"{name} must be an int64 array with {ndim} dimensions")
        if problems:
            return problems
        n_images = self.difficulty.shape[0]
        if self.confusion.shape != (n_images, n_exits, n_classes, n_classes):
            problems.append(
                f"confusion has shape {self.confusion.shape}, expected "
                f"{(n_images, n_exits, n_classes, n_classes)}"
            )
        if self.conf_hist.shape != (n_images, n_exits, CONFIDENCE_BINS):
            problems.append(
                f"conf_hist has shape {self.conf_hist.shape}, expected "
                f"{(n_images, n_exits, CONFIDENCE_BINS)}"
            )
        if (self.confusion < 0).any() or (self.conf_hist < 0).any():
            problems.append("counts must not be negative")
        if self.class_hist is not None:
            expected = (n_images, n_exits, n_classes, CLASS_CONFIDENCE_BINS)
            if not isinstance(self.class_hist, np.ndarray) or self.class_hist.dtype != np.int64:
                problems.append("class_hist must be an int64 array")
            elif self.class_hist.shape != expected:
                problems.append(
                    f"class_hist has shape {self.class_hist.shape}, expected {expected}"
                )
            elif (self.class_hist.sum(axis=(2, 3)) != self.conf_hist.sum(axis=2)).any():
                problems.append("class_hist and conf_hist disagree on pixel counts")
        return problems

    def require_class_hist(self, purpose: str, source: str = "") -> npt.NDArray[np.int64]:
        """The per-class histograms, or CalibrationError saying how to rebuild an old cache."""
        if self.class_hist is None:
            where = f"calibration cache {source!r}" if source else "the calibration cache"
            msg = (
                f"{purpose} needs per-class confidence histograms, which {where} lacks "
                f"(format version 1); {rebuild_hint(source or 'CACHE.npz')}"
            )
            raise CalibrationError(msg)
        return self.class_hist

    @property
    def num_images(self) -> int:
        return int(self.difficulty.shape[0])

    def exit_index(self, exit_id: str) -> int:
        try:
            return self.exit_ids.index(exit_id)
        except ValueError as err:
            msg = f"exit {exit_id!r} is not in the calibration cache; cached exits: {self.exit_ids}"
            raise CalibrationError(msg) from err

    def image_selection(self, difficulty: int | None = None) -> npt.NDArray[np.bool_]:
        """Boolean mask over images: all of them, or those of one difficulty level."""
        if difficulty is None:
            return np.ones(self.num_images, dtype=bool)
        return np.asarray(self.difficulty == difficulty, dtype=bool)

    def exit_confusion(
        self, exit_id: str, images: npt.NDArray[np.bool_] | None = None
    ) -> npt.NDArray[np.int64]:
        """(C, C) confusion of one exit summed over the selected images (all by default)."""
        per_image = self.confusion[:, self.exit_index(exit_id)]
        if images is not None:
            per_image = per_image[images]
        return np.asarray(per_image.sum(axis=0, dtype=np.int64), dtype=np.int64)

    def exit_miou(self, exit_id: str, difficulty: int | None = None) -> float:
        """mIoU of always taking ``exit_id`` (NaN when no image has that difficulty)."""
        images = self.image_selection(difficulty)
        if not images.any():
            return float("nan")
        return mean_iou(self.exit_confusion(exit_id, images))

    def metrics(self) -> dict[str, Any]:
        """Per-exit mIoU and pixel accuracy, overall and per difficulty level (JSON-able).

        Absent difficulty levels (e.g. a real dataset, difficulty -1) are left
        out rather than reported as NaN, which JSON cannot represent.
        """
        levels = {
            name: level
            for level, name in enumerate(DIFFICULTY_LEVELS)
            if self.image_selection(level).any()
        }
        exits: dict[str, Any] = {}
        for exit_id in self.exit_ids:
            conf = self.exit_confusion(exit_id)
            exits[exit_id] = {
                "miou": _json_float(mean_iou(conf)),
                "pixel_accuracy": _json_float(pixel_accuracy(conf)),
                "miou_per_difficulty": {
                    name: _json_float(self.exit_miou(exit_id, level))
                    for name, level in levels.items()
                },
            }
        return {
            "num_images": self.num_images,
            "images_per_difficulty": {
                name: int(self.image_selection(level).sum()) for name, level in levels.items()
            },
            "input_hw": list(self.input_hw),
            "dataset": self.dataset,
            "checkpoint_fingerprint": self.checkpoint_fingerprint,
            "exits": exits,
        }

    def save(self, path: Path) -> None:
        """Write a compressed ``.npz`` (atomically: a reader never sees half a file)."""
        path = Path(path)
        meta = {
            "format": CACHE_FORMAT,
            "version": CACHE_VERSION,
            "exit_ids": self.exit_ids,
            "input_hw": list(self.input_hw),
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "checkpoint_fingerprint": self.checkpoint_fingerprint,
            "dataset": self.dataset,
        }
        arrays = {
            "confusion": self.confusion,
            "conf_hist": self.conf_hist,
            "difficulty": self.difficulty,
        }
        if self.class_hist is not None:
            arrays["class_hist"] = self.class_hist
        else:
            meta["version"] = 1  # what it holds is the version-1 content
        arrays["meta"] = np.array(json.dumps(meta))
        with atomic_write(path) as handle:
            np.savez_compressed(handle, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: Path) -> CalibrationCache:
        """Read and validate a cache written by :meth:`save`; CalibrationError names the file."""
        path = Path(path)
        where = f"calibration cache {str(path)!r}"
        try:
            with np.load(path, allow_pickle=False) as npz:
                missing = [key for key in ("meta", *_ARRAYS) if key not in npz.files]
                if missing:
                    raise CalibrationError(f"{where} lacks {', '.join(missing)}")
                meta = json.loads(str(npz["meta"]))
                arrays = {key: npz[key] for key in _ARRAYS}
                class_hist = npz["class_hist"] if "class_hist" in npz.files else None
        except CalibrationError:
            raise
        except FileNotFoundError as err:
            raise CalibrationError(f"{where} does not exist") from err
        except (OSError, ValueError, EOFError) as err:
            msg = f"{where} is not a readable .npz calibration cache: {err}"
            raise CalibrationError(msg) from err
        if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
            raise CalibrationError(f"{where} is not a mess_ros calibration cache")
        version = meta.get("version")
        if version not in READABLE_VERSIONS:
            msg = (
                f"{where} has version {version!r}; this mess_ros reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))}; {rebuild_hint(str(path))}"
            )
            raise CalibrationError(msg)
        if version == CACHE_VERSION and class_hist is None:
            raise CalibrationError(f"{where} (version {version}) lacks class_hist")
        try:
            height, width = (int(v) for v in meta["input_hw"])
            return cls(
                exit_ids=[str(e) for e in meta["exit_ids"]],
                confusion=arrays["confusion"],
                conf_hist=arrays["conf_hist"],
                difficulty=arrays["difficulty"],
                input_hw=(height, width),
                num_classes=int(meta["num_classes"]),
                class_names=[str(n) for n in meta["class_names"]],
                checkpoint_fingerprint=str(meta["checkpoint_fingerprint"]),
                dataset=dict(meta["dataset"]),
                class_hist=class_hist,
            )
        except CalibrationError as err:
            raise CalibrationError(f"{where}: {err}") from err
        except (KeyError, TypeError, ValueError) as err:
            raise CalibrationError(f"{where} has malformed metadata: {err!r}") from err


def _json_float(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value), 6)


@dataclass(frozen=True)
class ExitOutcomes:
    """One image's numbers over ``model.exit_ids``: what the cache stores per image."""

    sample: Sample
    confusion: npt.NDArray[np.int64]  # [E, C, C]
    conf_hist: npt.NDArray[np.int64]  # [E, CONFIDENCE_BINS]
    class_hist: npt.NDArray[np.int64]  # [E, C, CLASS_CONFIDENCE_BINS]


def iter_exit_outcomes(
    model: MESSNet,
    samples: Iterator[Sample],
    input_hw: tuple[int, int],
    device: torch.device,
    num_classes: int,
    ignore_index: int = 255,
) -> Iterator[ExitOutcomes]:
    """Per sample, every exit's confusion matrix and confidence histograms.

    One image at a time, exactly as the engine sees frames: the shared
    preprocessing, every exit's logits at its own resolution, one bilinear
    upsample to the label size, argmax.
    """
    model.eval()
    exit_ids = model.exit_ids
    with torch.inference_mode():
        for sample in samples:
            image = torch.from_numpy(normalize_image(sample.image, input_hw))[None].to(device)
            logits = model(image)
            label_hw = (int(sample.mask.shape[0]), int(sample.mask.shape[1]))
            confusion = np.empty((len(exit_ids), num_classes, num_classes), dtype=np.int64)
            hist = np.empty((len(exit_ids), CONFIDENCE_BINS), dtype=np.int64)
            class_hist = np.empty(
                (len(exit_ids), num_classes, CLASS_CONFIDENCE_BINS), dtype=np.int64
            )
            for index, exit_id in enumerate(exit_ids):
                mask = logits_to_mask(logits[exit_id], label_hw)[0].cpu().numpy()
                confusion[index] = confusion_matrix(sample.mask, mask, num_classes, ignore_index)
                hist[index] = confidence_histogram(logits[exit_id])[0].cpu().numpy()
                class_hist[index] = class_confidence_histogram(logits[exit_id])[0].cpu().numpy()
            yield ExitOutcomes(sample, confusion, hist, class_hist)


def build_calibration_cache(
    checkpoint: Checkpoint,
    dataset: SegmentationDataset,
    input_hw: tuple[int, int],
    device: torch.device | str = "cpu",
    progress: bool = True,
    dataset_info: dict[str, Any] | None = None,
) -> CalibrationCache:
    """Run every candidate exit of ``checkpoint`` on every image of ``dataset``; cache the outcome.

    ``dataset_info`` (typically the dataset spec as a dict) is recorded so
    the search can tell which images a cache describes; by default the
    dataset's type, size and label set are recorded.
    """
    device = torch.device(device)
    model = checkpoint.model.to(device)
    num_classes = model.spec.num_classes
    labels = dataset.labels
    if labels.num_classes != num_classes:
        msg = (
            f"dataset label set {labels.name!r} has {labels.num_classes} classes but the "
            f"checkpoint predicts {num_classes}"
        )
        raise CalibrationError(msg)
    count = len(dataset)
    if count == 0:
        raise CalibrationError("cannot calibrate on an empty dataset")
    exit_ids = list(model.exit_ids)
    confusion = np.zeros((count, len(exit_ids), num_classes, num_classes), dtype=np.int64)
    conf_hist = np.zeros((count, len(exit_ids), CONFIDENCE_BINS), dtype=np.int64)
    class_hist = np.zeros(
        (count, len(exit_ids), num_classes, CLASS_CONFIDENCE_BINS), dtype=np.int64
    )
    difficulty = np.full(count, -1, dtype=np.int64)
    samples = (dataset[i] for i in range(count))
    outcomes = iter_exit_outcomes(
        model, samples, input_hw, device, num_classes, labels.ignore_index
    )
    bar = tqdm(outcomes, total=count, desc="calibration", unit="img", disable=not progress)
    for index, outcome in enumerate(bar):
        confusion[index] = outcome.confusion
        conf_hist[index] = outcome.conf_hist
        class_hist[index] = outcome.class_hist
        difficulty[index] = outcome.sample.difficulty
    return CalibrationCache(
        exit_ids=exit_ids,
        confusion=confusion,
        conf_hist=conf_hist,
        difficulty=difficulty,
        input_hw=(int(input_hw[0]), int(input_hw[1])),
        num_classes=num_classes,
        class_names=list(labels.class_names),
        checkpoint_fingerprint=checkpoint.fingerprint,
        dataset=dataset_info if dataset_info is not None else _dataset_description(dataset),
        class_hist=class_hist,
    )


def evaluate_exits(
    model: MESSNet,
    dataset: SegmentationDataset,
    input_hw: tuple[int, int],
    device: torch.device,
    indices: Sequence[int] | None = None,
) -> dict[str, float]:
    """mIoU of every exit of ``model`` over some images (periodic validation during training)."""
    chosen = range(len(dataset)) if indices is None else indices
    total: npt.NDArray[np.int64] | None = None
    samples = (dataset[i] for i in chosen)
    labels = dataset.labels
    outcomes = iter_exit_outcomes(
        model, samples, input_hw, device, labels.num_classes, labels.ignore_index
    )
    for outcome in outcomes:
        confusion = outcome.confusion
        total = confusion if total is None else total + confusion
    if total is None:
        return {}
    return {exit_id: mean_iou(total[i]) for i, exit_id in enumerate(model.exit_ids)}


def _dataset_description(dataset: SegmentationDataset) -> dict[str, Any]:
    return {
        "kind": type(dataset).__name__,
        "num_images": len(dataset),
        "labels": dataset.labels.name,
    }


def check_same_weights(
    cache: CalibrationCache, cache_path: Path, checkpoint: Checkpoint, checkpoint_path: Path
) -> None:
    """CalibrationError naming both files when the cache describes other weights."""
    if cache.checkpoint_fingerprint != checkpoint.fingerprint:
        msg = (
            f"{str(cache_path)!r} was computed for weights {cache.checkpoint_fingerprint}, but "
            f"{str(checkpoint_path)!r} holds {checkpoint.fingerprint}"
        )
        raise CalibrationError(msg)


def recalibrate(checkpoint_path: Path, cache_path: Path, progress: bool = True) -> CalibrationCache:
    """Compute ``cache_path`` again in the current format, on the images it records.

    The dataset spec and input size come from the existing cache, so the new
    one describes the same images; it replaces the old file only once complete.
    """
    old = CalibrationCache.load(cache_path)
    checkpoint = load_checkpoint(checkpoint_path)
    check_same_weights(old, cache_path, checkpoint, checkpoint_path)
    try:
        dataset = build_dataset(DatasetSpec.from_dict(old.dataset))
    except MessError as err:
        msg = f"cannot rebuild the images recorded in {str(cache_path)!r} ({old.dataset}): {err}"
        raise CalibrationError(msg) from err
    cache = build_calibration_cache(
        checkpoint, dataset, old.input_hw, progress=progress, dataset_info=old.dataset
    )
    cache.save(cache_path)
    return cache


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mess_ros.train.calibration CHECKPOINT CACHE``: rebuild a cache in place."""
    parser = argparse.ArgumentParser(
        prog=RECALIBRATE_COMMAND,
        description="Compute a calibration cache again, in the current format, for the images "
        "it records (dataset spec and input size) and the given checkpoint.",
    )
    parser.add_argument("checkpoint", type=Path, help="the checkpoint the cache describes")
    parser.add_argument("cache", type=Path, help="the cache (.npz) to rebuild in place")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        cache = recalibrate(args.checkpoint, args.cache, progress=not args.no_progress)
    except MessError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {args.cache}: {cache.num_images} images, format version {CACHE_VERSION}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
