"""``mess_bag`` and ``mess_evaluate``: end to end, and clear one-line errors with status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from mess_ros.config import SegmentationConfig, parameter_file
from mess_ros.data.sample import Sample
from mess_ros.eval.bag_cli import main as bag_main
from mess_ros.eval.bag_reader import load_frames
from mess_ros.eval.bag_writer import write_bag
from mess_ros.eval.cli import evaluate_command
from mess_ros.eval.cli_common import EXIT_BAD_INPUT, EXIT_OK

SMALL = ["--height", "48", "--width", "64", "--quiet"]


def params_file(tmp_path: Path, config: SegmentationConfig) -> Path:
    path = tmp_path / "robot.yaml"
    parameter_file.write(config, path)
    return path


def test_bag_then_evaluate(
    tmp_path: Path, base_config: SegmentationConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    bag = tmp_path / "demo.db3"
    status = bag_main(
        ["--num-images", "5", "--rate", "10", "--format", "png", "--out", str(bag), *SMALL]
    )
    assert status == EXIT_OK
    assert "wrote 5 frames (0.5 s at 10 Hz)" in capsys.readouterr().out
    frames, _, topics = load_frames(bag)
    assert len(frames) == 5 and topics.camera_type.endswith("CompressedImage")
    model = base_config.engine.model_path
    base_config.engine.model_path = ""
    out = tmp_path / "report"
    status = evaluate_command(
        [
            str(bag),
            "--model",
            model,
            "--params-file",
            str(params_file(tmp_path, base_config)),
            "--compare",
            "final",
            "hybrid@40",
            "--realtime",
            "--quiet",
            "--out",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert status == EXIT_OK
    assert "| final |" in printed and "| hybrid@40 |" in printed
    data = json.loads((out / "report.json").read_text())
    assert data["mode"] == "offline-realtime"
    assert [run["summary"]["frames"] for run in data["runs"]] == [5, 5]
    assert data["runs"][1]["parameters"]["engine.model_path"] == str(Path(model).resolve())
    assert (out / "report.md").is_file() and (out / "latency.png").is_file()


def test_folder_dataset_bag(tmp_path: Path) -> None:
    for sub in ("images", "masks"):
        (tmp_path / "data" / sub).mkdir(parents=True)
    for name in ("a", "b"):
        cv2.imwrite(
            str(tmp_path / "data" / "images" / f"{name}.png"), np.zeros((8, 12, 3), np.uint8)
        )
        cv2.imwrite(str(tmp_path / "data" / "masks" / f"{name}.png"), np.ones((8, 12), np.uint8))
    out = tmp_path / "labelled"
    args = ["--dataset", "folder", "--path", str(tmp_path / "data"), "--labels", "synthetic"]
    assert bag_main([*args, "--out", str(out), "--quiet"]) == EXIT_OK
    frames, _, _ = load_frames(out)
    assert [int(f.gt.max()) for f in frames if f.gt is not None] == [1, 1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--num-images", "2", "--rate", "0"], "rate must be a positive number"),
        (["--dataset", "folder"], "needs path set to its root folder"),
        (
            ["--dataset", "cityscapes", "--path", "/nonexistent/cs"],
            "/nonexistent/cs does not exist",
        ),
        (["--num-images", "2", "--difficulty", "extreme"], "extreme"),
        (["--format", "yuv"], "invalid choice: 'yuv'"),
    ],
)
def test_bag_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert bag_main([*argv, "--out", str(tmp_path / "x.mcap"), *SMALL]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "x.mcap").exists()


def test_help_returns_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert bag_main(["--help"]) == EXIT_OK
    assert evaluate_command(["--help"]) == EXIT_OK
    assert "--compare" in capsys.readouterr().out


def _truncated(tmp_path: Path, small_bag: Path) -> Path:
    path = tmp_path / "cut.mcap"
    path.write_bytes(small_bag.read_bytes()[:3000])
    return path


def _corrupt(tmp_path: Path, small_bag: Path) -> Path:
    path = tmp_path / "noise.db3"
    path.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 8)
    return path


@pytest.mark.parametrize(
    ("make_bag", "extra", "message"),
    [
        (lambda tmp, bag: tmp / "missing.mcap", [], r"missing.mcap does not exist"),
        (_truncated, [], r"cut.mcap"),
        (_corrupt, [], r"noise.db3"),
        (lambda tmp, bag: bag, ["--camera-topic", "/front"], "no camera topic '/front'"),
        (lambda tmp, bag: bag, ["--gt-topic", "/labels"], "no ground-truth topic '/labels'"),
        (lambda tmp, bag: bag, ["--compare", "turbo@5"], "unknown policy 'turbo'"),
        (lambda tmp, bag: bag, ["--max-frames", "0"], "--max-frames must be positive"),
        (lambda tmp, bag: bag, ["--live", "--realtime"], "a live replay is always in real time"),
    ],
)
def test_evaluate_bad_input(
    tmp_path: Path,
    small_bag: Path,
    checkpoint_path: Path,
    capsys: pytest.CaptureFixture[str],
    make_bag: object,
    extra: list[str],
    message: str,
) -> None:
    bag = make_bag(tmp_path, small_bag)  # type: ignore[operator]
    argv = [str(bag), "--model", str(checkpoint_path), "--out", str(tmp_path / "r"), "--quiet"]
    assert evaluate_command([*argv, *extra]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("mess_evaluate: error: ")
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "r" / "report.json").exists()


def test_live_without_the_ros_replay_says_where_it_lives(
    tmp_path: Path, small_bag: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [str(small_bag), "--live", "--out", str(tmp_path / "r"), "--quiet"]
    assert evaluate_command(argv) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "--live replays the bag through the node and needs ROS 2" in err
    assert "mess_ros.ros.evaluate" in err
    assert not (tmp_path / "r" / "report.json").exists()


def test_evaluate_missing_model_and_bad_params_file(
    tmp_path: Path, small_bag: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = ["--out", str(tmp_path / "r"), "--quiet"]
    assert evaluate_command([str(small_bag), "--model", str(tmp_path / "no.pt"), *out]) == 2
    assert "no.pt does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("/**:\n  ros__parameters:\n    policy:\n      name: warp\n")
    assert evaluate_command([str(small_bag), "--params-file", str(bad), *out]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "policy.name" in err


def test_foreign_ground_truth_is_warned_about_and_strict_fails(
    tmp_path: Path,
    samples: list[Sample],
    base_config: SegmentationConfig,
    capsys: pytest.CaptureFixture[str],
) -> None:
    changed = [
        Sample(
            s.image, np.where(np.arange(s.mask.shape[1]) < 2, 77, s.mask).astype(np.uint8), 0, ""
        )
        if i in (0, 3, 5)
        else s
        for i, s in enumerate(samples)
    ]
    bag = tmp_path / "foreign.mcap"
    write_bag(bag, changed)
    argv = [str(bag), "--params-file", str(params_file(tmp_path, base_config)), "--quiet"]
    assert evaluate_command([*argv, "--out", str(tmp_path / "lenient")]) == EXIT_OK
    err = capsys.readouterr().err
    assert "warning: ground truth: 3 of 8 frames have ground truth with class ids [77]" in err
    assert "3 of 8 frames" in (tmp_path / "lenient" / "report.md").read_text()
    status = evaluate_command([*argv, "--strict", "--out", str(tmp_path / "strict")])
    assert status == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "mess_evaluate: error: --strict: 3 frames have ground-truth class ids outside" in err
    assert (tmp_path / "strict" / "report.md").is_file()


def test_offline_evaluation_imports_nothing_of_ros() -> None:
    """The evaluation tools load where ROS is not installed: the live replay only for --live."""
    code = (
        "import sys\n"
        "import mess_ros.eval.bag_cli, mess_ros.eval.cli, mess_ros.eval.offline\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('rclpy', 'rosgraph_msgs'))\n"
        "assert not loaded and 'mess_ros.ros.live_replay' not in sys.modules, loaded\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
