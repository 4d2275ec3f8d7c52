"""Accuracy predicted from the calibration cache equals running the network, exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mess_ros.common.exits import FINAL_EXIT
from mess_ros.common.metrics import confusion_matrix, mean_iou
from mess_ros.data.datasets import build_dataset
from mess_ros.data.transforms import normalize_image
from mess_ros.deploy.decisions import split_images
from mess_ros.deploy.export import apply_configuration, write_pruned_checkpoint
from mess_ros.deploy.inputs import build_problem
from mess_ros.deploy.problem import ExitConfiguration, confident_shares, evaluate, exit_decisions
from mess_ros.deploy.search import SearchSpace, search
from mess_ros.deploy.verify import (
    calibration_dataset,
    calibration_warnings,
    verify_configuration,
)
from mess_ros.model import MESSNet, confident_share, logits_to_mask
from tests.deploy.conftest import CALIBRATION, INPUT_HW, TinyRun
from tests.deploy.constructed import all_configurations

SPACE = SearchSpace(
    max_exits=3, pixel_thresholds=(0.3, 0.5, 0.7, 0.9), image_thresholds=(0.2, 0.5, 0.8)
)


def direct_evaluation(model: MESSNet, config: ExitConfiguration) -> tuple[float, list[int]]:
    """mIoU and exits taken when the network runs every calibration image under ``config``."""
    dataset = build_dataset(CALIBRATION)
    classes = model.spec.num_classes
    confusion = np.zeros((classes, classes), dtype=np.int64)
    taken_exits = []
    with torch.inference_mode():
        for index in range(len(dataset)):
            sample = dataset[index]
            logits = model(torch.from_numpy(normalize_image(sample.image, INPUT_HW))[None])
            taken = len(config.exits)
            for position, exit_id in enumerate(config.exits):
                share = float(confident_share(logits[exit_id], config.pixel_threshold)[0])
                if share >= config.image_thresholds[position]:
                    taken = position
                    break
            exit_id = config.active_exits[taken]
            mask = logits_to_mask(logits[exit_id], sample.mask.shape)[0].numpy()
            confusion += confusion_matrix(sample.mask, mask, classes)
            taken_exits.append(taken)
    return mean_iou(confusion), taken_exits


def test_cached_accuracy_equals_running_the_network(tiny_run: TinyRun) -> None:
    model = tiny_run.checkpoint.model
    problem = build_problem(model, tiny_run.cache, tiny_run.table)
    front = [s.config for s in search(problem, SPACE).front]
    rng = np.random.default_rng(0)
    every = all_configurations(problem, SPACE)
    sampled = [every[i] for i in rng.choice(len(every), size=6, replace=False)]
    mixed = 0
    for config in [*front, *sampled]:
        miou, taken = direct_evaluation(model, config)
        assert evaluate(problem, config).miou == miou, config
        assert exit_decisions(problem, config).tolist() == taken, config
        mixed += len(set(taken)) > 1
    assert mixed >= 2  # the check covers images leaving at different exits


def test_latency_prices_match_the_table(tiny_run: TinyRun) -> None:
    problem = build_problem(tiny_run.checkpoint.model, tiny_run.cache, tiny_run.table)
    exits = [problem.candidates[0].exit_id, problem.candidates[-1].exit_id]
    for taken in [*exits, FINAL_EXIT]:
        assert problem.path_ms(exits, taken) == pytest.approx(tiny_run.table.path_ms(exits, taken))
        assert problem.path_ms(exits, taken, "p95") == pytest.approx(
            tiny_run.table.path_ms(exits, taken, "p90")
        )


def test_share_ties_are_decided_as_the_engine_does() -> None:
    # 7 of 10 pixels confident: the float32 share is just below 0.7, so the engine's
    # `share >= 0.7` is false; the search must not promise that exit.
    logits = torch.zeros(1, 2, 2, 5)
    logits[0, 0].view(-1)[:7] = 10.0
    engine_share = float(confident_share(logits, 0.9)[0])
    predicted = confident_shares(np.array([7]), np.array([10]))[0]
    assert predicted == engine_share
    assert (predicted >= 0.7) == (engine_share >= 0.7)
    assert (predicted >= 0.6) == (engine_share >= 0.6)


def test_engine_verification_matches_the_prediction(tiny_run: TinyRun, tmp_path: Path) -> None:
    problem = build_problem(tiny_run.checkpoint.model, tiny_run.cache, tiny_run.table)
    result = search(problem, SPACE)
    chosen = next(s for s in reversed(result.front) if s.config.exits)
    pruned_path = tmp_path / "pruned.pt"
    pruned = write_pruned_checkpoint(tiny_run.checkpoint_path, chosen.config, pruned_path)
    assert pruned.model.exit_ids == [*chosen.config.exits, FINAL_EXIT]
    params = apply_configuration(chosen.config, tiny_run.table, str(pruned_path))
    dataset = calibration_dataset(tiny_run.cache.dataset, str(tiny_run.cache_path))
    report = verify_configuration(params, pruned, tiny_run.table, problem, chosen, dataset)
    assert report.images == problem.num_images
    assert report.measured_miou == chosen.miou
    assert report.decisions_matching == problem.num_images
    assert report.miou_matches and report.decisions_match
    assert report.measured_mean_ms > 0.0
    assert "mIoU predicted" in report.summary()


def test_calibration_warnings_name_the_counts() -> None:
    assert calibration_warnings(400, 100) == []
    (small,) = calibration_warnings(12, 0)
    assert "only 12 calibration images" in small and "8.3 %" in small
    assert "only 5 held-out images" in calibration_warnings(400, 5)[0]


def test_verification_on_images_the_search_did_not_see(tiny_run: TinyRun, tmp_path: Path) -> None:
    calibration = build_problem(tiny_run.checkpoint.model, tiny_run.cache, tiny_run.table)
    split = split_images(tiny_run.cache.difficulty, 0.25)
    held = [int(i) for i in split.held_out]
    result = search(calibration.subset(split.fit), SPACE)
    chosen = next(s for s in reversed(result.front) if s.config.exits)
    pruned_path = tmp_path / "pruned.pt"
    pruned = write_pruned_checkpoint(tiny_run.checkpoint_path, chosen.config, pruned_path)
    params = apply_configuration(chosen.config, tiny_run.table, str(pruned_path))
    held_problem = calibration.subset(held)
    predicted = evaluate(held_problem, chosen.config)
    dataset = calibration_dataset(tiny_run.cache.dataset, "cache")
    report = verify_configuration(
        params, pruned, tiny_run.table, held_problem, predicted, dataset, images=held, search=chosen
    )
    assert report.images == len(held) and report.held_out
    assert report.miou_matches and report.decisions_match
    assert report.generalisation_gap == pytest.approx(chosen.miou - predicted.miou)
    assert len(report.pass_mean_ms) == 3
    assert report.measured_mean_ms == sorted(report.pass_mean_ms)[1]
    text = report.summary()
    assert "held-out calibration images the search did not see" in text
    assert "median of 3 pass means" in text and "tolerance ±25%" in text
