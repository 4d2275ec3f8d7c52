"""The deployment of one robot as library calls: search, choose, write, verify, install.

``mess_configure`` parses its command line into a :class:`RobotRequest` and
prints what these functions return; benchmarks and tests call them directly,
so the sequence (held-out split, staged files, verification before anything
reaches its place) exists once.

1. :func:`search_robot` fits exit models and thresholds on part of the
   calibration images and scores the front on the held-out part.
2. :func:`deploy_robot` picks the configuration for the target, writes every
   file into a scratch directory, runs the written files with the real
   engine when asked to, and only then moves them to their final place.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mess_ros.config import SegmentationConfig, parameter_file
from mess_ros.deploy.decisions import (
    DEFAULT_HOLDOUT_SHARE,
    DEFAULT_TOLERANCE,
    HeldOutSearch,
    search_held_out,
    split_images,
)
from mess_ros.deploy.errors import DeployError, UnreachableTargetError
from mess_ros.deploy.export import (
    ExportPaths,
    Provenance,
    apply_configuration,
    configuration_from_parameters,
    header_comment,
    install_files,
    scored_to_dict,
    write_pruned_checkpoint,
    write_reports,
    write_summary,
)
from mess_ros.deploy.inputs import DeployInputs
from mess_ros.deploy.problem import DECISIONS, DecisionName, ScoredConfiguration, evaluate
from mess_ros.deploy.search import SearchSpace, Target, select
from mess_ros.deploy.verify import (
    DEFAULT_PASSES,
    LATENCY_TOLERANCE,
    VerificationReport,
    calibration_dataset,
    calibration_warnings,
    verify_configuration,
)
from mess_ros.model import load_checkpoint


@dataclass(frozen=True)
class RobotRequest:
    """What to deploy for one robot and how to check it.

    ``param_*`` override how the parameter file names its artefacts (by
    default: relative to the file itself, so the files work wherever they are
    installed together).
    """

    robot: str
    target: Target
    space: SearchSpace = field(default_factory=SearchSpace)
    decisions: Sequence[DecisionName] = DECISIONS
    holdout_share: float = DEFAULT_HOLDOUT_SHARE
    exit_tolerance: float = DEFAULT_TOLERANCE
    base: SegmentationConfig | None = None
    cameras: Sequence[str] | None = None  # cameras.names of the file (None: the base's)
    param_model_path: str = ""
    param_latency_table: str = ""
    param_exit_model: str = ""
    verify: bool = False
    verify_passes: int = DEFAULT_PASSES
    latency_tolerance: float = LATENCY_TOLERANCE
    progress: bool = True


@dataclass(frozen=True)
class RobotDeployment:
    """What :func:`deploy_robot` chose and wrote."""

    held: HeldOutSearch
    chosen: ScoredConfiguration
    paths: ExportPaths
    verification: VerificationReport | None

    @property
    def learnt(self) -> bool:
        return self.chosen.config.decision == "learnt"

    @property
    def written(self) -> list[Path]:
        return self.paths.all(learnt=self.learnt)


class VerificationFailedError(DeployError):
    """The written files did not do what the search predicted; nothing was installed."""

    def __init__(self, report: VerificationReport) -> None:
        super().__init__("verification failed; nothing was written")
        self.report = report


def search_robot(inputs: DeployInputs, request: RobotRequest) -> tuple[HeldOutSearch, list[str]]:
    """The held-out search for ``request``, and warnings about too few calibration images."""
    split = split_images(inputs.cache.difficulty, request.holdout_share)
    held = search_held_out(
        inputs.problem(),
        split,
        request.decisions,
        request.space,
        request.target.stat,
        tolerance=request.exit_tolerance,
        checkpoint_fingerprint=inputs.checkpoint.fingerprint,
        progress=request.progress,
    )
    return held, calibration_warnings(int(split.fit.size), int(split.held_out.size))


def deploy_robot(
    inputs: DeployInputs,
    request: RobotRequest,
    held: HeldOutSearch,
    paths: ExportPaths,
    provenance: Provenance,
) -> RobotDeployment:
    """Choose, write, verify and install; nothing reaches ``paths`` unless all of it succeeded.

    Raises :class:`UnreachableTargetError` (after writing the Pareto front,
    so the user sees what is reachable) and :class:`VerificationFailedError`.
    """
    target = request.target
    title = f"{request.robot}: {inputs.table.device_name}, {target.describe()}"
    try:
        chosen = select(held.result, target)
    except UnreachableTargetError:
        write_reports(paths, held.result, None, target, title)
        raise
    verification = None
    learnt = chosen.config.decision == "learnt"
    with tempfile.TemporaryDirectory(prefix="mess_configure_") as scratch:
        staged = paths.staged_in(Path(scratch))
        _export(inputs, request, held, chosen, staged, paths, provenance, title)
        if request.verify:
            verification = _verify(inputs, request, held, chosen, staged)
            if not verification.passed:
                raise VerificationFailedError(verification)
            write_summary(
                staged.summary_json,
                held.result,
                chosen,
                target,
                provenance,
                verification.to_dict(),
                held_out=_held_out_record(held, chosen),
            )
        install_files(staged, paths, learnt=learnt)
    return RobotDeployment(held, chosen, paths, verification)


def _held_out_record(held: HeldOutSearch, chosen: ScoredConfiguration) -> dict[str, object]:
    return {
        "images": [int(i) for i in held.split.held_out],
        "chosen": scored_to_dict(held.on_held_out(chosen)),
        "baseline": scored_to_dict(held.held_out_baseline),
    }


def _export(
    inputs: DeployInputs,
    request: RobotRequest,
    held: HeldOutSearch,
    chosen: ScoredConfiguration,
    staged: ExportPaths,
    final: ExportPaths,
    provenance: Provenance,
    title: str,
) -> None:
    """Write every file into ``staged``; paths inside the parameter file are ``final``'s."""
    write_pruned_checkpoint(inputs.checkpoint_path, chosen.config, staged.checkpoint)
    shutil.copyfile(inputs.table_path, staged.latency_table)
    exit_model = ""
    if chosen.config.decision == "learnt" and held.predictor is not None:
        held.predictor.save(staged.exit_model)
        exit_model = request.param_exit_model or final.artefact_path(final.exit_model)
    params = apply_configuration(
        chosen.config,
        inputs.table,
        model_path=request.param_model_path or final.artefact_path(final.checkpoint),
        latency_table_path=request.param_latency_table or final.artefact_path(final.latency_table),
        base=request.base,
        exit_model_path=exit_model,
        cameras=request.cameras,
    )
    header = header_comment(
        request.robot,
        held.on_held_out(chosen),
        held.held_out_baseline,
        request.target,
        inputs.table,
        provenance,
        str(final.checkpoint),
        fitted=chosen,
    )
    parameter_file.write(params, staged.params, header_comment=header)
    write_reports(staged, held.result, chosen, request.target, title)
    record = _held_out_record(held, chosen)
    write_summary(
        staged.summary_json, held.result, chosen, request.target, provenance, held_out=record
    )


def _verify(
    inputs: DeployInputs,
    request: RobotRequest,
    held: HeldOutSearch,
    chosen: ScoredConfiguration,
    staged: ExportPaths,
) -> VerificationReport:
    """The written files run by the engine on the held-out calibration images."""
    params = parameter_file.read(staged.params)  # what the robot will read
    config = configuration_from_parameters(params)
    predicted = evaluate(held.held_out_problem, config)
    dataset = calibration_dataset(inputs.cache.dataset, f"calibration cache {inputs.cache_path}")
    return verify_configuration(
        params,
        load_checkpoint(staged.checkpoint),
        inputs.table,
        held.held_out_problem,
        predicted,
        dataset,
        images=[int(i) for i in held.split.held_out],
        passes=request.verify_passes,
        progress=request.progress,
        tolerance=request.latency_tolerance,
        search=chosen,
    )
