"""Accuracy of every exit of the bundled model on held-out scenes, and the training ablation.

Run from the repository root::

    python bench/exit_accuracy.py [--images-per-level 100] [--model models/default.pt]
        [--single-exit runs/ablation_single_exit] [--naive-joint runs/ablation_naive_joint]

The scenes are a synthetic split no training step or calibration ever saw
(seed 2, the test split by convention; training uses seed 0 and the
calibration cache seed 1), with the same number of images at each difficulty
level so that "hard" is not a handful of images.

Scoring goes through :func:`mess_ros.train.calibration.build_calibration_cache`
on that split: it preprocesses with :func:`mess_ros.data.transforms.normalize_image`
and turns logits into masks with :func:`mess_ros.model.outputs.logits_to_mask`,
exactly as the engine does, and keeps one confusion matrix per image and
exit; every figure below is an exact sum of those matrices.

What it checks, each against a baseline measured in the same run:

* the final exit of the two-stage model is within 0.5 mIoU points of the
  separately trained single-exit network (or better): adding exits must not
  cost final accuracy;
* at every candidate point, the best head of the two-stage model beats the
  best head of the naive joint model (the same head architectures at the
  same points, trained jointly with the backbone without distillation);
* on the hard scenes, the final exit beats the first exit (the best head at
  the shallowest point, chosen on the hard scenes themselves, which favours
  the early exit) by at least 10 points: hard scenes really need depth.

"Best head at a point" is chosen on this split, for both models alike (an
oracle choice that favours neither). Prints tables, PASS/FAIL per check,
writes JSON (``--out``) and a PNG (``--plot``); exit status 0 unless an
input is missing or wrong (2).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if not __package__:  # run as a file, not with -m: the package `bench` lives one level up
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench._common import (
    DEFAULT_MODEL,
    REPO_ROOT,
    REPORT_DIR,
    SINGLE_EXIT_RUN,
    BenchError,
    parse_hw,
    run_and_save,
)
from mess_ros.common.exits import FINAL_EXIT
from mess_ros.data.datasets import SPLIT_SEEDS
from mess_ros.data.labels import LabelSet
from mess_ros.data.sample import Sample
from mess_ros.data.synthetic import DIFFICULTY_LEVELS, SceneGenerator
from mess_ros.model import Checkpoint, load_checkpoint
from mess_ros.train.calibration import CalibrationCache, build_calibration_cache
from mess_ros.train.rundir import RunDir

DEFAULT_NAIVE_JOINT = REPO_ROOT / "runs/ablation_naive_joint"
DEFAULT_OUT = REPORT_DIR / "exit_accuracy.json"
DEFAULT_PLOT = REPORT_DIR / "exit_accuracy.png"

FINAL_TOLERANCE_PP = 0.5
HARD_GAP_PP = 10.0
LEVELS: tuple[str, ...] = tuple(DIFFICULTY_LEVELS)


# --------------------------------------------------------------------------------------------
# The held-out split
# --------------------------------------------------------------------------------------------


class LevelledScenes:
    """``per_level`` scenes of every difficulty level from one generator seed.

    Level ``l`` takes scene indices ``l * per_level ...``, so no two images
    share a scene plan; the levels appear in order, which does not matter to
    a per-image cache.
    """

    def __init__(
        self, labels: LabelSet, per_level: int, height: int, width: int, seed: int
    ) -> None:
        if per_level < 1:
            raise BenchError(f"images per level must be >= 1, got {per_level}")
        self.labels = labels
        self.per_level = per_level
        self.generator = SceneGenerator(height=height, width=width, seed=seed)

    def __len__(self) -> int:
        return self.per_level * len(LEVELS)

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < len(self):
            raise IndexError(f"scene {index} out of range 0..{len(self) - 1}")
        return self.generator.render(index, difficulty=index // self.per_level)


# --------------------------------------------------------------------------------------------
# Per-exit accuracy
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExitScore:
    """mIoU (in points) of always taking one exit, overall and per difficulty level."""

    exit_id: str
    point: str
    head: str
    depth: int
    overall: float
    per_level: Mapping[str, float]

    def value(self, level: str | None) -> float:
        return self.overall if level is None else self.per_level[level]

    def to_dict(self) -> dict[str, Any]:
        return {
            "point": self.point,
            "head": self.head,
            "miou": _rounded(self.overall),
            **{level: _rounded(v) for level, v in self.per_level.items()},
        }


@dataclass
class ModelScores:
    """Every exit of one model scored on the split, in depth order (final last)."""

    name: str
    checkpoint: Checkpoint
    path: Path
    exits: list[ExitScore]
    seconds: float

    @property
    def final(self) -> ExitScore:
        return self.exits[-1]

    def intermediate(self) -> list[ExitScore]:
        return self.exits[:-1]

    def by_id(self) -> dict[str, ExitScore]:
        return {score.exit_id: score for score in self.exits}

    def best_per_point(self, level: str | None = None) -> dict[str, ExitScore]:
        """The most accurate head at each candidate point (on ``level``, or overall)."""
        best: dict[str, ExitScore] = {}
        for score in self.intermediate():
            held = best.get(score.point)
            if held is None or score.value(level) > held.value(level):
                best[score.point] = score
        return best


def score_model(
    name: str,
    checkpoint: Checkpoint,
    path: Path,
    scenes: LevelledScenes,
    input_hw: tuple[int, int],
    device: str,
    progress: bool,
) -> ModelScores:
    """Every exit of ``checkpoint`` (read from ``path``) on the split (one cache pass)."""
    started = time.perf_counter()
    cache = build_calibration_cache(
        checkpoint,
        scenes,
        input_hw,
        device,
        progress=progress,
        dataset_info={"kind": "synthetic-levelled", "seed": scenes.generator.seed},
    )
    seconds = time.perf_counter() - started
    return ModelScores(name, checkpoint, path, exit_scores(checkpoint, cache), seconds)


def exit_scores(checkpoint: Checkpoint, cache: CalibrationCache) -> list[ExitScore]:
    model = checkpoint.model
    depth = {point: index for index, point in enumerate(model.block_points)}
    scores = []
    for exit_id in model.exit_ids:
        point = model.exit_point(exit_id)
        head = "final" if exit_id == FINAL_EXIT else model.exit_spec(exit_id).head.name
        scores.append(
            ExitScore(
                exit_id=exit_id,
                point=point,
                head=head,
                depth=depth[point],
                overall=100.0 * cache.exit_miou(exit_id),
                per_level={
                    name: 100.0 * cache.exit_miou(exit_id, level)
                    for level, name in enumerate(LEVELS)
                },
            )
        )
    return scores


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One claim of the benchmark with its measured margin."""

    name: str
    target: str
    measured: str
    passed: bool
    informative: bool = False
    """Reported for insight, not a requirement: it does not decide ``all_passed``."""

    def line(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        if self.informative:
            verdict = f"INFO, {verdict.lower()}"
        return f"[{verdict}] {self.name}: {self.measured} ({self.target})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "target": self.target,
            "measured": self.measured,
            "passed": self.passed,
            "informative": self.informative,
        }


def _depth_gap_check(
    two_stage: ModelScores, first: ExitScore, name: str, informative: bool = False
) -> tuple[Check, float]:
    """Final exit vs ``first`` on the hard scenes, against the depth target."""
    hard = LEVELS[-1]
    gap = two_stage.final.value(hard) - first.value(hard)
    check = Check(
        name=f"{hard} split: {name}",
        target=f">= {HARD_GAP_PP:g} points",
        measured=(
            f"final {two_stage.final.value(hard):.2f} vs {first.exit_id} "
            f"{first.value(hard):.2f}: {gap:+.2f} points"
        ),
        passed=gap >= HARD_GAP_PP,
        informative=informative,
    )
    return check, gap


def hard_split_check(two_stage: ModelScores) -> tuple[Check, dict[str, Any]]:
    """Final exit vs the best head at the shallowest point, on the hard scenes."""
    hard = LEVELS[-1]
    best = two_stage.best_per_point(hard)
    if not best:
        check = Check("hard split needs depth", "model has intermediate exits", "none", False)
        return check, {}
    first = min(best.values(), key=lambda s: s.depth)
    check, gap = _depth_gap_check(two_stage, first, "final beats first exit")
    figures = {
        "first_exit": first.exit_id,
        "first_exit_miou": _rounded(first.value(hard)),
        "final_miou": _rounded(two_stage.final.value(hard)),
        "gap_pp": _rounded(gap),
    }
    return check, figures


def backbone_depth_check(two_stage: ModelScores) -> Check | None:
    """Final exit vs the network's own first exit: stage 1's light head at the shallowest point.

    Stage 1 trains that head end to end with the backbone, and a 1x1
    classifier adds no depth of its own, so the gap measures what the
    backbone's depth alone buys on hard scenes. The strict check above lets
    the first point borrow depth from its heaviest head instead.
    """
    light = two_stage.checkpoint.train_config.get("stage1_head")
    exits = [s for s in two_stage.intermediate() if s.head == light]
    if not exits:
        return None
    first = min(exits, key=lambda s: s.depth)
    name = "final beats the stage-1 exit at the first point"
    check, _ = _depth_gap_check(two_stage, first, name, informative=True)
    return check


def final_check(two_stage: ModelScores, single: ModelScores) -> tuple[Check, dict[str, Any]]:
    delta = two_stage.final.overall - single.final.overall
    check = Check(
        name="two-stage final vs single-exit network",
        target=f"no more than {FINAL_TOLERANCE_PP:g} points lower",
        measured=(
            f"{two_stage.final.overall:.2f} vs {single.final.overall:.2f}: {delta:+.2f} points"
        ),
        passed=delta >= -FINAL_TOLERANCE_PP,
    )
    figures = {
        "two_stage": _rounded(two_stage.final.overall),
        "single_exit": _rounded(single.final.overall),
        "delta_pp": _rounded(delta),
        "per_level_delta_pp": {
            level: _rounded(two_stage.final.value(level) - single.final.value(level))
            for level in LEVELS
        },
    }
    return check, figures


def early_exit_checks(
    two_stage: ModelScores, naive: ModelScores
) -> tuple[list[Check], dict[str, Any]]:
    """Best head per point, and the same head compared with itself, two-stage vs naive."""
    ours, theirs = two_stage.best_per_point(), naive.best_per_point()
    points = [p for p in ours if p in theirs]
    if not points:
        msg = "the two-stage and naive joint models share no candidate point; cannot compare"
        raise BenchError(msg)
    per_point = {
        point: {
            "two_stage_head": ours[point].head,
            "two_stage": _rounded(ours[point].overall),
            "naive_joint_head": theirs[point].head,
            "naive_joint": _rounded(theirs[point].overall),
            "delta_pp": _rounded(ours[point].overall - theirs[point].overall),
        }
        for point in points
    }
    wins = [p for p in points if ours[p].overall > theirs[p].overall]
    worst = min(points, key=lambda p: ours[p].overall - theirs[p].overall)
    best_check = Check(
        name="best head per point: two-stage beats naive joint",
        target="at every candidate point",
        measured=(
            f"{len(wins)}/{len(points)} points, smallest margin "
            f"{ours[worst].overall - theirs[worst].overall:+.2f} points at {worst}"
        ),
        passed=len(wins) == len(points),
    )
    theirs_by_id = naive.by_id()
    same = [s for s in two_stage.intermediate() if s.exit_id in theirs_by_id]
    same_wins = [s for s in same if s.overall > theirs_by_id[s.exit_id].overall]
    mean_delta = (
        sum(s.overall - theirs_by_id[s.exit_id].overall for s in same) / len(same)
        if same
        else math.nan
    )
    same_check = Check(
        name="same head at the same point: two-stage beats naive joint",
        target="at a majority of exits",
        measured=f"{len(same_wins)}/{len(same)} exits, mean {mean_delta:+.2f} points",
        passed=bool(same) and 2 * len(same_wins) > len(same),
        informative=True,
    )
    figures = {
        "best_head_per_point": per_point,
        "same_head": {
            s.exit_id: {
                "two_stage": _rounded(s.overall),
                "naive_joint": _rounded(theirs_by_id[s.exit_id].overall),
                "delta_pp": _rounded(s.overall - theirs_by_id[s.exit_id].overall),
            }
            for s in same
        },
        "same_head_wins": len(same_wins),
        "same_head_compared": len(same),
        "same_head_mean_delta_pp": _rounded(mean_delta),
    }
    return [best_check, same_check], figures


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def exit_table(scores: ModelScores) -> str:
    header = f"{'exit':<28} {'mIoU':>6} " + " ".join(f"{level:>6}" for level in LEVELS)
    lines = [header, "-" * len(header)]
    for score in scores.exits:
        cells = " ".join(f"{score.value(level):6.2f}" for level in LEVELS)
        lines.append(f"{score.exit_id:<28} {score.overall:6.2f} {cells}")
    return "\n".join(lines)


def ablation_table(
    two_stage: ModelScores, naive: ModelScores | None, single: ModelScores | None
) -> str:
    """Best head per point (overall mIoU) of each training method, then the final exits."""
    columns = [("two-stage", two_stage), ("naive joint", naive), ("single exit", single)]
    present = [(name, scores) for name, scores in columns if scores is not None]
    header = f"{'point':<10} " + " ".join(f"{name:>26}" for name, _ in present)
    lines = [header, "-" * len(header)]
    best = {name: scores.best_per_point() for name, scores in present}
    for point in two_stage.best_per_point():
        cells = []
        for name, _ in present:
            held = best[name].get(point)
            cells.append(f"{held.overall:6.2f} {held.head:>19}" if held else f"{'-':>26}")
        lines.append(f"{point:<10} " + " ".join(cells))
    finals = " ".join(f"{scores.final.overall:6.2f} {'final':>19}" for _, scores in present)
    lines.append(f"{'final':<10} {finals}")
    return "\n".join(lines)


def plot(
    path: Path,
    two_stage: ModelScores,
    naive: ModelScores | None,
    single: ModelScores | None,
) -> None:
    """Per-difficulty curves of the two-stage model, and the ablation curves by depth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = two_stage.checkpoint.model.block_points
    panels = 2 if naive is None and single is None else 3
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.2), dpi=110, squeeze=False)
    axes = axes[0]
    try:
        ax = axes[0]
        level_colours = ("black", "tab:green", "tab:orange", "tab:red")
        for level, colour in zip((None, *LEVELS), level_colours, strict=True):
            best = two_stage.best_per_point(level)
            xs = [*(best[p].depth for p in best), two_stage.final.depth]
            ys = [*(best[p].value(level) for p in best), two_stage.final.value(level)]
            ax.plot(xs, ys, marker="o", color=colour, label=level or "all")
            dots = two_stage.intermediate()
            ax.scatter(
                [s.depth for s in dots],
                [s.value(level) for s in dots],
                s=8,
                color=colour,
                alpha=0.3,
            )
        ax.set_title("two-stage model: best head per point (dots: every head)", fontsize=9)
        _depth_axis(ax, points)
        ax.legend(fontsize=8, title="difficulty", title_fontsize=8)

        ax = axes[1]
        archs = sorted({s.head for s in two_stage.intermediate()})
        colours = plt.get_cmap("tab10")
        for index, head in enumerate(archs):
            mine = [s for s in two_stage.intermediate() if s.head == head]
            ax.plot(
                [s.depth for s in mine],
                [s.overall for s in mine],
                marker="o",
                color=colours(index),
                label=f"{head} two-stage",
            )
            if naive is not None:
                theirs = [s for s in naive.intermediate() if s.head == head]
                ax.plot(
                    [s.depth for s in theirs],
                    [s.overall for s in theirs],
                    marker="x",
                    linestyle="--",
                    color=colours(index),
                    label=f"{head} naive",
                )
        ax.set_title("same head, same point (solid two-stage, dashed naive)", fontsize=9)
        _depth_axis(ax, points)
        ax.legend(fontsize=6, ncol=2)

        if panels == 3:
            ax = axes[2]
            methods = [("two-stage", two_stage, "tab:blue"), ("naive joint", naive, "tab:orange")]
            for name, scores, colour in methods:
                if scores is None:
                    continue
                best = scores.best_per_point()
                xs = [*(best[p].depth for p in best), scores.final.depth]
                ys = [*(best[p].overall for p in best), scores.final.overall]
                ax.plot(xs, ys, marker="o", color=colour, label=f"{name} (best head per point)")
            if single is not None:
                ax.scatter(
                    [single.final.depth],
                    [single.final.overall],
                    marker="s",
                    s=70,
                    color="tab:gray",
                    label="single-exit network",
                    zorder=3,
                )
            ax.set_title("ablation: training method", fontsize=9)
            _depth_axis(ax, points)
            ax.legend(fontsize=8)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)


def _depth_axis(ax: Any, points: Sequence[str]) -> None:
    ax.set_xticks(range(len(points)))
    ax.set_xticklabels([*points[:-1], "final"], rotation=45, fontsize=7)
    ax.set_xlabel("exit point (depth)")
    ax.set_ylabel("mIoU (%)")
    ax.grid(True, alpha=0.3)


def _rounded(value: float) -> float | None:
    return None if math.isnan(value) else round(float(value), 4)


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def checkpoint_file(path: Path) -> Path:
    """A checkpoint file, or the checkpoint of a training run directory."""
    candidate = RunDir(path).checkpoint_path if path.is_dir() else path
    if not candidate.is_file():
        msg = f"checkpoint {str(candidate)!r} does not exist"
        raise BenchError(msg)
    return candidate


def check_comparable(reference: Checkpoint, other: Checkpoint, name: str, path: Path) -> None:
    """The ablation means something only for one backbone, final head, input size and labels."""
    ours, theirs = reference.model.spec, other.model.spec
    differences = [
        f"{what}: {a!r} vs {b!r}"
        for what, a, b in (
            ("backbone", ours.backbone, theirs.backbone),
            ("final head", ours.final_head.name, theirs.final_head.name),
            ("classes", ours.num_classes, theirs.num_classes),
            ("labels", reference.labels.get("name"), other.labels.get("name")),
            (
                "input size",
                reference.train_config.get("input_hw"),
                other.train_config.get("input_hw"),
            ),
        )
        if a != b
    ]
    if differences:
        msg = f"{name} checkpoint {str(path)!r} differs from the two-stage model: " + "; ".join(
            differences
        )
        raise BenchError(msg)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="mIoU of every exit on held-out synthetic scenes, per difficulty, and the "
        "ablation single-exit vs naive joint vs two-stage training."
    )
    parser.add_argument(
        "--model", type=Path, default=DEFAULT_MODEL, help="two-stage checkpoint or run dir"
    )
    parser.add_argument(
        "--single-exit",
        type=Path,
        default=SINGLE_EXIT_RUN,
        help="single-exit baseline (run dir or checkpoint)",
    )
    parser.add_argument(
        "--naive-joint",
        type=Path,
        default=DEFAULT_NAIVE_JOINT,
        help="naive joint baseline (run dir or checkpoint)",
    )
    parser.add_argument(
        "--skip-ablation", action="store_true", help="score the two-stage model only"
    )
    parser.add_argument("--images-per-level", type=int, default=100)
    parser.add_argument(
        "--seed", type=int, default=SPLIT_SEEDS["test"], help="scene seed (default: test split)"
    )
    parser.add_argument(
        "--image-size", help="HxW of the scenes (default: the model's validation scenes)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results")
    parser.add_argument("--plot", type=Path, default=DEFAULT_PLOT, help="PNG plot")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def _image_hw(text: str | None, checkpoint: Checkpoint) -> tuple[int, int]:
    if text:
        return parse_hw(text)
    val = checkpoint.train_config.get("val_dataset", {})
    if val.get("kind") != "synthetic":
        msg = "the model was not validated on synthetic scenes; give --image-size"
        raise BenchError(msg)
    return int(val["height"]), int(val["width"])


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model_path = checkpoint_file(args.model)
    reference = load_checkpoint(model_path)
    labels = LabelSet.from_dict(reference.labels)
    height, width = _image_hw(args.image_size, reference)
    input_hw = (
        int(reference.train_config["input_hw"][0]),
        int(reference.train_config["input_hw"][1]),
    )
    baselines: dict[str, tuple[Checkpoint, Path]] = {}
    if not args.skip_ablation:
        for name, path in (("single-exit", args.single_exit), ("naive joint", args.naive_joint)):
            try:
                baseline_path = checkpoint_file(path)
            except BenchError as err:
                mode = name.replace("-", "_").replace(" ", "_")
                msg = (
                    f"{err}: train the {name} baseline with `mess_train --preset default "
                    f"--mode {mode} --out {path}` or pass --skip-ablation"
                )
                raise BenchError(msg) from err
            baseline = load_checkpoint(baseline_path)
            check_comparable(reference, baseline, name, baseline_path)
            baselines[name] = (baseline, baseline_path)
    scenes = LevelledScenes(labels, args.images_per_level, height, width, args.seed)
    print(
        f"held-out split: seed {args.seed}, {args.images_per_level} scenes per level "
        f"({len(scenes)} in all) at {height}x{width}, network input {input_hw[0]}x{input_hw[1]}, "
        f"{torch.get_num_threads()} torch threads"
    )
    progress = not args.no_progress
    two_stage = score_model(
        "two-stage", reference, model_path, scenes, input_hw, args.device, progress
    )
    scored = {
        name: score_model(name, checkpoint, path, scenes, input_hw, args.device, progress)
        for name, (checkpoint, path) in baselines.items()
    }
    single, naive = scored.get("single-exit"), scored.get("naive joint")

    print(f"\nmIoU (%) of every exit of the two-stage model ({model_path})")
    print(exit_table(two_stage))
    checks: list[Check] = []
    hard, hard_figures = hard_split_check(two_stage)
    checks.append(hard)
    backbone_depth = backbone_depth_check(two_stage)
    if backbone_depth is not None:
        checks.append(backbone_depth)
    ablation: dict[str, Any] = {}
    if single is not None or naive is not None:
        print("\nablation: best head per point and final exit, mIoU (%) over all scenes")
        print(ablation_table(two_stage, naive, single))
    if single is not None:
        check, ablation["final_exit"] = final_check(two_stage, single)
        checks.append(check)
    if naive is not None:
        early, ablation["early_exits"] = early_exit_checks(two_stage, naive)
        checks.extend(early)
        ablation["naive_joint_final"] = _rounded(naive.final.overall)
    print("\nbest head per point chosen on this split for every model alike; first exit = best")
    print(f"head at the shallowest point on the {LEVELS[-1]} scenes")
    for check in checks:
        print(check.line())

    plot(args.plot, two_stage, naive, single)
    models = [m for m in (two_stage, single, naive) if m is not None]
    return {
        "benchmark": "exit_accuracy",
        "split": {
            "seed": args.seed,
            "images_per_level": args.images_per_level,
            "levels": list(LEVELS),
            "image_hw": [height, width],
            "input_hw": list(input_hw),
        },
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "models": {
            m.name: {
                "path": str(m.path),
                "fingerprint": m.checkpoint.fingerprint,
                "mode": m.checkpoint.train_config.get("mode"),
                "scoring_s": round(m.seconds, 2),
            }
            for m in models
        },
        "exits": {s.exit_id: s.to_dict() for s in two_stage.exits},
        "hard_split": hard_figures,
        "ablation": ablation,
        "ablation_exits": {
            m.name: {s.exit_id: s.to_dict() for s in m.exits} for m in models if m is not two_stage
        },
        "checks": [check.to_dict() for check in checks],
        "all_passed": all(check.passed for check in checks if not check.informative),
        "plot": str(args.plot),
        "elapsed_s": round(time.perf_counter() - started, 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_and_save("exit_accuracy", lambda: run(args), args.out, args.plot)


if __name__ == "__main__":
    sys.exit(main())
