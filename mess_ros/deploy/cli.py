"""Command lines of the deployment tools: ``mess_profile`` and ``mess_configure``.

``mess_profile`` measures a latency table on the machine it runs on (the
robot, ideally), or with ``--estimate`` estimates one for a device that is not
at hand from a roofline model (:mod:`mess_ros.deploy.estimate`).
``mess_configure`` turns a training run and a latency table into a robot's
parameter file: it searches every exit configuration, keeps the Pareto front,
picks the configuration that meets the target and writes the parameter file,
a pruned checkpoint, the front as table and plot, and a JSON record. The
parameter file names the checkpoint and the latency table relative to itself,
so the robot's files work wherever they are copied or installed together.
``--verify`` keeps a share of the calibration images out of the search and
runs the written file with the real engine on them; the files reach their
place only when it passes.

Errors the user can fix are printed as one message (no traceback) and give
exit status 1; an unreachable target gives 3 (the closest configuration is
printed and the Pareto reports are still written); a failed verification 4.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from mess_ros.common.latency_table import LatencyTable
from mess_ros.config import BACKEND_NAMES, parameter_file
from mess_ros.console import add_debug_option, console_main
from mess_ros.deploy.decisions import DEFAULT_HOLDOUT_SHARE, DEFAULT_TOLERANCE
from mess_ros.deploy.errors import DeployError, UnreachableTargetError
from mess_ros.deploy.estimate import (
    DEFAULT_JITTER,
    DEFAULT_KERNEL_OVERHEAD_US,
    DEFAULT_MEMORY_GB_PER_S,
    DeviceFigures,
    estimate_latency_table,
)
from mess_ros.deploy.export import (
    ExportPaths,
    Provenance,
)
from mess_ros.deploy.inputs import load_inputs, run_paths
from mess_ros.deploy.pipeline import (
    RobotRequest,
    VerificationFailedError,
    deploy_robot,
    search_robot,
)
from mess_ros.deploy.problem import DECISIONS, STATS, DecisionName
from mess_ros.deploy.profile import format_table, parse_hw, profile_checkpoint
from mess_ros.deploy.search import (
    DEFAULT_IMAGE_THRESHOLDS,
    DEFAULT_PIXEL_THRESHOLDS,
    THRESHOLD_MODES,
    SearchSpace,
    Target,
)
from mess_ros.deploy.verify import (
    DEFAULT_PASSES,
    LATENCY_TOLERANCE,
)
from mess_ros.errors import MessError
from mess_ros.model import load_checkpoint
from mess_ros.package_files import command_line_file
from mess_ros.runtime.engine import resolve_model_path

EXIT_UNREACHABLE = 3
EXIT_VERIFICATION_FAILED = 4
_ROBOT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _fail(program: str, err: Exception) -> int:
    print(f"{program}: error: {err}", file=sys.stderr)
    return 1


# --------------------------------------------------------------------------------------------
# mess_profile
# --------------------------------------------------------------------------------------------


_PROFILE_EPILOG = """\
Without the robot at hand, --estimate writes a table from a roofline model
instead of measuring: per stage max(MACs / throughput, bytes / bandwidth) +
kernels x per-kernel overhead, the high quantile = jitter x mean. The table is
marked as estimated, and so is every parameter file mess_configure writes
from it. Example:

  mess_profile --estimate --device-name "NVIDIA Jetson Orin-class" \\
      --gmacs-per-s 5000 --memory-gb-per-s 100 --kernel-overhead-us 20 \\
      --model run/checkpoint.pt --input-size 128x256 --out orin.json
"""

# Options that only mean something when timing a real run, and their defaults.
_MEASURE_DEFAULTS: dict[str, float] = {"warmup": 5, "repeats": 50, "threads": 0}
_ESTIMATE_DEFAULTS: dict[str, float] = {
    "memory_gb_per_s": DEFAULT_MEMORY_GB_PER_S,
    "kernel_overhead_us": DEFAULT_KERNEL_OVERHEAD_US,
    "jitter": DEFAULT_JITTER,
}


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _option(args: argparse.Namespace, dest: str, defaults: Mapping[str, float]) -> float:
    """The option's value, or its mode's default when it was not given."""
    value = getattr(args, dest)
    return defaults[dest] if value is None else float(value)


def profile_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mess_profile",
        description="Measure the latency of every backbone block, exit head and exit output of a "
        "checkpoint on this machine (or estimate it for another device) and write a latency "
        "table (JSON).",
        epilog=_PROFILE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model", default="", help="checkpoint to profile (default: the bundled model)"
    )
    parser.add_argument(
        "--input-size", required=True, help="HEIGHTxWIDTH the network runs at, e.g. 128x256"
    )
    parser.add_argument(
        "--device",
        help="cpu, cuda or cuda:N (default: cpu when measuring, cuda when estimating)",
    )
    parser.add_argument(
        "--quantile", type=float, default=0.9, help="high quantile recorded (default 0.9)"
    )
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))

    parser.add_argument("--out", required=True, type=Path, help="latency table file to write")
    measure = parser.add_argument_group("measuring (on this machine)")
    measure.add_argument("--warmup", type=int, help="untimed passes first (default 5)")
    measure.add_argument("--repeats", type=int, help="timed passes (default 50)")
    measure.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    measure.add_argument(
        "--threads", type=int, help="CPU threads for torch (default: torch's choice)"
    )
    measure.add_argument(
        "--backend",
        default="torch",
        choices=BACKEND_NAMES,
        help="runtime that executes the stages, as engine.backend (auto: the fastest one "
        "installed); mess_configure writes it into the parameter file (default torch)",
    )
    measure.add_argument("--no-progress", action="store_true", help="no progress bar")
    estimate = parser.add_argument_group("estimating (for a device not at hand)")
    estimate.add_argument(
        "--estimate", action="store_true", help="estimate the table instead of measuring it"
    )
    estimate.add_argument("--device-name", help="the target, e.g. 'NVIDIA Jetson Orin-class'")
    estimate.add_argument(
        "--gmacs-per-s",
        type=float,
        help="sustained convolution throughput at --precision, in 10^9 multiply-adds/s",
    )
    estimate.add_argument(
        "--memory-gb-per-s",
        type=float,
        help=f"memory bandwidth in 10^9 bytes/s (default {DEFAULT_MEMORY_GB_PER_S:g})",
    )
    estimate.add_argument(
        "--kernel-overhead-us",
        type=float,
        help=f"fixed cost of one operator launch in us (default {DEFAULT_KERNEL_OVERHEAD_US:g})",
    )
    estimate.add_argument(
        "--jitter",
        type=float,
        help=f"high quantile over mean of every stage (default {DEFAULT_JITTER:g})",
    )
    add_debug_option(parser)
    return parser


def _check_profile_mode(args: argparse.Namespace) -> None:
    """Refuse options of the other mode: silently ignoring them would mislabel the table."""
    if args.estimate:
        given = [_flag(d) for d in _MEASURE_DEFAULTS if getattr(args, d) is not None]
        given += ["--channels-last"] if args.channels_last else []
        given += ["--backend"] if args.backend != "torch" else []
        if given:
            raise DeployError(
                f"{', '.join(given)} apply to measuring; --estimate runs nothing on a device"
            )
        missing = [_flag(d) for d in ("device_name", "gmacs_per_s") if getattr(args, d) is None]
        if missing:
            raise DeployError(f"--estimate needs {' and '.join(missing)}")
        return
    given = [
        _flag(d)
        for d in ("device_name", "gmacs_per_s", *_ESTIMATE_DEFAULTS)
        if getattr(args, d) is not None
    ]
    if given:
        raise DeployError(f"{', '.join(given)} describe an estimate; add --estimate")


def _estimate(args: argparse.Namespace, input_hw: tuple[int, int]) -> LatencyTable:
    figures = DeviceFigures(
        name=args.device_name,
        gmacs_per_s=args.gmacs_per_s,
        memory_gb_per_s=_option(args, "memory_gb_per_s", _ESTIMATE_DEFAULTS),
        kernel_overhead_us=_option(args, "kernel_overhead_us", _ESTIMATE_DEFAULTS),
        jitter=_option(args, "jitter", _ESTIMATE_DEFAULTS),
        device=args.device or "cuda",
        precision=args.precision,
    )
    checkpoint = load_checkpoint(resolve_model_path(command_line_file(args.model)))
    return estimate_latency_table(checkpoint, input_hw, figures, quantile=args.quantile)


def _measure(args: argparse.Namespace, input_hw: tuple[int, int]) -> LatencyTable:
    return profile_checkpoint(
        command_line_file(args.model),
        input_hw,
        args.device or "cpu",
        warmup=int(_option(args, "warmup", _MEASURE_DEFAULTS)),
        repeats=int(_option(args, "repeats", _MEASURE_DEFAULTS)),
        quantile=args.quantile,
        precision=args.precision,
        channels_last=args.channels_last,
        threads=int(_option(args, "threads", _MEASURE_DEFAULTS)),
        progress=not args.no_progress,
        backend=args.backend,
    )


@console_main("mess_profile")
def profile_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mess_profile``."""
    args = profile_parser().parse_args(argv)
    try:
        _check_profile_mode(args)
        input_hw = parse_hw(args.input_size)
        table = _estimate(args, input_hw) if args.estimate else _measure(args, input_hw)
        table.save(args.out)
    except MessError as err:
        return _fail("mess_profile", err)
    print(format_table(table))
    if args.estimate:
        print(f"ESTIMATED, not measured: {table.notes['estimated']}")
    print(f"latency table written to {args.out}")
    return 0


# --------------------------------------------------------------------------------------------
# mess_configure
# --------------------------------------------------------------------------------------------


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of numbers"
        ) from err


def _names(text: str) -> frozenset[str]:
    return frozenset(v.strip() for v in text.split(",") if v.strip())


def _camera_names(text: str) -> tuple[str, ...]:
    """``front,left,right`` (or ``[front, left, right]``) as camera names."""
    return tuple(n.strip() for n in text.strip().strip("[]").split(",") if n.strip())


def _decisions(text: str) -> tuple[DecisionName, ...]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [n for n in names if n not in DECISIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a comma-separated list of {', '.join(DECISIONS)}"
        )
    return tuple(d for d in DECISIONS if d in names)


def configure_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mess_configure",
        description="Search the exit configuration that best fits a robot and write its "
        "parameter file, a pruned checkpoint and the Pareto front.",
    )
    source = parser.add_argument_group("inputs")
    source.add_argument("--run", type=Path, help="training run directory (checkpoint + cache)")
    source.add_argument("--model", type=Path, help="checkpoint (instead of --run)")
    source.add_argument("--cache", type=Path, help="calibration cache .npz (with --model)")
    source.add_argument(
        "--latency-table", type=Path, required=True, help="latency table from mess_profile"
    )
    source.add_argument(
        "--allow-other-weights",
        action="store_true",
        help="accept a latency table profiled with other weights of the same architecture",
    )
    target = parser.add_argument_group("target (exactly one)")
    goal = target.add_mutually_exclusive_group(required=True)
    goal.add_argument("--budget-ms", type=float, help="maximise mIoU within this latency")
    goal.add_argument("--min-miou", type=float, help="minimise latency at this mIoU (0..1)")
    target.add_argument(
        "--stat", default="mean", choices=STATS, help="latency the budget bounds (default mean)"
    )
    space = parser.add_argument_group("search space and limits")
    space.add_argument(
        "--max-exits", type=int, default=4, help="active exits incl. final (default 4)"
    )
    space.add_argument(
        "--heads", type=_names, help="allowed head architectures or names, comma-separated"
    )
    space.add_argument(
        "--max-head-mparams",
        type=float,
        help="limit on the parameters of the chosen intermediate heads, in millions",
    )
    space.add_argument(
        "--thresholds",
        default="per_exit",
        choices=THRESHOLD_MODES,
        help="image thresholds shared by all exits or one per exit (default per_exit)",
    )
    space.add_argument(
        "--pixel-thresholds",
        type=_floats,
        default=DEFAULT_PIXEL_THRESHOLDS,
        help="pixel threshold grid (multiples of 0.01)",
    )
    space.add_argument(
        "--image-thresholds",
        type=_floats,
        default=DEFAULT_IMAGE_THRESHOLDS,
        help="image threshold grid",
    )
    space.add_argument(
        "--decisions",
        type=_decisions,
        default=DECISIONS,
        help="exit decisions to search, comma-separated: confidence (confident-pixel share), "
        "class (per-class pixel thresholds), learnt (an exit model fitted on the cache); "
        f"default {','.join(DECISIONS)}",
    )
    space.add_argument(
        "--holdout-share",
        type=float,
        default=DEFAULT_HOLDOUT_SHARE,
        help="share of the calibration images held out from fitting and choosing; the written "
        f"figures are measured on them (default {DEFAULT_HOLDOUT_SHARE:g})",
    )
    space.add_argument(
        "--exit-tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help="per-image mIoU an exit may lose against the final exit and still count as good "
        f"enough, for the learnt decision (default {DEFAULT_TOLERANCE:g})",
    )
    output = parser.add_argument_group("outputs")
    output.add_argument("--robot", required=True, help="robot name: <out-dir>/<robot>.yaml")
    output.add_argument("--out-dir", type=Path, default=Path("config/robots"))
    output.add_argument(
        "--report-dir", type=Path, help="where the Pareto table/plot go (default: --out-dir)"
    )
    output.add_argument(
        "--model-dir",
        type=Path,
        help="where the pruned checkpoint and the latency table copy go (default: --out-dir); "
        "models/ lets the parameter file name them by bare file name",
    )
    output.add_argument(
        "--base-params", type=Path, help="parameter file whose other settings are kept"
    )
    output.add_argument(
        "--cameras",
        type=_camera_names,
        help="cameras one node serves with the model, e.g. front,left,right (cameras.names; "
        "default: the base file's, else one camera on the plain topics)",
    )
    output.add_argument(
        "--param-model-path",
        help="engine.model_path written in the file (default: the pruned checkpoint's path)",
    )
    output.add_argument(
        "--param-latency-table",
        help="engine.latency_table written in the file (default: the copied table's path)",
    )
    output.add_argument(
        "--param-exit-model",
        help="policy.exit_model written in the file for a learnt decision (default: the "
        "written exit model's path)",
    )
    check = parser.add_argument_group("verification")
    check.add_argument(
        "--verify",
        action="store_true",
        help="run the written file with the engine on the held-out calibration images (those "
        "the search did not see); nothing is written unless it passes",
    )
    check.add_argument(
        "--verify-passes",
        type=int,
        default=DEFAULT_PASSES,
        help=f"passes over the images; the median pass is compared (default {DEFAULT_PASSES})",
    )
    check.add_argument(
        "--latency-tolerance",
        type=float,
        default=LATENCY_TOLERANCE,
        help=f"accepted relative latency error (default {LATENCY_TOLERANCE:g})",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_debug_option(parser)
    return parser


def _input_paths(args: argparse.Namespace) -> tuple[Path, Path, str]:
    if args.run is not None:
        if args.model is not None or args.cache is not None:
            raise DeployError("give either --run or --model with --cache, not both")
        checkpoint, cache = run_paths(args.run)
        return checkpoint, cache, str(args.run)
    if args.model is None or args.cache is None:
        raise DeployError("give --run RUN_DIR, or --model CHECKPOINT with --cache CACHE.npz")
    return args.model, args.cache, f"{args.model} + {args.cache}"


def _space(args: argparse.Namespace) -> SearchSpace:
    limit = None
    if args.max_head_mparams is not None:
        limit = round(args.max_head_mparams * 1e6)
    return SearchSpace(
        max_exits=args.max_exits,
        allowed_heads=args.heads,
        max_head_params=limit,
        pixel_thresholds=tuple(args.pixel_thresholds),
        image_thresholds=tuple(args.image_thresholds),
        thresholds=args.thresholds,
    )


@console_main("mess_configure")
def configure_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mess_configure``."""
    args = configure_parser().parse_args(argv)
    try:
        return _configure(args)
    except MessError as err:
        return _fail("mess_configure", err)


def _configure(args: argparse.Namespace) -> int:
    if not _ROBOT_NAME.match(args.robot):
        raise DeployError(f"robot name {args.robot!r} must be letters, digits, '_', '-' or '.'")
    checkpoint_path, cache_path, source = _input_paths(args)
    inputs = load_inputs(
        checkpoint_path,
        cache_path,
        args.latency_table,
        allow_other_weights=args.allow_other_weights,
    )
    request = RobotRequest(
        robot=args.robot,
        target=Target(budget_ms=args.budget_ms, min_miou=args.min_miou, stat=args.stat),
        space=_space(args),
        decisions=args.decisions,
        holdout_share=args.holdout_share,
        exit_tolerance=args.exit_tolerance,
        base=parameter_file.read(args.base_params) if args.base_params else None,
        cameras=args.cameras,
        param_model_path=args.param_model_path or "",
        param_latency_table=args.param_latency_table or "",
        param_exit_model=args.param_exit_model or "",
        verify=args.verify,
        verify_passes=args.verify_passes,
        latency_tolerance=args.latency_tolerance,
        progress=not args.no_progress,
    )
    held, warnings = search_robot(inputs, request)
    for warning in warnings:
        print(f"mess_configure: warning: {warning}", file=sys.stderr)
    split = held.split
    print(held.result.report())
    print(
        f"fitted and chosen on {split.fit.size} calibration images, figures below on the "
        f"{split.held_out.size} held out"
    )
    paths = ExportPaths.for_robot(args.out_dir, args.robot, args.report_dir, args.model_dir)
    provenance = Provenance(
        source=source,
        checkpoint_fingerprint=inputs.checkpoint.fingerprint,
        latency_table=str(args.latency_table),
        num_images=int(split.held_out.size),
        fit_images=int(split.fit.size),
    )
    try:
        deployment = deploy_robot(inputs, request, held, paths, provenance)
    except UnreachableTargetError as err:
        print(f"mess_configure: {err}", file=sys.stderr)
        print(f"Pareto front written to {paths.pareto_md} and {paths.pareto_png}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except VerificationFailedError as err:
        print(err.report.summary())
        print(
            "mess_configure: verification failed; nothing was written (the Pareto front "
            "above and this report are all there is)",
            file=sys.stderr,
        )
        return EXIT_VERIFICATION_FAILED
    chosen = deployment.chosen
    print(f"chosen (fitting images): {chosen.summary()}")
    print(f"chosen (held-out images): {held.on_held_out(chosen).summary()}")
    print(f"single exit (final only, held-out images): {held.held_out_baseline.summary()}")
    if deployment.verification is not None:
        print(deployment.verification.summary())
    for path in deployment.written:
        print(f"wrote {path}")
    return 0
