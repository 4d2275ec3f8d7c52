"""Every console script: a start-up fault is one line naming the file, a bug one line too."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from mess_ros.console import console_main, debug_requested
from mess_ros.errors import MessError

BIN = Path(sys.executable).parent
NOT_TEXT = bytes(range(128, 256)) * 8


@console_main("broken_tool")
def broken(argv: Sequence[str] | None = None) -> int:
    raise ZeroDivisionError("division by zero\nin a very\n   long message")


@console_main("careful_tool")
def careful(argv: Sequence[str] | None = None) -> int:
    raise MessError("not reached: tools catch their own errors")


def test_an_unexpected_error_is_one_line_and_a_hint(capsys: pytest.CaptureFixture[str]) -> None:
    assert broken([]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "broken_tool: error: unexpected ZeroDivisionError: division by zero in a very long "
        "message (a bug in mess_ros; run again with --debug for the traceback)"
    ]
    assert careful([]) == 1
    assert capsys.readouterr().err.startswith("careful_tool: error: unexpected MessError")


def test_debug_shows_the_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert broken(["--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ZeroDivisionError" in err
    assert not debug_requested(["x", "--ros-args", "--debug"])
    monkeypatch.setenv("MESS_ROS_DEBUG", "1")
    assert debug_requested([])


def run(args: Sequence[str], tmp_path: Path, **env: str) -> tuple[int, list[str]]:
    process = subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        cwd=tmp_path,
        env={**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in process.stderr.splitlines() if line.strip()]
    return process.returncode, lines


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["mess_train", "--config", "bad", "--out", "run"], "config file bad is not UTF-8 text"),
        (["mess_profile", "--model", "bad", "--input-size", "32x64", "--out", "t.json"], "bad"),
        (
            [
                *("mess_configure", "--model", "bad", "--cache", "bad", "--latency-table", "bad"),
                *("--budget-ms", "5", "--robot", "r"),
            ],
            "bad",
        ),
        (["mess_evaluate", "bad", "--out", "report"], "bad"),
        (["mess_evaluate", "bad", "--params-file", "bad", "--out", "report"], "not UTF-8 text"),
        (["mess_bag", "--dataset", "folder", "--path", "bad", "--out", "b.mcap"], "bad"),
        (["synthetic_camera", "--ros-args", "--params-file", "bad"], "is not UTF-8 text"),
    ],
)
def test_console_scripts_fail_in_one_line(tmp_path: Path, args: list[str], expected: str) -> None:
    (tmp_path / "bad").write_bytes(NOT_TEXT)
    status, lines = run(args, tmp_path)
    assert status != 0
    assert len(lines) == 1, lines
    assert expected in lines[0] and "Traceback" not in lines[0]


def test_the_demo_refuses_a_bad_domain_id(tmp_path: Path) -> None:
    status, lines = run(["mess_demo", "--duration", "1"], tmp_path, ROS_DOMAIN_ID="lab")
    assert status == 2
    assert lines[-1] == (
        "mess_demo: error: ROS_DOMAIN_ID='lab' is not a ROS domain id; expected an integer 0..232"
    )
