"""The batching measurement: what a batch computes, and how the decision reads the figures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.batching import WORTHWHILE, ExitPath, Setting, decide, measure_paths
from tests.runtime.conftest import ALL_EXITS, INPUT_HW, tiny_model


def test_a_batch_gives_each_frame_the_logits_it_gets_alone() -> None:
    model = tiny_model()
    frames = torch.randn(3, 3, *INPUT_HW)
    for exit_id in ALL_EXITS:
        path = ExitPath(model, exit_id)
        with torch.inference_mode():
            batched = path(frames)
            alone = torch.cat([path(frames[i : i + 1]) for i in range(3)])
        torch.testing.assert_close(batched, alone, rtol=1e-4, atol=1e-5)


def _setting(threads: int, cpu_ms: dict[int, float]) -> Setting:
    setting = Setting("torch", threads)
    for batch, ms in cpu_ms.items():
        setting.record("final", batch, wall_ms=ms * batch, cpu_ms=ms * batch)
    return setting


def test_each_batch_size_is_judged_at_its_cheapest_thread_count() -> None:
    # One thread is the cheapest for single frames (what separate nodes run at), two threads
    # for batches: the saving compares those two, not two settings at the same thread count.
    settings = [_setting(1, {1: 10.0, 3: 9.5}), _setting(2, {1: 14.0, 3: 8.0})]
    decision = decide(settings, ["final"], 3)["torch"]
    final = decision["per_exit"]["final"]
    assert (final["threads_one"], final["threads_batched"]) == (1, 2)
    assert final["saving"] == pytest.approx(0.2)
    assert decision["pays"] is (WORTHWHILE <= 0.2)


def test_a_saving_below_the_threshold_does_not_pay() -> None:
    settings = [_setting(1, {1: 10.0, 3: 9.6})]
    decision = decide(settings, ["final"], 3)["torch"]
    assert decision["mean_saving"] == pytest.approx(0.04)
    assert decision["pays"] is False


def test_measure_paths_times_every_exit_at_both_batch_sizes() -> None:
    settings = measure_paths(
        tiny_model(), list(ALL_EXITS), torch.device("cpu"), INPUT_HW, 2, [1], 2, progress=False
    )
    assert {s.backend for s in settings} >= {"torch"}
    for setting in settings:
        for exit_id in ALL_EXITS:
            for batch in (1, 2):
                assert setting.wall_per_frame(exit_id, batch) > 0
                assert np.isfinite(setting.cpu_per_frame(exit_id, batch))
