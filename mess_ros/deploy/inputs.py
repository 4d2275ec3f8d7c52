"""Loading and cross-checking what the configuration search consumes.

The search trusts three files to describe one network: the checkpoint (its
weights and heads), the calibration cache (what those weights predict on the
calibration images) and the latency table (what each stage costs on the
robot). Mixing files of different models or input sizes would still produce a
configuration, just one whose promised accuracy and latency are fiction; so
every mismatch stops the tool with a message naming both files and the
values that disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mess_ros.common.errors import LatencyTableError
from mess_ros.common.exits import FINAL_EXIT
from mess_ros.common.latency_table import LatencyTable
from mess_ros.deploy.errors import DeployError, InputMismatchError
from mess_ros.deploy.problem import ComponentCosts, ExitCandidate, SearchProblem, StatName
from mess_ros.model import Checkpoint, MESSNet, load_checkpoint
from mess_ros.train.bundle import CALIBRATION_SUFFIX
from mess_ros.train.calibration import CalibrationCache
from mess_ros.train.rundir import RunDir


@dataclass(frozen=True)
class DeployInputs:
    """A checkpoint, its calibration cache and a latency table that belong together."""

    checkpoint: Checkpoint
    checkpoint_path: Path
    cache: CalibrationCache
    cache_path: Path
    table: LatencyTable
    table_path: Path

    def problem(self) -> SearchProblem:
        return build_problem(self.checkpoint.model, self.cache, self.table)


def calibration_cache_of(checkpoint_path: Path) -> Path:
    """The calibration cache that belongs to a checkpoint file.

    A bundled model keeps it beside itself as ``<stem>_calibration.npz``
    (``models/default_calibration.npz``); a training run directory as
    ``calibration.npz`` beside ``checkpoint.pt``.
    """
    candidates = [
        checkpoint_path.with_name(f"{checkpoint_path.stem}{CALIBRATION_SUFFIX}"),
        RunDir(checkpoint_path.parent).calibration_path,
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    searched = ", ".join(repr(str(c)) for c in candidates)
    raise DeployError(
        f"no calibration cache found for checkpoint {str(checkpoint_path)!r} (looked for "
        f"{searched}); name it explicitly"
    )


def run_paths(run_dir: Path) -> tuple[Path, Path]:
    """Checkpoint and calibration cache of a training run directory."""
    run = RunDir(Path(run_dir))
    if not run.root.is_dir():
        raise DeployError(f"run directory {str(run.root)!r} does not exist")
    return run.checkpoint_path, run.calibration_path


def _require_file(path: Path, what: str, how: str) -> None:
    if not path.is_file():
        raise DeployError(f"{what} {str(path)!r} does not exist; {how}")


def load_inputs(
    checkpoint_path: Path,
    cache_path: Path,
    table_path: Path,
    *,
    allow_other_weights: bool = False,
) -> DeployInputs:
    """Load the three files and check that they describe the same network (see module doc)."""
    _require_file(checkpoint_path, "checkpoint", "train one with mess_train")
    _require_file(cache_path, "calibration cache", "mess_train writes calibration.npz")
    _require_file(table_path, "latency table", "measure one with mess_profile")
    inputs = DeployInputs(
        checkpoint=load_checkpoint(checkpoint_path),
        checkpoint_path=checkpoint_path,
        cache=CalibrationCache.load(cache_path),
        cache_path=cache_path,
        table=LatencyTable.load(table_path),
        table_path=table_path,
    )
    check_inputs(inputs, allow_other_weights=allow_other_weights)
    return inputs


def check_inputs(inputs: DeployInputs, *, allow_other_weights: bool = False) -> None:
    """InputMismatchError naming the files and the first disagreement found.

    ``allow_other_weights`` accepts a latency table profiled with other
    weights of the same architecture (timings do not depend on weight values);
    the table must still price every block and exit of this network.
    """
    model = inputs.checkpoint.model
    fingerprint = inputs.checkpoint.fingerprint
    checkpoint, cache, table = inputs.checkpoint_path, inputs.cache_path, inputs.table_path
    check_cache(inputs.checkpoint, checkpoint, inputs.cache, cache)
    if inputs.table.model_fingerprint != fingerprint and not allow_other_weights:
        msg = (
            f"latency table {str(table)!r} was profiled for the model with fingerprint "
            f"{inputs.table.model_fingerprint}, but checkpoint {str(checkpoint)!r} has "
            f"fingerprint {fingerprint}; profile this model with mess_profile (or accept a table "
            "of another model with the same architecture explicitly)"
        )
        raise InputMismatchError(msg)
    if tuple(inputs.table.input_hw) != tuple(inputs.cache.input_hw):
        table_hw, cache_hw = inputs.table.input_hw, inputs.cache.input_hw
        msg = (
            f"latency table {str(table)!r} was measured at input size {table_hw[0]}x{table_hw[1]}, "
            f"but calibration cache {str(cache)!r} was computed at {cache_hw[0]}x{cache_hw[1]}; "
            "profile at the size the network was calibrated at"
        )
        raise InputMismatchError(msg)
    try:
        inputs.table.check_covers(model.block_points, model.exit_ids, repr(str(table)))
    except LatencyTableError as err:
        raise InputMismatchError(f"{err} (checkpoint {str(checkpoint)!r})") from err


def check_cache(
    checkpoint: Checkpoint,
    checkpoint_path: Path,
    cache: CalibrationCache,
    cache_path: Path,
    input_hw: tuple[int, int] | None = None,
) -> None:
    """InputMismatchError unless ``cache`` describes these weights, classes, exits (and size)."""
    model = checkpoint.model
    fingerprint = checkpoint.fingerprint
    if cache.checkpoint_fingerprint != fingerprint:
        msg = (
            f"calibration cache {str(cache_path)!r} was computed with the checkpoint whose "
            f"fingerprint is {cache.checkpoint_fingerprint}, but checkpoint "
            f"{str(checkpoint_path)!r} has fingerprint {fingerprint}; use the cache of the same "
            "run or recompute it"
        )
        raise InputMismatchError(msg)
    if cache.num_classes != model.spec.num_classes:
        msg = (
            f"calibration cache {str(cache_path)!r} has {cache.num_classes} classes but "
            f"checkpoint {str(checkpoint_path)!r} predicts {model.spec.num_classes}"
        )
        raise InputMismatchError(msg)
    missing = [e for e in model.exit_ids if e not in cache.exit_ids]
    if missing:
        msg = (
            f"calibration cache {str(cache_path)!r} has no entry for exit(s) "
            f"{', '.join(missing)} of checkpoint {str(checkpoint_path)!r}"
        )
        raise InputMismatchError(msg)
    if input_hw is not None and tuple(cache.input_hw) != tuple(input_hw):
        msg = (
            f"calibration cache {str(cache_path)!r} was computed at input {cache.input_hw[0]}x"
            f"{cache.input_hw[1]}, but the network runs at {input_hw[0]}x{input_hw[1]}"
        )
        raise InputMismatchError(msg)


def head_params(model: MESSNet, exit_id: str) -> int:
    """Parameters of one exit head: what activating it adds to the robot's memory."""
    if exit_id == FINAL_EXIT:
        return sum(p.numel() for p in model.final_parameters())
    return sum(p.numel() for p in model.exit_parameters(exit_id))


def build_problem(model: MESSNet, cache: CalibrationCache, table: LatencyTable) -> SearchProblem:
    """The search's view of the inputs: arrays aligned with the candidates in depth order.

    The ``p95`` costs hold each stage's high quantile from the table (its
    ``quantile``, 0.9 by default); see :mod:`mess_ros.deploy.search` for how the
    configuration's p95 is formed from them.
    """
    points = tuple(model.block_points)
    depth = {point: index for index, point in enumerate(points)}
    candidates = sorted(
        (
            ExitCandidate(
                exit_id=exit_id,
                point=model.exit_point(exit_id),
                arch=model.exit_spec(exit_id).head.arch,
                params=head_params(model, exit_id),
            )
            for exit_id in model.exit_ids
            if exit_id != FINAL_EXIT
        ),
        key=lambda c: (depth[c.point], c.exit_id),
    )
    columns = [cache.exit_index(c.exit_id) for c in candidates] + [cache.exit_index(FINAL_EXIT)]

    def costs(stat: str) -> ComponentCosts:
        return ComponentCosts(
            segment_ms={p: table.segments[p].value(stat) for p in points},
            head_ms={e: s.value(stat) for e, s in table.heads.items()},
            output_ms={e: s.value(stat) for e, s in table.outputs.items()},
        )

    stats: dict[StatName, ComponentCosts] = {"mean": costs("mean"), "p95": costs("p90")}
    return SearchProblem(
        points=points,
        candidates=tuple(candidates),
        confusion=cache.confusion[:, columns],
        conf_hist=cache.conf_hist[:, columns],
        costs=stats,
        final_params=head_params(model, FINAL_EXIT),
        class_names=tuple(cache.class_names),
        class_hist=None if cache.class_hist is None else cache.class_hist[:, columns],
    )
