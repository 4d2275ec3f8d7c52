"""mess_train: user mistakes end with exit code 2 and one clear line, never a traceback."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from mess_ros.data.datasets import SyntheticDataset
from mess_ros.data.folder_writer import write_folder_dataset
from mess_ros.model.checkpoint import load_checkpoint
from mess_ros.train.cli import main
from mess_ros.train.trainer import train
from tests.train.helpers import STAGE1_STEPS, Runs, tiny_config


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main([*args, "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_clean_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    assert err.startswith("mess_train: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


@pytest.mark.parametrize("kind", ["folder", "cityscapes"])
def test_missing_dataset_folder(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no_such_dataset"
    config = tmp_path / "data.yaml"
    config.write_text(f"dataset:\n  kind: {kind}\n  path: {missing}\n  labels: ''\n")
    out = tmp_path / "run"
    code, _, err = run_cli(["--preset", "tiny", "--config", str(config), "--out", str(out)], capsys)
    assert_clean_error(code, err, "dataset:", str(missing), "does not exist")
    assert not out.exists()  # nothing written for a run that could not start


def test_folder_with_mismatched_pairs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "pairs"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "images" / "a.png").write_bytes(b"")
    (root / "masks" / "b.png").write_bytes(b"")
    config = tmp_path / "data.yaml"
    config.write_text(f"val_dataset:\n  kind: folder\n  path: {root}\n  labels: synthetic\n")
    code, _, err = run_cli(
        ["--preset", "tiny", "--config", str(config), "--out", str(tmp_path / "r")], capsys
    )
    assert_clean_error(code, err, "val_dataset:", "a.png", "b.png")


def test_bad_config_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "typo.yaml"
    config.write_text("stage1_step: 5\n")
    code, _, err = run_cli(["--config", str(config), "--out", str(tmp_path / "r")], capsys)
    assert_clean_error(code, err, "typo.yaml", "unknown key 'stage1_step'", "stage1_steps")


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(
        ["--config", str(tmp_path / "absent.yaml"), "--out", str(tmp_path / "r")], capsys
    )
    assert_clean_error(code, err, "absent.yaml")


def test_bad_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "r")
    code, _, err = run_cli(["--preset", "tiny", "--out", out, "--batch-size", "0"], capsys)
    assert_clean_error(code, err, "command line", "'batch_size' is 0")
    code, _, err = run_cli(["--preset", "tiny", "--out", out, "--device", "tpu"], capsys)
    assert_clean_error(code, err, "device 'tpu' is not valid")


def test_resume_needs_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["--out", str(tmp_path / "nothing"), "--resume"], capsys)
    assert_clean_error(code, err, "cannot resume", "config.yaml")


def test_resume_takes_the_runs_own_config(runs: Runs, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["--out", str(runs.straight), "--resume", "--preset", "tiny"], capsys)
    assert_clean_error(code, err, "do not pass --preset with it")
    code, _, err = run_cli(["--out", str(runs.straight), "--resume", "--seed", "3"], capsys)
    assert_clean_error(code, err, "different settings (seed)")


def test_existing_run_without_resume(runs: Runs, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["--preset", "tiny", "--out", str(runs.straight)], capsys)
    assert_clean_error(code, err, "already holds a run", "--resume")


def test_resuming_a_finished_run_rewrites_its_results(
    runs: Runs, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(["--out", str(runs.paused_mid_stage), "--resume"], capsys)
    assert code == 0
    assert "final" in out and f"run written to {runs.paused_mid_stage}" in out


def test_stage2_settings_change_only_before_stage2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tiny_config()
    in_stage1, in_stage2 = tmp_path / "in_stage1", tmp_path / "in_stage2"
    assert not train(config, in_stage1, progress=False, max_steps=STAGE1_STEPS).finished
    assert not train(config, in_stage2, progress=False, max_steps=STAGE1_STEPS + 2).finished
    for run_dir in (in_stage1, in_stage2):
        text = (run_dir / "config.yaml").read_text(encoding="utf-8")
        tuned = text.replace(f"stage2_lr: {config.stage2_lr}", "stage2_lr: 0.02")
        assert tuned != text
        (run_dir / "config.yaml").write_text(tuned, encoding="utf-8")
    code, _, _ = run_cli(["--out", str(in_stage1), "--resume", "--no-progress"], capsys)
    assert code == 0
    assert load_checkpoint(in_stage1 / "checkpoint.pt").train_config["stage2_lr"] == 0.02
    code, _, err = run_cli(["--out", str(in_stage2), "--resume", "--no-progress"], capsys)
    assert_clean_error(code, err, "different settings (stage2_lr)")


def test_every_bad_pair_is_listed_before_training_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "data"
    folder = write_folder_dataset(SyntheticDataset(8, 32, 64), root, "train")
    write_folder_dataset(SyntheticDataset(2, 32, 64, seed=1), root, "val")
    bad = ["train_00001", "train_00002", "train_00005", "train_00007"]
    for stem in bad:
        cv2.imwrite(str(folder / "masks" / f"{stem}.png"), np.zeros((20, 64), dtype=np.uint8))
    config = tmp_path / "data.yaml"
    config.write_text(
        f"dataset: {{kind: folder, path: {root}, split: train}}\n"
        f"val_dataset: {{kind: folder, path: {root}, split: val}}\n"
    )
    out = tmp_path / "run"
    code, _, err = run_cli(["--preset", "tiny", "--config", str(config), "--out", str(out)], capsys)
    assert_clean_error(code, err, "dataset:", "4 of 8 samples cannot be used", *bad)
    assert not (out / "train_log.csv").exists()  # not one step ran


def test_resume_says_how_many_steps_are_repeated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "tiny.yaml"
    tiny_config().to_yaml(config)
    out = tmp_path / "run"
    code, _, _ = run_cli(["--config", str(config), "--out", str(out), "--max-steps", "4"], capsys)
    assert code == 0
    # As if interrupted two steps after the last save: those steps are in the log only.
    log = out / "train_log.csv"
    rows = log.read_text().splitlines()
    rows += [rows[-1].replace("stage1,4,", f"stage1,{step},") for step in (5, 6)]
    log.write_text("\n".join(rows) + "\n")
    code, printed, _ = run_cli(["--out", str(out), "--resume", "--max-steps", "1"], capsys)
    assert code == 0
    assert "resuming stage1 at step 4 of 10, the last saved step" in printed
    assert "2 step(s) that ran after it are repeated" in printed
