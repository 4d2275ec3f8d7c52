"""Install a finished run as the package's bundled default model.

``python -m mess_ros.train.bundle RUN_DIR OUT_DIR`` writes the run's model to
``OUT_DIR/default.pt`` with its calibration cache and metrics beside it
(``default_calibration.npz``, ``default_metrics.json``); ``make model`` does
this into ``models/``. The run's files are checked against each other first.

The shipped weights are stored in float16, which halves the package and
every robot's pruned copy. Rounding changes the weights, so the calibration
cache and the metrics are computed again for the rounded network on the
run's validation split: a cache of other weights would make the deployment
search promise accuracies the shipped model does not have.

``--calibration-images N`` extends that split (same generator or folder, more
images) for the shipped cache. Thresholds that the search picks within a few
tenths of a point of the final exit are only as good as the cache's estimate
of each exit's accuracy: on the bundled model, thresholds chosen on 240
images lost about twice their margin on held-out scenes, on 720 images less.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from mess_ros.data.datasets import build_dataset
from mess_ros.errors import MessError
from mess_ros.model.checkpoint import load_checkpoint, save_checkpoint
from mess_ros.train.calibration import (
    CalibrationCache,
    build_calibration_cache,
    check_same_weights,
)
from mess_ros.train.errors import TrainError
from mess_ros.train.rundir import RunDir

DEFAULT_MODEL = "default.pt"
DEFAULT_CALIBRATION = "default_calibration.npz"
DEFAULT_METRICS = "default_metrics.json"
CALIBRATION_SUFFIX = "_calibration.npz"
"""A bundled model `<stem>.pt` keeps its calibration cache beside it, `<stem>_calibration.npz`."""
SHIPPED_WEIGHTS_DTYPE = "float16"


def bundle_run(
    run_dir: Path,
    out_dir: Path,
    progress: bool = True,
    calibration_images: int | None = None,
) -> list[Path]:
    """Validate a finished run and write its shippable model, cache and metrics into ``out_dir``.

    ``calibration_images`` sizes the shipped cache's validation split (default:
    the run's own size).
    """
    if calibration_images is not None and calibration_images < 1:
        msg = f"calibration images must be a positive count, got {calibration_images}"
        raise TrainError(msg)
    run = RunDir(run_dir)
    for path in (run.checkpoint_path, run.calibration_path, run.metrics_path, run.config_path):
        if not path.is_file():
            msg = f"{str(path)!r} is missing: is {str(run_dir)!r} a finished training run?"
            raise TrainError(msg)
    checkpoint = load_checkpoint(run.checkpoint_path)
    run_cache = CalibrationCache.load(run.calibration_path)
    check_same_weights(run_cache, run.calibration_path, checkpoint, run.checkpoint_path)
    try:
        run_metrics = json.loads(run.metrics_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise TrainError(f"{str(run.metrics_path)!r} is not valid JSON: {err}") from err
    config = run.saved_config()
    val_spec = config.val_dataset
    if calibration_images is not None:
        val_spec = replace(val_spec, num_images=calibration_images)
    val_set = build_dataset(val_spec)

    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / DEFAULT_MODEL
    calibration_path = out_dir / DEFAULT_CALIBRATION
    metrics_path = out_dir / DEFAULT_METRICS
    labels, train_config = checkpoint.labels, checkpoint.train_config
    # Round through a scratch file, so that nothing in out_dir changes until the
    # new cache exists: a failed calibration leaves the previous bundle whole.
    with tempfile.TemporaryDirectory(dir=out_dir) as scratch:
        rounded = Path(scratch) / DEFAULT_MODEL
        save_checkpoint(
            rounded, checkpoint.model, labels, train_config, weights_dtype=SHIPPED_WEIGHTS_DTYPE
        )
        shipped = load_checkpoint(rounded)
    cache = build_calibration_cache(
        shipped,
        val_set,
        config.input_hw,
        progress=progress,
        dataset_info=val_spec.to_dict(),
    )
    cache.save(calibration_path)
    metrics = cache.metrics()
    metrics["training"] = run_metrics.get("training", {})
    metrics["weights_dtype"] = SHIPPED_WEIGHTS_DTYPE
    save_checkpoint(model_path, shipped.model, labels, train_config, metrics, SHIPPED_WEIGHTS_DTYPE)
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return [model_path, calibration_path, metrics_path]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mess_ros.train.bundle",
        description="Write a finished run's model (float16 weights), with its calibration "
        "cache and metrics recomputed for them, into OUT_DIR as the bundled default model.",
    )
    parser.add_argument("run_dir", type=Path, help="a finished mess_train run directory")
    parser.add_argument("out_dir", type=Path, help="where to write (models/ for the package)")
    parser.add_argument(
        "--calibration-images",
        type=int,
        default=None,
        help="images of the validation split for the shipped calibration cache "
        "(default: as many as the run validated on)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        copies = bundle_run(
            args.run_dir,
            args.out_dir,
            progress=not args.no_progress,
            calibration_images=args.calibration_images,
        )
    except (MessError, OSError) as err:
        print(f"bundle: error: {err}", file=sys.stderr)
        return 2
    for path in copies:
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
