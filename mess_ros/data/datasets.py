"""Datasets: synthetic scenes, image/mask folders and the Cityscapes layout.

All of them yield :class:`Sample` (uint8 RGB image, uint8 class-id mask with
255 = ignore) and carry the :class:`LabelSet` their ids refer to, so training,
calibration and evaluation treat them alike. File datasets check their layout
when built and report every problem at once (a user fixing a folder of
thousands of pairs should not have to rerun once per missing file).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from mess_ros.data.errors import DataError, DatasetError
from mess_ros.data.labels import (
    CITYSCAPES_LABELS,
    LABEL_SETS,
    SYNTHETIC_LABELS,
    LabelSet,
    cityscapes_id_to_train_id_lut,
)
from mess_ros.data.sample import UNKNOWN_DIFFICULTY, Sample
from mess_ros.data.synthetic import DIFFICULTY_LEVELS, SceneGenerator, difficulty_from_name
from mess_ros.registry import Registry
from mess_ros.textfiles import read_text

__all__ = [
    "DATASET_KINDS",
    "SPLIT_SEEDS",
    "CityscapesDataset",
    "DatasetSpec",
    "FolderDataset",
    "Sample",
    "SegmentationDataset",
    "SyntheticDataset",
    "build_dataset",
    "read_image",
    "read_mask",
    "verify_dataset",
]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
MASK_SUFFIXES = frozenset({".png", ".bmp", ".tif", ".tiff"})
LOSSY_SUFFIXES = frozenset({".jpg", ".jpeg", ".webp"})

#: Synthetic splits are different seeds of the same generator.
SPLIT_SEEDS: dict[str, int] = {"train": 0, "val": 1, "test": 2}

# Longest list of file names quoted in one error message.
_MAX_LISTED = 20
LABELS_FILE = "labels.json"


class SegmentationDataset(Protocol):
    """What training, calibration and evaluation need from a dataset."""

    labels: LabelSet

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...


def _checked_index(index: int, length: int) -> int:
    """Python sequence semantics: negative indices count from the end, IndexError past it."""
    resolved = index + length if index < 0 else index
    if not 0 <= resolved < length:
        raise IndexError(f"index {index} out of range for a dataset of {length} samples")
    return resolved


class SyntheticDataset:
    """``num_images`` scenes of :class:`SceneGenerator`, rendered on access.

    ``difficulty`` fixes the level of every scene; None lets each scene draw
    its own, which gives a mix of the three levels in equal shares.
    """

    labels: LabelSet = SYNTHETIC_LABELS

    def __init__(
        self,
        num_images: int,
        height: int = 256,
        width: int = 512,
        seed: int = 0,
        difficulty: int | None = None,
    ) -> None:
        if num_images <= 0:
            raise DatasetError(f"a synthetic dataset needs num_images > 0, got {num_images}")
        if difficulty is not None and difficulty not in range(len(DIFFICULTY_LEVELS)):
            raise DatasetError(
                f"unknown difficulty {difficulty!r}; expected 0 easy, 1 medium, 2 hard or None"
            )
        self.num_images = num_images
        self.difficulty = difficulty
        self.generator = SceneGenerator(height=height, width=width, seed=seed)

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> Sample:
        return self.generator.render(_checked_index(index, self.num_images), self.difficulty)


def read_image(path: Path) -> npt.NDArray[np.uint8]:
    """An RGB uint8 image from disk; DatasetError naming the file when it cannot be decoded."""
    data = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if data is None:
        raise DatasetError(f"cannot read image {path}: missing, truncated or not an image file")
    return np.asarray(cv2.cvtColor(data, cv2.COLOR_BGR2RGB), dtype=np.uint8)


def read_mask(path: Path, labels: LabelSet) -> npt.NDArray[np.uint8]:
    """A class-id mask from disk, validated against ``labels``.

    Single-channel files hold ids directly. Colour files (as drawn by
    annotation tools) are decoded with the label set's palette, black meaning
    ignore. Any id the label set does not have is an error, because it would
    silently train a wrong class or crash the loss far from the cause.
    """
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise DatasetError(f"cannot read mask {path}: missing, truncated or not an image file")
    if raw.dtype != np.uint8 and not (raw.dtype == np.uint16 and raw.size and raw.max() <= 255):
        raise DatasetError(
            f"mask {path} has {raw.dtype} pixels with ids above 255; masks are 8-bit class ids"
        )
    data = np.asarray(raw, dtype=np.uint8)
    if data.ndim == 3:
        data = data[..., :3]
        if np.array_equal(data[..., 0], data[..., 1]) and np.array_equal(
            data[..., 0], data[..., 2]
        ):
            data = data[..., 0]
        else:
            rgb = np.asarray(cv2.cvtColor(data, cv2.COLOR_BGR2RGB), dtype=np.uint8)
            data = _decode_color_mask(rgb, labels, path)
    mask = np.ascontiguousarray(data)
    _check_mask_ids(mask, labels, path)
    return mask


def _decode_color_mask(
    rgb: npt.NDArray[np.uint8], labels: LabelSet, path: Path
) -> npt.NDArray[np.uint8]:
    palette = {color: class_id for class_id, color in enumerate(labels.colors)}
    palette.setdefault((0, 0, 0), labels.ignore_index)
    keys = np.asarray([(r << 16) | (g << 8) | b for r, g, b in palette], dtype=np.int64)
    values = np.asarray(list(palette.values()), dtype=np.uint8)
    order = np.argsort(keys)
    keys, values = keys[order], values[order]
    packed = (
        (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    )
    pos = np.clip(np.searchsorted(keys, packed), 0, keys.size - 1)
    known = keys[pos] == packed
    if not known.all():
        unknown = np.unique(packed[~known])[:5]
        shown = [((int(k) >> 16) & 255, (int(k) >> 8) & 255, int(k) & 255) for k in unknown]
        raise DatasetError(
            f"colour mask {path} has colours {shown} that are not in label set {labels.name!r}; "
            "use single-channel class-id masks or the label set's colours (black = ignore)"
        )
    decoded: npt.NDArray[np.uint8] = values[pos]
    return decoded


def _check_mask_ids(mask: npt.NDArray[np.uint8], labels: LabelSet, path: Path) -> None:
    counts = np.bincount(mask.reshape(-1), minlength=256)
    counts[: labels.num_classes] = 0
    counts[labels.ignore_index] = 0
    bad = np.flatnonzero(counts)
    if bad.size:
        raise DatasetError(
            f"mask {path} contains class ids {bad[:10].tolist()} outside label set "
            f"{labels.name!r} (0..{labels.num_classes - 1}, ignore {labels.ignore_index})"
        )


def _check_pair_shape(
    image: npt.NDArray[np.uint8], mask: npt.NDArray[np.uint8], image_path: Path, mask_path: Path
) -> None:
    if image.shape[:2] != mask.shape:
        raise DatasetError(
            f"image {image_path} is {image.shape[1]}x{image.shape[0]} but its mask {mask_path} is "
            f"{mask.shape[1]}x{mask.shape[0]}; they must have the same size"
        )


def _listed(names: Iterable[str]) -> str:
    items = sorted(names)
    shown = ", ".join(items[:_MAX_LISTED])
    if len(items) > _MAX_LISTED:
        shown += f", ... and {len(items) - _MAX_LISTED} more"
    return f"({len(items)}): {shown}"


def _files_by_stem(
    folder: Path, suffixes: frozenset[str], problems: list[str], what: str
) -> dict[str, Path]:
    found: dict[str, list[Path]] = {}
    for path in folder.iterdir():
        if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in suffixes:
            found.setdefault(path.stem, []).append(path)
    duplicates = {stem: paths for stem, paths in found.items() if len(paths) > 1}
    if duplicates:
        problems.append(
            f"{what} sharing a name stem "
            + _listed(p.name for ps in duplicates.values() for p in ps)
        )
    # Duplicates are reported above; keeping one path lets pairing report only real orphans.
    return {stem: sorted(paths)[0] for stem, paths in found.items()}


class FolderDataset:
    """Images and masks in two folders, paired by file name stem (``a.jpg`` with ``a.png``).

    Masks hold class ids of ``labels`` (or its colours). The layout is checked
    at construction; :meth:`verify` additionally decodes every file.
    """

    def __init__(
        self,
        images_dir: Path | str,
        masks_dir: Path | str,
        labels: LabelSet,
        *,
        max_images: int = 0,
    ) -> None:
        self.images_dir = Path(images_dir)
        self.masks_dir = Path(masks_dir)
        self.labels = labels
        for folder, what in ((self.images_dir, "images"), (self.masks_dir, "masks")):
            if not folder.is_dir():
                raise DatasetError(f"{what} folder {folder} does not exist or is not a folder")
        problems: list[str] = []
        images = _files_by_stem(self.images_dir, IMAGE_SUFFIXES, problems, "images")
        masks = _files_by_stem(self.masks_dir, IMAGE_SUFFIXES, problems, "masks")
        lossy = [p.name for p in masks.values() if p.suffix.lower() in LOSSY_SUFFIXES]
        if lossy:
            problems.append(
                "masks in a lossy format, whose compression corrupts class ids (use PNG) "
                + _listed(lossy)
            )
        unpaired_images = images.keys() - masks.keys()
        unpaired_masks = masks.keys() - images.keys()
        if unpaired_images:
            problems.append(
                "images without a mask " + _listed(images[s].name for s in unpaired_images)
            )
        if unpaired_masks:
            problems.append(
                "masks without an image " + _listed(masks[s].name for s in unpaired_masks)
            )
        if problems:
            raise DatasetError(
                f"image folder {self.images_dir} and mask folder {self.masks_dir} do not pair up "
                "(every image needs one mask with the same name stem):\n  - "
                + "\n  - ".join(problems)
            )
        stems = sorted(images)
        if not stems:
            raise DatasetError(
                f"no images found in {self.images_dir} (looked for {sorted(IMAGE_SUFFIXES)})"
            )
        if max_images > 0:
            stems = stems[:max_images]
        self.pairs: list[tuple[str, Path, Path]] = [(s, images[s], masks[s]) for s in stems]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> Sample:
        stem, image_path, mask_path = self.pairs[_checked_index(index, len(self.pairs))]
        image = read_image(image_path)
        mask = read_mask(mask_path, self.labels)
        _check_pair_shape(image, mask, image_path, mask_path)
        return Sample(image=image, mask=mask, difficulty=UNKNOWN_DIFFICULTY, name=stem)

    def verify(self, *, progress: bool = False) -> None:
        """Decode every pair; one DatasetError lists every unreadable or invalid file."""
        _verify_all(self, f"folder dataset {self.images_dir}", progress)


def _verify_all(dataset: SegmentationDataset, what: str, progress: bool) -> None:
    errors: list[str] = []
    for i in tqdm(range(len(dataset)), desc="check dataset", unit="pair", disable=not progress):
        try:
            dataset[i]
        except DatasetError as err:
            errors.append(str(err))
    if errors:
        shown = errors[:_MAX_LISTED]
        more = f"\n  ... and {len(errors) - _MAX_LISTED} more" if len(errors) > _MAX_LISTED else ""
        raise DatasetError(
            f"{what}: {len(errors)} of {len(dataset)} samples cannot be used:\n  "
            + "\n  ".join(shown)
            + more
        )


_LEFT_SUFFIX = "_leftImg8bit.png"
_TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds.png"
_LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"


class CityscapesDataset:
    """The Cityscapes directory layout with fine annotations.

    ``<root>/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png`` with
    ``<root>/gtFine/<split>/<city>/<name>_gtFine_labelTrainIds.png``, or when
    that file was never generated, ``..._gtFine_labelIds.png`` mapped with the
    official id -> trainId table. Pixels of classes not evaluated become 255.
    """

    labels: LabelSet = CITYSCAPES_LABELS

    def __init__(self, root: Path | str, split: str, *, max_images: int = 0) -> None:
        self.root = Path(root)
        self.split = split
        images_root = self.root / "leftImg8bit" / split
        gt_root = self.root / "gtFine" / split
        if not images_root.is_dir():
            available = ""
            if (self.root / "leftImg8bit").is_dir():
                splits = sorted(p.name for p in (self.root / "leftImg8bit").iterdir() if p.is_dir())
                available = f"; splits present: {splits}"
            raise DatasetError(
                f"Cityscapes root {self.root} has no folder leftImg8bit/{split} "
                f"(expected leftImg8bit/<split>/<city>/*{_LEFT_SUFFIX}){available}"
            )
        if not gt_root.is_dir():
            raise DatasetError(
                f"Cityscapes root {self.root} has no folder gtFine/{split} "
                f"(expected gtFine/<split>/<city>/*{_TRAIN_IDS_SUFFIX} or *{_LABEL_IDS_SUFFIX})"
            )
        entries: list[tuple[str, Path, Path, bool]] = []
        missing: list[str] = []
        for image_path in sorted(images_root.glob(f"*/*{_LEFT_SUFFIX}")):
            base = image_path.name[: -len(_LEFT_SUFFIX)]
            gt_dir = gt_root / image_path.parent.name
            train_ids = gt_dir / f"{base}{_TRAIN_IDS_SUFFIX}"
            label_ids = gt_dir / f"{base}{_LABEL_IDS_SUFFIX}"
            if train_ids.is_file():
                entries.append((base, image_path, train_ids, False))
            elif label_ids.is_file():
                entries.append((base, image_path, label_ids, True))
            else:
                missing.append(f"{image_path.parent.name}/{base}")
        if missing:
            raise DatasetError(
                f"Cityscapes split {split!r} under {self.root}: images without "
                f"gtFine/{split}/<city>/<name>{_TRAIN_IDS_SUFFIX} or {_LABEL_IDS_SUFFIX} "
                + _listed(missing)
            )
        if not entries:
            raise DatasetError(f"no *{_LEFT_SUFFIX} images under {images_root}")
        if max_images > 0:
            entries = entries[:max_images]
        self.entries = entries
        self._lut = cityscapes_id_to_train_id_lut()

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> Sample:
        base, image_path, mask_path, needs_mapping = self.entries[
            _checked_index(index, len(self.entries))
        ]
        image = read_image(image_path)
        raw = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
        if raw is None or raw.ndim != 2 or raw.dtype != np.uint8:
            raise DatasetError(
                f"cannot read annotation {mask_path}: expected a single-channel 8-bit PNG of "
                + ("labelIds" if needs_mapping else "trainIds")
            )
        ids = np.asarray(raw, dtype=np.uint8)
        mask = self._lut[ids] if needs_mapping else ids
        _check_mask_ids(mask, self.labels, mask_path)
        _check_pair_shape(image, mask, image_path, mask_path)
        return Sample(image=image, mask=mask, difficulty=UNKNOWN_DIFFICULTY, name=base)

    def verify(self, *, progress: bool = False) -> None:
        """Decode every pair; one DatasetError lists every unreadable or invalid file."""
        _verify_all(self, f"Cityscapes split {self.split!r} under {self.root}", progress)


def verify_dataset(dataset: SegmentationDataset, *, progress: bool = False) -> None:
    """Decode every sample of a file dataset now, listing every bad one in one DatasetError.

    A bad pair found only when training first draws it stops a run hours in,
    and reports one file per attempt. Synthetic scenes are rendered, not read:
    nothing to check.
    """
    if isinstance(dataset, FolderDataset | CityscapesDataset):
        dataset.verify(progress=progress)


@dataclass(frozen=True)
class DatasetSpec:
    """Serializable description of a dataset, stored in training configs and reports.

    * ``kind``: ``synthetic``, ``folder`` or ``cityscapes``.
    * ``path``: dataset root (file kinds). For ``folder``, ``<path>/<split>/images``
      and ``.../masks`` when that split folder exists, else ``<path>/images``
      and ``<path>/masks``.
    * ``num_images``: scenes to render (synthetic, required), or the first N
      pairs in name order (file kinds; 0 = all).
    * ``height``/``width``: synthetic render size; file images keep their size.
    * ``seed``: synthetic seed; None takes the split's conventional seed
      (train 0, val 1, test 2) so splits never overlap by accident.
    * ``difficulty``: synthetic level 0/1/2 (or its name), None = mixed.
    * ``labels``: label set name or JSON file (``LabelSet.to_dict``) for
      ``folder``; empty = ``labels.json`` in the split folder, else at the
      root. Fixed for the other kinds.
    """

    kind: str = "synthetic"
    path: str = ""
    split: str = "train"
    num_images: int = 0
    height: int = 256
    width: int = 512
    seed: int | None = None
    difficulty: int | None = None
    labels: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetSpec:
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise DatasetError(f"unknown dataset spec keys {unknown}; valid keys: {valid}")
        values = dict(data)
        try:
            for key in ("num_images", "height", "width"):
                if key in values:
                    values[key] = int(values[key])
            if values.get("seed") is not None:
                values["seed"] = int(values["seed"])
            level = values.get("difficulty")
            if isinstance(level, str):
                values["difficulty"] = difficulty_from_name(level)
            elif level is not None:
                values["difficulty"] = int(level)
            for key in ("kind", "path", "split", "labels"):
                if key in values:
                    values[key] = str(values[key])
        except (TypeError, ValueError, DataError) as err:
            raise DatasetError(f"malformed dataset spec {dict(data)!r}: {err}") from err
        return cls(**values)


DatasetBuilder = Callable[[DatasetSpec], SegmentationDataset]
DATASET_KINDS: Registry[DatasetBuilder] = Registry("dataset kind", DatasetError)


def build_dataset(spec: DatasetSpec) -> SegmentationDataset:
    """The dataset a spec describes; DatasetError says what is wrong with the spec or files."""
    return DATASET_KINDS.get(spec.kind)(spec)


@DATASET_KINDS.register("synthetic")
def _build_synthetic(spec: DatasetSpec) -> SegmentationDataset:
    _fixed_labels(spec, SYNTHETIC_LABELS)
    seed = spec.seed
    if seed is None:
        if spec.split not in SPLIT_SEEDS:
            raise DatasetError(
                f"synthetic split {spec.split!r} has no conventional seed ({SPLIT_SEEDS}); "
                "set seed explicitly"
            )
        seed = SPLIT_SEEDS[spec.split]
    return SyntheticDataset(
        num_images=spec.num_images,
        height=spec.height,
        width=spec.width,
        seed=seed,
        difficulty=spec.difficulty,
    )


@DATASET_KINDS.register("folder")
def _build_folder(spec: DatasetSpec) -> SegmentationDataset:
    root = _existing_root(spec)
    folder = root / spec.split if (root / spec.split / "images").is_dir() else root
    return FolderDataset(
        folder / "images",
        folder / "masks",
        _folder_labels(spec, [folder, root]),
        max_images=spec.num_images,
    )


@DATASET_KINDS.register("cityscapes")
def _build_cityscapes(spec: DatasetSpec) -> SegmentationDataset:
    _fixed_labels(spec, CITYSCAPES_LABELS)
    return CityscapesDataset(_existing_root(spec), spec.split, max_images=spec.num_images)


def _existing_root(spec: DatasetSpec) -> Path:
    if not spec.path:
        raise DatasetError(f"a {spec.kind} dataset needs path set to its root folder")
    root = Path(spec.path).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{spec.kind} dataset root {root} does not exist or is not a folder")
    return root


def _fixed_labels(spec: DatasetSpec, labels: LabelSet) -> None:
    if spec.labels and spec.labels != labels.name:
        raise DatasetError(
            f"{spec.kind} datasets always use label set {labels.name!r}, not {spec.labels!r}"
        )


def _folder_labels(spec: DatasetSpec, folders: list[Path]) -> LabelSet:
    """The label set named by ``labels``, or ``labels.json`` in the split folder or the root.

    One ``labels.json`` at the dataset root serves every split; a split may
    carry its own.
    """
    if spec.labels in LABEL_SETS:
        return LABEL_SETS.get(spec.labels)
    if spec.labels:
        path = Path(spec.labels).expanduser()
    else:
        candidates = [folder / LABELS_FILE for folder in dict.fromkeys(folders)]
        found = [candidate for candidate in candidates if candidate.is_file()]
        if not found:
            raise DatasetError(
                f"folder dataset {folders[-1]} names no label set: set labels to one of "
                f"{LABEL_SETS.names()} or a JSON file, or add "
                f"{' or '.join(str(c) for c in candidates)}"
            )
        path = found[0]
    expected = f"a JSON label set (or labels set to one of {LABEL_SETS.names()})"
    text = read_text(path, "label set file", expected, DatasetError)
    try:
        return LabelSet.from_dict(json.loads(text))
    except (json.JSONDecodeError, DataError) as err:
        raise DatasetError(f"label set file {path} is invalid: {err}") from err
