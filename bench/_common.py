"""Helpers shared by the benchmark scripts in this folder.

Imported as ``bench._common`` (see :mod:`bench`). Everything that decides
*what* is measured lives in the scripts; this module only loads models,
builds configurations, runs the deployment search the same way for every
script, and writes results, so two benchmarks never disagree on how a
model's input size or calibration cache is found.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import numpy as np
import numpy.typing as npt
import torch
from tqdm import tqdm

from mess_ros.common.latency_table import PREPROCESS_KEY, LatencyTable
from mess_ros.common.metrics import confusion_matrix, mean_iou
from mess_ros.config import SegmentationConfig
from mess_ros.data.datasets import DatasetSpec, SegmentationDataset, build_dataset
from mess_ros.data.synthetic import DIFFICULTY_LEVELS
from mess_ros.deploy.decisions import (
    DEFAULT_HOLDOUT_SHARE,
    HeldOutSearch,
    search_held_out,
    split_images,
)
from mess_ros.deploy.export import apply_configuration
from mess_ros.deploy.inputs import build_problem, calibration_cache_of, check_cache
from mess_ros.deploy.problem import DecisionName, ScoredConfiguration
from mess_ros.deploy.search import SearchResult, SearchSpace, Target, search, select
from mess_ros.errors import MessError
from mess_ros.model import Checkpoint, load_checkpoint
from mess_ros.package_files import command_line_file
from mess_ros.runtime.engine import SegmentationEngine, SegmentationResult, resolve_model_path
from mess_ros.runtime.executor import device_name, resolve_device
from mess_ros.runtime.profiling import profile_model
from mess_ros.train.calibration import CalibrationCache

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
REPORT_DIR: Final = REPO_ROOT / "reports" / "bench"
DEFAULT_MODEL: Final = REPO_ROOT / "models" / "default.pt"
"""The bundled model, the default ``--model`` of the scripts that take a path."""
SINGLE_EXIT_RUN: Final = REPO_ROOT / "runs" / "ablation_single_exit"
"""Run directory of the single-exit ablation baseline (``mess_train --mode single_exit``)."""


class BenchError(MessError):
    """A benchmark cannot run with the inputs it was given (missing file, unusable model)."""


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def base_parser(name: str, description: str) -> argparse.ArgumentParser:
    """Arguments every benchmark shares: model, device, threads, output, progress."""
    parser = argparse.ArgumentParser(
        prog=f"bench/{name}.py",
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--model",
        default="",
        help="checkpoint to benchmark ('' = the bundled model, models/default.pt)",
    )
    parser.add_argument(
        "--input-size",
        default="",
        help="HEIGHTxWIDTH the network runs at ('' = the size the model was trained at)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=REPORT_DIR / f"{name}.json",
        help="JSON file the figures are written to (plots go beside it)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def parse_hw(text: str) -> tuple[int, int]:
    """``"128x256"`` -> ``(128, 256)``."""
    height, sep, width = text.lower().partition("x")
    if not sep or not height.strip().isdigit() or not width.strip().isdigit():
        raise BenchError(f"input size {text!r} is not HEIGHTxWIDTH in pixels, e.g. 128x256")
    return int(height), int(width)


def run_main(main: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser) -> int:
    """Parse arguments, apply the thread setting, run ``main``; user errors exit 1 without a trace.

    A missed target is not an error (the script prints FAIL and exits 0): the
    exit status says whether the measurement could be taken at all.
    """
    args = parser.parse_args()
    try:
        threads = getattr(args, "threads", 0)
        if threads < 0:
            raise BenchError(f"--threads must be >= 0, got {threads}")
        if threads > 0:
            torch.set_num_threads(threads)
        return main(args)
    except (MessError, OSError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130


def run_and_save(
    prog: str, run: Callable[[], dict[str, Any]], out: Path, plot: Path | None = None
) -> int:
    """Run a script with its own parser and write its results to ``out`` as indented JSON.

    Used by the scripts that report with exit status 2 (exit_accuracy,
    search_speed, offline_eval_overhead): a user error prints one line and
    exits 2 without a trace, and nothing is written.
    """
    try:
        results = run()
    except (MessError, OSError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {out}" + ("" if plot is None else f" and {plot}"))
    return 0


# --------------------------------------------------------------------------------------------
# Model, calibration, configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedModel:
    """A checkpoint with the file it came from and the input size it runs at."""

    checkpoint: Checkpoint
    path: Path
    input_hw: tuple[int, int]

    @property
    def exit_ids(self) -> list[str]:
        return list(self.checkpoint.model.exit_ids)


def load_model(model_arg: str, input_size: str = "") -> LoadedModel:
    """Load ``--model`` ('' = bundled) at ``--input-size`` or the size it was trained at."""
    path = resolve_model_path(command_line_file(model_arg))
    if not path.is_file():
        raise BenchError(f"model {str(path)!r} does not exist")
    checkpoint = load_checkpoint(path)
    input_hw = parse_hw(input_size) if input_size else checkpoint.trained_input_hw
    if input_hw is None:
        raise BenchError(
            f"checkpoint {str(path)!r} does not record its training input size; pass "
            "--input-size HEIGHTxWIDTH"
        )
    return LoadedModel(checkpoint=checkpoint, path=path, input_hw=input_hw)


def load_calibration(model: LoadedModel, explicit: str = "") -> tuple[CalibrationCache, Path]:
    """The model's calibration cache, checked to describe these very weights and input size."""
    path = Path(explicit) if explicit else calibration_cache_of(model.path)
    if not path.is_file():
        raise BenchError(f"calibration cache {str(path)!r} does not exist")
    cache = CalibrationCache.load(path)
    check_cache(model.checkpoint, model.path, cache, path, model.input_hw)
    return cache, path


def profile_table(model: LoadedModel, device: str, repeats: int, progress: bool) -> LatencyTable:
    """Latency table of the model on this machine, measured now with the engine's executor.

    Measured in the benchmark's own process, with its thread setting, so the
    deadline policies predict the machine they actually run on.
    """
    choice = resolve_device(device)
    return profile_model(
        model.checkpoint.model,
        model.input_hw,
        choice.device,
        warmup=3,
        repeats=repeats,
        progress=progress,
        model_fingerprint_hex=model.checkpoint.fingerprint,
    )


def base_config(model: LoadedModel, device: str, threads: int) -> SegmentationConfig:
    """Engine settings shared by every engine of a benchmark (policy left at its defaults)."""
    config = SegmentationConfig()
    config.engine.model_path = str(model.path)
    config.engine.device = device
    config.engine.input_height, config.engine.input_width = model.input_hw
    config.engine.num_threads = threads
    config.deadline.deadline_ms = 0.0
    config.validate()
    return config


def with_policy(config: SegmentationConfig, name: str, **fields: Any) -> SegmentationConfig:
    """A validated copy of ``config`` running policy ``name`` with the given policy fields."""
    result = copy.deepcopy(config)
    result.policy.name = name
    for key, value in fields.items():
        if not hasattr(result.policy, key):
            raise BenchError(f"policy has no setting {key!r}")
        setattr(result.policy, key, value)
    result.validate()
    return result


@dataclass(frozen=True)
class Choice:
    """The deployment search's pick for a target, with its held-out figures when it has them."""

    result: SearchResult
    chosen: ScoredConfiguration
    target: Target
    config: SegmentationConfig
    held_search: HeldOutSearch | None = None

    @property
    def baseline(self) -> ScoredConfiguration:
        return self.result.baseline

    @property
    def held(self) -> HeldOutSearch:
        """The fitting and held-out parts of the search behind the choice."""
        if self.held_search is None:
            raise BenchError("this choice was made on every calibration image; none is held out")
        return self.held_search

    @property
    def held_out(self) -> ScoredConfiguration:
        """The chosen configuration on the calibration images the search did not see."""
        return self.held.on_held_out(self.chosen)


def search_front(
    model: LoadedModel,
    cache: CalibrationCache,
    table: LatencyTable,
    *,
    max_exits: int,
    progress: bool,
) -> SearchResult:
    """The Pareto front of mean latency against calibration mIoU, as ``mess_configure`` finds it."""
    problem = build_problem(model.checkpoint.model, cache, table)
    return search(problem, SearchSpace(max_exits=max_exits), stat="mean", progress=progress)


def configuration_for(
    model: LoadedModel,
    result: SearchResult,
    table: LatencyTable,
    target: Target,
    threads: int,
    *,
    held: HeldOutSearch | None = None,
    exit_model_path: str = "",
) -> Choice:
    """The front's configuration for ``target``, as engine settings without a deadline."""
    chosen = select(result, target)
    config = apply_configuration(
        chosen.config, table, str(model.path), exit_model_path=exit_model_path
    )
    return Choice(result, chosen, target, _without_deadline(config, threads), held)


def _without_deadline(config: SegmentationConfig, threads: int) -> SegmentationConfig:
    config.engine.num_threads = threads
    config.deadline.deadline_ms = 0.0
    config.validate()
    return config


def choose_configuration(
    model: LoadedModel,
    cache: CalibrationCache,
    table: LatencyTable,
    *,
    miou_margin: float,
    max_exits: int,
    threads: int,
    progress: bool,
    decision: DecisionName = "confidence",
    holdout_share: float = DEFAULT_HOLDOUT_SHARE,
    exit_model_path: Path | None = None,
) -> Choice:
    """The fastest configuration of one exit decision whose mIoU stays within a margin.

    This is what ``mess_configure --min-miou`` does on a robot: exit models
    and thresholds are fitted on part of the calibration cache, the accuracy
    floor is the final exit's own mIoU there minus ``miou_margin`` (as a
    fraction, 0.004 = 0.4 points), and latency is priced with ``table``. The
    margin is kept below the accuracy tolerance the benchmarks judge on
    held-out images, so that the val-to-test gap has room. A learnt
    decision's exit model is written to ``exit_model_path``.
    """
    problem = build_problem(model.checkpoint.model, cache, table)
    split = split_images(cache.difficulty, holdout_share)
    held = search_held_out(
        problem,
        split,
        (decision,),
        SearchSpace(max_exits=max_exits),
        "mean",
        checkpoint_fingerprint=model.checkpoint.fingerprint,
        progress=progress,
    )
    floor = max(0.0, held.result.baseline.miou - miou_margin)
    target = Target(min_miou=floor)
    model_file = ""
    if select(held.result, target).config.decision == "learnt" and held.predictor is not None:
        if exit_model_path is None:
            raise BenchError("a learnt-decision configuration needs a path for its exit model")
        held.predictor.save(exit_model_path)
        model_file = str(exit_model_path)
    return configuration_for(
        model, held.result, table, target, threads, held=held, exit_model_path=model_file
    )


def test_split(
    num_images: int,
    height: int,
    width: int,
    difficulty: int | None = None,
    seed: int | None = None,
) -> SegmentationDataset:
    """The held-out synthetic split (``test``: its own seed, never seen in training or search).

    ``seed`` draws another set of held-out scenes (None: the split's own seed).
    """
    spec = DatasetSpec(
        kind="synthetic",
        split="test",
        num_images=num_images,
        height=height,
        width=width,
        difficulty=difficulty,
        seed=seed,
    )
    return build_dataset(spec)


# --------------------------------------------------------------------------------------------
# Load generators
# --------------------------------------------------------------------------------------------


class HogProcess:
    """A hog (``cpu_hog.py``, ``gpu_hog.py``) in a child process; its load reports read on a thread.

    The hog writes one JSON object per line (``{"state": "running", "load":
    0.93, ...}``); ``load`` is the latest reported share (1.0 until the first
    report). It runs in a session of its own, as an unrelated process would:
    with autogroup scheduling a session shares its CPU weight, and the raised
    priority of the measuring process must not carry over to the hog.
    """

    def __init__(self, argv: Sequence[str]) -> None:
        self.process = subprocess.Popen(
            list(argv), stdout=subprocess.PIPE, text=True, start_new_session=True
        )
        self.load = 1.0
        self.reports: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, args=(self.process.stdout,))
        self._reader.daemon = True
        self._reader.start()

    def _read(self, stream: IO[str] | None) -> None:
        if stream is None:
            return
        for line in stream:
            try:
                report = json.loads(line)
            except json.JSONDecodeError:
                continue
            self.reports.append(report)
            if report.get("state") == "running":
                self.load = float(report["load"])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


# --------------------------------------------------------------------------------------------
# Statistics and output
# --------------------------------------------------------------------------------------------


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (NaN for no values)."""
    return float(np.quantile(np.asarray(values, dtype=np.float64), q)) if values else math.nan


def median(values: Sequence[float]) -> float:
    return quantile(values, 0.5)


def percent(value: float) -> str:
    """A share as a table cell ("  1.3 %"); NaN (nothing to count) as a dash."""
    return "   -" if math.isnan(value) else f"{100 * value:5.1f} %"


def latency_summary(values_ms: Sequence[float]) -> dict[str, float]:
    """Mean, median, p90, p99 and max of a series of latencies in ms."""
    if not values_ms:
        return dict.fromkeys(("mean_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms"), math.nan)
    return {
        "mean_ms": float(np.mean(values_ms)),
        "p50_ms": median(values_ms),
        "p90_ms": quantile(values_ms, 0.9),
        "p99_ms": quantile(values_ms, 0.99),
        "max_ms": float(np.max(values_ms)),
    }


def usage(exit_ids: Iterable[str], order: Sequence[str]) -> dict[str, float]:
    """Share of frames that left at each exit, in ``order`` (exits never taken show 0)."""
    taken = list(exit_ids)
    total = max(len(taken), 1)
    counts = dict.fromkeys(order, 0)
    for exit_id in taken:
        counts[exit_id] = counts.get(exit_id, 0) + 1
    return {exit_id: count / total for exit_id, count in counts.items()}


def format_usage(shares: dict[str, float]) -> str:
    return ", ".join(f"{exit_id} {share:.1%}" for exit_id, share in shares.items())


def priced_stages_ms(result: SegmentationResult) -> float:
    """What the latency table prices of a frame (blocks, heads, outputs).

    Comparable with the search's predictions and the oracle's path costs,
    which leave out resizing and normalising the frame.
    """
    return sum(ms for key, ms in result.stage_times_ms.items() if key != PREPROCESS_KEY)


@dataclass
class EngineRun:
    """What one engine (a network with a policy) did on the test split, frame by frame.

    Figures come for all frames or for a mask of them (e.g. one difficulty level).
    """

    name: str
    num_classes: int
    latency_ms: list[float] = field(default_factory=list)
    stages_ms: list[float] = field(default_factory=list)
    exits: list[str] = field(default_factory=list)
    confusions: list[npt.NDArray[np.int64]] = field(default_factory=list)
    difficulty: list[int] = field(default_factory=list)

    def add(self, result: SegmentationResult, conf: npt.NDArray[np.int64], difficulty: int) -> None:
        self.confusions.append(conf)
        self.difficulty.append(difficulty)
        self.latency_ms.append(result.measured_ms)
        self.stages_ms.append(priced_stages_ms(result))
        self.exits.append(result.exit_id)

    def _select(self, values: Sequence[Any], frames: npt.NDArray[np.bool_] | None) -> Any:
        array = np.asarray(values)
        return array if frames is None else array[frames]

    def miou_of(self, frames: npt.NDArray[np.bool_] | None = None) -> float:
        return mean_iou(np.sum(self._select(self.confusions, frames), axis=0))

    def mean_ms_of(self, frames: npt.NDArray[np.bool_] | None = None) -> float:
        return float(np.mean(self._select(self.latency_ms, frames)))

    def stages_mean_ms_of(self, frames: npt.NDArray[np.bool_] | None = None) -> float:
        return float(np.mean(self._select(self.stages_ms, frames)))

    @property
    def miou(self) -> float:
        return self.miou_of()

    @property
    def mean_ms(self) -> float:
        return self.mean_ms_of()

    def to_dict(self, exit_order: list[str]) -> dict[str, Any]:
        levels = np.asarray(self.difficulty)
        return {
            "miou": self.miou,
            "miou_by_difficulty": {
                level_name(level): self.miou_of(levels == level)
                for level in sorted(set(self.difficulty))
            },
            "latency": latency_summary(self.latency_ms),
            "stages_mean_ms": self.stages_mean_ms_of(),
            "exit_usage": usage(self.exits, exit_order),
        }


def run_test_split(
    engines: Mapping[str, SegmentationEngine],
    dataset: SegmentationDataset,
    *,
    warmup: int,
    progress: bool,
    on_frame: Callable[[dict[str, SegmentationResult]], None] | None = None,
) -> dict[str, EngineRun]:
    """Every engine on every frame, interleaved frame by frame, with its accuracy and latency.

    Which engine goes first rotates from frame to frame, so that none profits
    from another's warm caches. ``on_frame`` sees each frame's results.
    """
    labels = next(iter(engines.values())).labels
    runs = {name: EngineRun(name, labels.num_classes) for name in engines}
    for index in range(min(warmup, len(dataset))):
        for engine in engines.values():
            engine.infer(dataset[index].image)
    order = list(engines)
    for index in tqdm(range(len(dataset)), desc="test split", unit="img", disable=not progress):
        sample = dataset[index]
        shift = index % len(order)
        results = {}
        for name in order[shift:] + order[:shift]:
            result = engines[name].infer(sample.image)
            conf = confusion_matrix(
                sample.mask, result.mask, labels.num_classes, labels.ignore_index
            )
            runs[name].add(result, conf, sample.difficulty)
            results[name] = result
        if on_frame is not None:
            on_frame(results)
    return runs


def level_name(level: int) -> str:
    """The name of a synthetic difficulty level (``unknown`` for a dataset without levels)."""
    return DIFFICULTY_LEVELS[level] if 0 <= level < len(DIFFICULTY_LEVELS) else "unknown"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def print_target(label: str, ok: bool, detail: str) -> None:
    """One line per target, easy to grep: ``PASS  overhead ...`` / ``FAIL  overhead ...``."""
    print(f"{verdict(ok):<4}  {label}: {detail}")


def environment(device: str) -> dict[str, Any]:
    """Where the numbers were measured: they mean little without it."""
    choice = resolve_device(device)
    return {
        "device": str(choice.device),
        "device_name": device_name(choice.device),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", ""),
    }


def model_info(model: LoadedModel) -> dict[str, Any]:
    return {
        "path": str(model.path),
        "fingerprint": model.checkpoint.fingerprint,
        "input_hw": list(model.input_hw),
        "exits": model.exit_ids,
    }


def _json_default(value: object) -> object:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write the figures (NaN written as null, so any JSON reader takes the file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_finite(data), indent=2, default=_json_default)
    path.write_text(text + "\n", encoding="utf-8")
    print(f"figures written to {path}")


def _finite(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
