"""Install a finished run as the package's bundled default model.

``python -m mess_ros.train.bundle RUN_DIR OUT_DIR`` copies the run's
checkpoint, calibration cache and metrics to ``OUT_DIR/default.pt``,
``default_calibration.npz`` and ``default_metrics.json`` (``make model`` does
this into ``models/``). The three files are checked against each other first:
a cache computed for other weights would make the deployment search promise
accuracies the shipped model does not have.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from mess_ros.errors import MessError
from mess_ros.model.checkpoint import load_checkpoint
from mess_ros.train.calibration import CalibrationCache
from mess_ros.train.errors import TrainError
from mess_ros.train.rundir import RunDir

DEFAULT_MODEL = "default.pt"
DEFAULT_CALIBRATION = "default_calibration.npz"
DEFAULT_METRICS = "default_metrics.json"


def bundle_run(run_dir: Path, out_dir: Path) -> list[Path]:
    """Validate a run directory and copy its deliverables into ``out_dir``; returns the copies."""
    run = RunDir(run_dir)
    for path in (run.checkpoint_path, run.calibration_path, run.metrics_path):
        if not path.is_file():
            msg = f"{str(path)!r} is missing: is {str(run_dir)!r} a finished training run?"
            raise TrainError(msg)
    checkpoint = load_checkpoint(run.checkpoint_path)
    cache = CalibrationCache.load(run.calibration_path)
    if cache.checkpoint_fingerprint != checkpoint.fingerprint:
        msg = (
            f"{str(run.calibration_path)!r} was computed for weights "
            f"{cache.checkpoint_fingerprint}, but {str(run.checkpoint_path)!r} holds "
            f"{checkpoint.fingerprint}"
        )
        raise TrainError(msg)
    if cache.exit_ids != checkpoint.model.exit_ids:
        msg = (
            f"{str(run.calibration_path)!r} covers exits {cache.exit_ids}, "
            f"but the checkpoint has {checkpoint.model.exit_ids}"
        )
        raise TrainError(msg)
    try:
        json.loads(run.metrics_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise TrainError(f"{str(run.metrics_path)!r} is not valid JSON: {err}") from err

    out_dir.mkdir(parents=True, exist_ok=True)
    copies = [
        (run.checkpoint_path, out_dir / DEFAULT_MODEL),
        (run.calibration_path, out_dir / DEFAULT_CALIBRATION),
        (run.metrics_path, out_dir / DEFAULT_METRICS),
    ]
    for source, target in copies:
        shutil.copyfile(source, target)
    return [target for _, target in copies]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mess_ros.train.bundle",
        description="Copy a finished run's checkpoint, calibration cache and metrics into "
        "OUT_DIR as the bundled default model.",
    )
    parser.add_argument("run_dir", type=Path, help="a finished mess_train run directory")
    parser.add_argument("out_dir", type=Path, help="where to write (models/ for the package)")
    args = parser.parse_args(argv)
    try:
        copies = bundle_run(args.run_dir, args.out_dir)
    except (MessError, OSError) as err:
        print(f"bundle: error: {err}", file=sys.stderr)
        return 2
    for path in copies:
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
