"""The learnt and class decisions, and held-out selection, on constructed and tiny real runs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mess_ros.config import ConfigError, parameter_file
from mess_ros.deploy.cli import configure_main
from mess_ros.deploy.decisions import (
    class_threshold_grid,
    fit_exit_predictor,
    good_enough,
    search_held_out,
    split_images,
    with_learnt_scores,
)
from mess_ros.deploy.errors import SearchSpaceError
from mess_ros.deploy.export import apply_configuration, configuration_from_parameters
from mess_ros.deploy.inputs import load_inputs
from mess_ros.deploy.problem import ExitConfiguration, SearchProblem, evaluate, exit_decisions
from mess_ros.deploy.search import SearchSpace, search
from mess_ros.deploy.verify import calibration_dataset, verify_configuration
from mess_ros.runtime.engine import SegmentationEngine
from mess_ros.runtime.exit_model import ExitPredictor, exit_features
from tests.deploy.conftest import TinyRun
from tests.deploy.constructed import constructed_problem

CLASS_BINS = 20


def with_class_hist(problem: SearchProblem, seed: int = 0) -> SearchProblem:
    """Per-class histograms consistent with the problem: easy images are confident ones.

    An exit's pixels are spread over classes and bins so that images where the
    exit agrees with the final exit hold more confident pixels: the learnt
    decision then has something real to find.
    """
    rng = np.random.default_rng(seed)
    good = good_enough(problem, 0.01)
    images, exits = problem.conf_hist.shape[:2]
    classes = problem.num_classes
    hist = np.zeros((images, exits, classes, CLASS_BINS), dtype=np.int64)
    for n in range(images):
        for e in range(exits):
            pixels = int(problem.conf_hist[n, e].sum())
            skew = (6.0 if good[n, e] else 1.0) + rng.random()
            weights = np.outer(rng.random(classes) + 0.2, (np.arange(CLASS_BINS) + 1.0) ** skew)
            hist[n, e] = rng.multinomial(pixels, (weights / weights.sum()).ravel()).reshape(
                classes, CLASS_BINS
            )
    names = tuple(f"c{c}" for c in range(classes))
    return replace(problem, class_hist=hist, class_names=names)


@pytest.fixture(scope="module")
def problem() -> SearchProblem:
    return with_class_hist(constructed_problem(seed=3, images=60, pixels=64))


def test_split_is_disjoint_deterministic_and_even_per_level() -> None:
    difficulty = np.array([0, 1, 2, 0, 0, 1, 2, 2, 0, 1, 1, 0])
    split = split_images(difficulty, 0.5)
    assert not set(split.fit) & set(split.held_out)
    assert sorted([*split.fit, *split.held_out]) == list(range(len(difficulty)))
    for level in (0, 1, 2):
        members = np.flatnonzero(difficulty == level)
        held = np.isin(members, split.held_out).sum()
        assert abs(held - len(members) / 2) <= 0.5
    again = split_images(difficulty, 0.5)
    assert (again.fit == split.fit).all() and (again.held_out == split.held_out).all()
    with pytest.raises(SearchSpaceError, match="held-out share"):
        split_images(difficulty, 1.0)


def test_predictor_trains_deterministically_and_reproduces_known_decisions(
    problem: SearchProblem, tmp_path: Path
) -> None:
    first = fit_exit_predictor(problem, tolerance=0.01)
    second = fit_exit_predictor(problem, tolerance=0.01)
    assert first.scorers == second.scorers  # bit for bit
    path = tmp_path / "exit_model.json"
    first.save(path)
    loaded = ExitPredictor.load(path)
    assert loaded.scorers == first.scorers
    # Known decisions: the constructed images whose exit is good enough carry confident
    # pixels, so a fitted scorer must rank them above the others on its own images.
    good = good_enough(problem, 0.01)
    assert problem.class_hist is not None
    for column, candidate in enumerate(problem.candidates):
        labels = good[:, column]
        if labels.all() or not labels.any():
            continue
        scores = np.array(
            [loaded.score(candidate.exit_id, problem.class_hist[n, column]) for n in range(60)]
        )
        assert scores[labels].min() > scores[~labels].max(), candidate.exit_id


def test_exit_model_file_names_its_problems(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(Exception, match="is not a mess_ros exit model"):
        ExitPredictor.load(path)
    features = exit_features(np.array([[0, 2, 2], [4, 0, 0]]))
    assert features.shape == (2 * 2 + 7,)
    assert features[:2].tolist() == [0.5, 0.5]


def test_learnt_search_scores_match_direct_evaluation(problem: SearchProblem) -> None:
    scored = with_learnt_scores(problem, fit_exit_predictor(problem))
    space = SearchSpace(
        max_exits=3, decision="learnt", pixel_thresholds=(0.0,), image_thresholds=(0.3, 0.6, 0.9)
    )
    result = search(scored, space)
    assert any(s.config.decision == "learnt" and s.config.exits for s in result.front)
    for entry in result.front:
        assert evaluate(scored, entry.config) == entry


def test_class_decision_thresholds_lie_on_the_grid(problem: SearchProblem) -> None:
    grid = class_threshold_grid(problem, (0.5, 0.9))
    assert len(grid) == 2 and all(len(v) == problem.num_classes for v in grid)
    assert all(abs(t * CLASS_BINS - round(t * CLASS_BINS)) < 1e-9 for v in grid for t in v)
    space = SearchSpace(max_exits=2, decision="class", pixel_thresholds=(0.5, 0.9))
    space = replace(space, class_thresholds=grid, image_thresholds=(0.3, 0.6))
    for entry in search(problem, space).front:
        assert evaluate(problem, entry.config) == entry


def test_held_out_figures_come_from_images_the_fit_did_not_use(problem: SearchProblem) -> None:
    difficulty = np.arange(problem.num_images) % 3
    split = split_images(difficulty, 0.5)
    space = SearchSpace(max_exits=2, pixel_thresholds=(0.5, 0.9), image_thresholds=(0.3, 0.6, 0.9))
    held = search_held_out(problem, split, ("confidence", "learnt"), space)
    assert held.predictor is not None
    assert held.predictor.fit["image_indices"] == [int(i) for i in split.fit]
    assert held.fit_problem.num_images == split.fit.size
    assert held.held_out_problem.num_images == split.held_out.size
    # The exit model depends on the fitting images only: changing every held-out image's
    # numbers leaves it, and the front chosen on the fitting images, unchanged.
    scrambled = problem.subset(np.concatenate((split.fit, split.held_out[::-1])))
    shifted = replace(
        split, held_out=np.arange(split.fit.size, problem.num_images), fit=np.arange(split.fit.size)
    )
    again = search_held_out(scrambled, shifted, ("confidence", "learnt"), space)
    assert again.predictor is not None and again.predictor.scorers == held.predictor.scorers
    assert [s.config for s in again.result.front] == [s.config for s in held.result.front]
    for fitted, reported in zip(held.result.front, held.held_out, strict=True):
        assert reported == evaluate(held.held_out_problem, fitted.config)
        assert sum(reported.exit_counts) == split.held_out.size


def test_engine_runs_a_learnt_configuration_as_the_search_predicts(
    tiny_run: TinyRun, tmp_path: Path
) -> None:
    inputs = load_inputs(tiny_run.checkpoint_path, tiny_run.cache_path, tiny_run.table_path)
    split = split_images(inputs.cache.difficulty, 0.5)
    whole = inputs.problem()
    predictor = fit_exit_predictor(whole.subset(split.fit))
    held_out = with_learnt_scores(whole.subset(split.held_out), predictor)
    scores = held_out.learnt_scores
    assert scores is not None
    # The exit whose scores vary most, its threshold at the median score: some held-out
    # images leave early, some do not.
    column = int(np.argmax([len(set(scores[:, c])) for c in range(len(whole.candidates))]))
    exits = (whole.candidates[column].exit_id,)
    threshold = float(np.sort(scores[:, column])[held_out.num_images // 2])
    config = ExitConfiguration(exits, 0.0, (threshold,), "learnt")
    predicted = evaluate(held_out, config)
    assert 0 < predicted.exit_counts[-1] < held_out.num_images
    model_path = tmp_path / "tiny.exit_model.json"
    predictor.save(model_path)
    params = apply_configuration(
        config, tiny_run.table, str(tiny_run.checkpoint_path), exit_model_path=str(model_path)
    )
    assert params.policy.exit_model == str(model_path)
    assert configuration_from_parameters(params) == config
    report = verify_configuration(
        params,
        tiny_run.checkpoint,
        tiny_run.table,
        held_out,
        predicted,
        calibration_dataset(inputs.cache.dataset, "tiny run"),
        images=[int(i) for i in split.held_out],
    )
    assert report.miou_matches, report.summary()
    assert report.decisions_match, report.summary()
    assert (exit_decisions(held_out, config) < len(exits)).any()


def test_configure_with_the_learnt_decision_writes_its_exit_model(
    tiny_run: TinyRun, tmp_path: Path
) -> None:
    out = tmp_path / "robots"
    argv = ["--run", str(tiny_run.root), "--latency-table", str(tiny_run.table_path)]
    argv += ["--robot", "tiny", "--out-dir", str(out), "--no-progress", "--min-miou", "0.0"]
    argv += ["--decisions", "learnt", "--image-thresholds", "0.0,0.5"]
    assert configure_main(argv) == 0
    summary = json.loads((out / "tiny_search.json").read_text())
    assert summary["chosen"]["decision"] == "learnt" and summary["chosen"]["exits"]
    text = (out / "tiny.yaml").read_text()
    assert 'exit_model: "tiny.exit_model.json"' in text  # beside the parameter file
    config = parameter_file.read(out / "tiny.yaml")
    assert Path(config.policy.exit_model) == (out / "tiny.exit_model.json").resolve()
    assert "held-out" in text
    assert ExitPredictor.load(out / "tiny.exit_model.json").checkpoint_fingerprint == (
        tiny_run.checkpoint.fingerprint
    )


def test_hybrid_policy_with_a_learnt_decision_respects_deadlines(
    tiny_run: TinyRun, tmp_path: Path
) -> None:
    inputs = load_inputs(tiny_run.checkpoint_path, tiny_run.cache_path, tiny_run.table_path)
    whole = inputs.problem()
    predictor = fit_exit_predictor(whole)
    model_path = tmp_path / "exit_model.json"
    predictor.save(model_path)
    first = whole.candidates[0].exit_id
    config = ExitConfiguration((first,), 0.0, (1.0,), "learnt")  # never confident enough
    params = apply_configuration(
        config, tiny_run.table, str(tiny_run.checkpoint_path), exit_model_path=str(model_path)
    )
    params.policy.name = "hybrid"
    engine = SegmentationEngine(params, tiny_run.checkpoint, latency_table=tiny_run.table)
    image = calibration_dataset(inputs.cache.dataset, "tiny run")[0].image
    relaxed = engine.infer(image)
    assert relaxed.exit_id == "final" and relaxed.evaluated_exits == (first, "final")
    # A deadline between the first exit and the final one: the hybrid policy stops early.
    early = tiny_run.table.path_ms([first], first)
    late = tiny_run.table.path_ms([first], "final")
    params.deadline.deadline_ms = (early + late) / 2
    engine.reconfigure(params)
    hurried = engine.infer(image)
    # (the frame's resize and hand-over, learnt from the first frame, may already make even
    # the earliest exit too slow for this deadline: then it is infeasible, and still early)
    assert hurried.exit_id == first
    assert hurried.reason.startswith(("deadline", "infeasible")), hurried.reason
    # A missing exit model is a configuration error naming the parameter.
    params.policy.exit_model = str(tmp_path / "absent.json")
    with pytest.raises(ConfigError, match=r"policy\.exit_model"):
        engine.reconfigure(params)
