"""Write a dataset in the image/mask folder layout that ``kind: folder`` reads.

::

    python -m mess_ros.data.folder_writer my_data --split train --num-images 24
    python -m mess_ros.data.folder_writer my_data --split val --num-images 12 --height 64

writes synthetic scenes as ``my_data/<split>/images/<name>.png`` (RGB),
``my_data/<split>/masks/<name>.png`` (single-channel class ids, 255 =
unlabelled) and the label set as ``my_data/labels.json``: a complete example
of the layout to compare one's own data with, and a small dataset to try the
custom-data steps of the README on before spending hours on real data.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
from tqdm import tqdm

from mess_ros.console import add_debug_option, console_main
from mess_ros.data.datasets import LABELS_FILE, SPLIT_SEEDS, SegmentationDataset, SyntheticDataset
from mess_ros.data.errors import DatasetError
from mess_ros.errors import MessError

PROG = "python -m mess_ros.data.folder_writer"


def write_folder_dataset(
    dataset: SegmentationDataset, root: Path, split: str, *, progress: bool = False
) -> Path:
    """Every sample of ``dataset`` as PNG pairs under ``root/split``; returns that folder.

    The label set goes to ``root/labels.json``, shared by every split; an
    existing one must be the same label set.
    """
    folder = root / split
    images, masks = folder / "images", folder / "masks"
    labels_path = root / LABELS_FILE
    labels = dataset.labels.to_dict()
    try:
        images.mkdir(parents=True, exist_ok=True)
        masks.mkdir(parents=True, exist_ok=True)
        if labels_path.is_file():
            if json.loads(labels_path.read_text(encoding="utf-8")) != labels:
                msg = f"{labels_path} holds another label set than {dataset.labels.name!r}"
                raise DatasetError(msg)
        else:
            labels_path.write_text(json.dumps(labels, indent=2) + "\n", encoding="utf-8")
        for index in tqdm(range(len(dataset)), desc=split, unit="pair", disable=not progress):
            sample = dataset[index]
            name = f"{split}_{index:05d}.png"
            bgr = cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR)
            if not (
                cv2.imwrite(str(images / name), bgr) and cv2.imwrite(str(masks / name), sample.mask)
            ):
                raise DatasetError(f"cannot write {images / name} or {masks / name}")
    except (OSError, ValueError) as err:
        raise DatasetError(f"cannot write a folder dataset into {folder}: {err}") from err
    return folder


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Write synthetic scenes as an image/mask folder dataset with labels.json.",
    )
    parser.add_argument("out", type=Path, help="dataset root to write into")
    parser.add_argument("--split", default="train", help="split folder (seeds: train 0, val 1)")
    parser.add_argument("--num-images", type=int, default=24, help="pairs to write")
    parser.add_argument("--height", type=int, default=64, help="image height in pixels")
    parser.add_argument("--width", type=int, default=128, help="image width in pixels")
    parser.add_argument("--seed", type=int, help="scene seed (default: the split's)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_debug_option(parser)
    return parser


@console_main(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    seed = args.seed if args.seed is not None else SPLIT_SEEDS.get(args.split, 0)
    try:
        dataset = SyntheticDataset(args.num_images, args.height, args.width, seed=seed)
        folder = write_folder_dataset(dataset, args.out, args.split, progress=not args.quiet)
    except MessError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {len(dataset)} image/mask pairs to {folder} (labels: {args.out / LABELS_FILE})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
