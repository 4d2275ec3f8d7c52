"""mess_profile and mess_configure end to end, and their answers to bad inputs."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from mess_ros.common.exits import FINAL_EXIT
from mess_ros.common.latency_table import LatencyTable
from mess_ros.config import parameter_file
from mess_ros.deploy.cli import (
    EXIT_UNREACHABLE,
    EXIT_VERIFICATION_FAILED,
    configure_main,
    profile_main,
)
from mess_ros.deploy.errors import DeployError, InputMismatchError
from mess_ros.deploy.export import configuration_from_parameters
from mess_ros.deploy.inputs import load_inputs
from mess_ros.deploy.profile import parse_hw
from mess_ros.model import load_checkpoint, save_checkpoint
from mess_ros.runtime.engine import SegmentationEngine
from tests.deploy.conftest import TinyRun

GRIDS = ["--pixel-thresholds", "0.3,0.5,0.7,0.9", "--image-thresholds", "0.2,0.5,0.8"]
LENIENT = ["--latency-tolerance", "100"]


def configure(run: TinyRun, out: Path, *extra: str) -> int:
    return configure_main(
        [
            "--run",
            str(run.root),
            "--latency-table",
            str(run.table_path),
            "--robot",
            "tiny",
            "--out-dir",
            str(out),
            "--no-progress",
            *GRIDS,
            *extra,
        ]
    )


def test_profile_writes_a_table_of_the_checkpoint(tiny_run: TinyRun, tmp_path: Path) -> None:
    out = tmp_path / "table.json"
    argv = ["--model", str(tiny_run.checkpoint_path), "--input-size", "32x64"]
    argv += ["--warmup", "1", "--repeats", "2", "--out", str(out), "--no-progress"]
    assert profile_main(argv) == 0
    table = LatencyTable.load(out)
    assert table.model_fingerprint == tiny_run.checkpoint.fingerprint
    assert table.input_hw == (32, 64)
    assert table.points == tiny_run.checkpoint.model.block_points
    assert set(table.heads) == set(tiny_run.checkpoint.model.exit_ids)
    assert table.notes["cpu_threads"] == torch.get_num_threads()


def test_profile_refuses_a_bad_size(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert profile_main(["--input-size", "32by64", "--out", str(tmp_path / "t.json")]) == 1
    assert "HEIGHTxWIDTH" in capsys.readouterr().err
    with pytest.raises(DeployError):
        parse_hw("0x5")


def test_configure_writes_a_robot_that_the_engine_runs(
    tiny_run: TinyRun,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "robots"
    budget = tiny_run.table.path_ms([], FINAL_EXIT)
    # The latency check is at the mercy of a shared CPU; its failure path is tested apart.
    rc = configure(tiny_run, out, "--budget-ms", f"{budget:.6f}", "--verify", *LENIENT)
    captured = capsys.readouterr()
    printed = captured.out
    assert rc == 0, printed + captured.err
    assert "configurations scored per second" in printed
    # 12 calibration images: too few for thresholds to mean much, and the tool says so.
    assert "warning: the search scores only" in captured.err
    summary = json.loads((out / "tiny_search.json").read_text())
    verification = summary["verification"]
    held_out = summary["held_out"]["images"]
    assert verification["held_out"] is True
    assert verification["images"] == len(held_out) < tiny_run.cache.num_images
    assert summary["fit_images"] + len(held_out) == tiny_run.cache.num_images
    assert verification["miou_matches"] is True
    assert verification["decisions_matching"] == len(held_out)
    assert len(verification["pass_mean_ms"]) == 3
    assert "held-out calibration images the search did not see" in printed
    chosen = summary["chosen"]
    assert chosen["mean_ms"] <= budget
    assert chosen["miou"] >= summary["baseline"]["miou"]
    for name in ("tiny.yaml", "tiny.pt", "tiny.latency.json", "tiny_pareto.png"):
        assert (out / name).is_file(), name
    assert (out / "tiny_pareto.md").read_text().count("\n") == len(summary["front"]) + 2

    # The parameter file names its files relative to itself and works from anywhere.
    text = (out / "tiny.yaml").read_text()
    assert 'model_path: "tiny.pt"' in text and 'latency_table: "tiny.latency.json"' in text
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "tiny.pt").write_bytes(b"a stray file that must not be loaded")
    monkeypatch.chdir(elsewhere)
    params = parameter_file.read(out / "tiny.yaml")
    config = configuration_from_parameters(params)
    assert list(config.exits) == chosen["exits"]
    assert load_checkpoint(out / "tiny.pt").model.exit_ids == [*config.exits, FINAL_EXIT]
    engine = SegmentationEngine(params)
    assert engine.checkpoint.path == (out / "tiny.pt").resolve()
    assert engine.active_exits == (*config.exits, FINAL_EXIT)
    assert (out / "tiny.yaml").read_text().startswith("# mess_ros parameters for robot 'tiny'")


def test_models_elsewhere_are_named_relative_to_the_parameter_file(
    tiny_run: TinyRun, tmp_path: Path
) -> None:
    out, models = tmp_path / "config" / "robots", tmp_path / "models"
    budget = tiny_run.table.path_ms([], FINAL_EXIT)
    argv = ["--budget-ms", f"{budget:.6f}", "--model-dir", str(models)]
    assert configure(tiny_run, out, *argv, "--cameras", "front,left,right") == 0
    text = (out / "tiny.yaml").read_text()
    assert 'model_path: "../../models/tiny.pt"' in text
    params = parameter_file.read(out / "tiny.yaml")
    assert params.engine.model_path == str((models / "tiny.pt").resolve())
    assert params.cameras.names == ["front", "left", "right"]


def test_failed_verification_writes_nothing(
    tiny_run: TinyRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "robots"
    budget = tiny_run.table.path_ms([], FINAL_EXIT)
    strict = ["--latency-tolerance", "1e-9", "--verify-passes", "1"]
    rc = configure(tiny_run, out, "--budget-ms", f"{budget:.6f}", "--verify", *strict)
    captured = capsys.readouterr()
    assert rc == EXIT_VERIFICATION_FAILED
    assert "[MISMATCH]" in captured.out
    assert "nothing was written" in captured.err
    assert not out.exists() or not any(out.iterdir())


def test_unreachable_budget_reports_the_fastest_configuration(
    tiny_run: TinyRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "robots"
    assert configure(tiny_run, out, "--budget-ms", "0.001") == EXIT_UNREACHABLE
    err = capsys.readouterr().err
    assert "no configuration meets the mean latency budget of 0.001 ms" in err
    assert "the fastest reachable one takes" in err
    assert not (out / "tiny.yaml").exists()
    assert (out / "tiny_pareto.png").is_file()


def copy_table(run: TinyRun, path: Path, **changes: object) -> Path:
    table = dataclasses.replace(run.table, **changes)  # type: ignore[arg-type]
    table.save(path)
    return path


def test_table_of_another_model_is_refused(tiny_run: TinyRun, tmp_path: Path) -> None:
    path = copy_table(tiny_run, tmp_path / "other.json", model_fingerprint="ffffffffffffffff")
    with pytest.raises(InputMismatchError) as info:
        load_inputs(tiny_run.checkpoint_path, tiny_run.cache_path, path)
    message = str(info.value)
    assert str(path) in message and str(tiny_run.checkpoint_path) in message
    assert "ffffffffffffffff" in message and tiny_run.checkpoint.fingerprint in message
    # Same architecture, other weights: accepted only when asked for.
    load_inputs(tiny_run.checkpoint_path, tiny_run.cache_path, path, allow_other_weights=True)


def test_table_of_another_input_size_is_refused(tiny_run: TinyRun, tmp_path: Path) -> None:
    path = copy_table(tiny_run, tmp_path / "big.json", input_hw=(64, 128))
    with pytest.raises(InputMismatchError, match=r"64x128.*32x64") as info:
        load_inputs(tiny_run.checkpoint_path, tiny_run.cache_path, path)
    assert str(path) in str(info.value) and str(tiny_run.cache_path) in str(info.value)


def test_table_lacking_an_exit_is_refused(tiny_run: TinyRun, tmp_path: Path) -> None:
    gone = tiny_run.checkpoint.model.exit_ids[0]
    heads = {k: v for k, v in tiny_run.table.heads.items() if k != gone}
    outputs = {k: v for k, v in tiny_run.table.outputs.items() if k != gone}
    path = copy_table(tiny_run, tmp_path / "partial.json", heads=heads, outputs=outputs)
    with pytest.raises(InputMismatchError, match=f"no entry for exit.*{gone}"):
        load_inputs(tiny_run.checkpoint_path, tiny_run.cache_path, path)


def test_cache_of_another_checkpoint_is_refused(tiny_run: TinyRun, tmp_path: Path) -> None:
    model = copy.deepcopy(tiny_run.checkpoint.model)
    with torch.no_grad():
        next(model.final_parameters()).add_(1.0)
    other = tmp_path / "retrained.pt"
    save_checkpoint(other, model, tiny_run.checkpoint.labels, {})
    with pytest.raises(InputMismatchError) as info:
        load_inputs(other, tiny_run.cache_path, tiny_run.table_path, allow_other_weights=True)
    message = str(info.value)
    assert str(tiny_run.cache_path) in message and str(other) in message
    assert tiny_run.checkpoint.fingerprint in message


def test_missing_inputs_name_the_file(
    tiny_run: TinyRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere.json"
    rc = configure_main(
        [
            *("--run", str(tiny_run.root), "--latency-table", str(missing), "--budget-ms", "5"),
            *("--robot", "r", "--out-dir", str(tmp_path)),
        ]
    )
    assert rc == 1
    assert f"latency table '{missing}' does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty_run"
    empty.mkdir()
    shutil.copy(tiny_run.table_path, empty / "table.json")
    rc = configure_main(
        [
            *("--run", str(empty), "--latency-table", str(empty / "table.json")),
            *("--min-miou", "0.1", "--robot", "r", "--out-dir", str(tmp_path)),
        ]
    )
    assert rc == 1
    assert f"checkpoint '{empty / 'checkpoint.pt'}' does not exist" in capsys.readouterr().err


def test_conflicting_arguments_are_refused(
    tiny_run: TinyRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--latency-table", str(tiny_run.table_path), "--budget-ms", "5", "--out-dir", "x"]
    both = ["--run", str(tiny_run.root), "--model", str(tiny_run.checkpoint_path)]
    assert configure_main([*base, *both, "--robot", "r"]) == 1
    assert "either --run or --model" in capsys.readouterr().err
    assert configure_main([*base, "--run", str(tiny_run.root), "--robot", "a/b"]) == 1
    assert "robot name 'a/b'" in capsys.readouterr().err
    assert configure_main([*base, "--model", str(tiny_run.checkpoint_path), "--robot", "r"]) == 1
    assert "--cache" in capsys.readouterr().err


def test_a_robot_profiled_on_onnxruntime_runs_and_verifies_on_it(
    tiny_run: TinyRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table_path = tmp_path / "ort.json"
    argv = ["--model", str(tiny_run.checkpoint_path), "--input-size", "32x64", "--warmup", "1"]
    argv += ["--repeats", "2", "--backend", "onnxruntime", "--out", str(table_path)]
    assert profile_main([*argv, "--no-progress"]) == 0
    assert LatencyTable.load(table_path).backend == "onnxruntime"
    assert "onnxruntime), input 32x64" in capsys.readouterr().out
    run = dataclasses.replace(tiny_run, table_path=table_path)
    out = tmp_path / "robots"
    budget = tiny_run.table.path_ms([], FINAL_EXIT)
    rc = configure(run, out, "--budget-ms", f"{budget:.6f}", "--verify", *LENIENT)
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "backend onnxruntime; must agree within 0.05 points" in printed
    assert 'backend: "onnxruntime"' in (out / "tiny.yaml").read_text()
    verification = json.loads((out / "tiny_search.json").read_text())["verification"]
    assert verification["backend"] == "onnxruntime" and verification["miou_matches"] is True
    # an estimate prices no runtime: asking for one is refused
    estimate = [
        "--estimate",
        "--device-name",
        "x",
        "--gmacs-per-s",
        "1",
        "--backend",
        "onnxruntime",
    ]
    assert (
        profile_main([*estimate, "--input-size", "32x64", "--out", str(tmp_path / "e.json")]) == 1
    )
    assert "--backend apply to measuring" in capsys.readouterr().err
