"""Every benchmark script imports and answers ``--help``, as a module and as a file.

The benchmarks themselves take minutes and print figures, never run here;
this keeps their imports and argument parsers from rotting between runs.
"""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(path.stem for path in (REPO / "bench").glob("*.py") if path.stem[0] != "_")
# Scripts that talk to the node over DDS.
ROS_SCRIPTS = frozenset({"deadline_e2e", "multicamera", "node_latency"})


def test_the_scripts_are_found() -> None:
    assert {"cpu_hog", "exit_accuracy", "node_latency", "search_speed"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_prints_its_help(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if name in ROS_SCRIPTS:
        pytest.importorskip("rclpy")
    monkeypatch.setattr(sys, "argv", [f"bench/{name}.py", "--help"])
    # Run as a fresh __main__ even where another test or script imported the module already.
    monkeypatch.delitem(sys.modules, f"bench.{name}", raising=False)
    with pytest.raises(SystemExit) as stop:
        runpy.run_module(f"bench.{name}", run_name="__main__", alter_sys=True)
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:") and "--help" in out


@pytest.mark.slow
def test_script_runs_as_a_file_from_anywhere(tmp_path: Path) -> None:
    """``python bench/x.py`` from another directory finds the ``bench`` package."""
    script = REPO / "bench" / "engine_overhead.py"
    done = subprocess.run(
        [sys.executable, str(script), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: bench/engine_overhead.py")
