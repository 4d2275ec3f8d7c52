"""The README's custom-data section, taken literally: its keys, its configs, its commands.

The walkthrough block is run verbatim with bash in an empty directory (the
package's environment first on PATH), from writing a small folder dataset to
a node serving the configured robot; the node is stopped with SIGINT once it
reports ready. The key tables must list every training and dataset key, and
the Cityscapes config must load.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mess_ros.data.datasets import DatasetSpec
from mess_ros.ros.processes import ros_environment
from mess_ros.train.config import TrainConfig, load_config, preset
from tests.ros.conftest import next_domain_id

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = "<!-- custom-data walkthrough (run verbatim by tests/test_readme_custom_data.py) -->"
READY_TIMEOUT_S = 900.0
STOP_TIMEOUT_S = 60.0


def section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("## Training on your own data")
    return text[start : text.index("\n## ", start + 1)]


def code_block(text: str, after: str, language: str) -> str:
    """The first fenced block of ``language`` after the line ``after``."""
    rest = text[text.index(after) :]
    match = re.search(rf"```{language}\n(.*?)```", rest, flags=re.DOTALL)
    assert match is not None, f"no {language} block after {after!r}"
    return match.group(1)


def table_keys(text: str, heading: str) -> set[str]:
    """Backquoted names in the first column of the table under ``heading``."""
    table = text[text.index(heading) :].split("\n\n")[1]
    keys: set[str] = set()
    for row in table.splitlines()[2:]:
        first = row.split("|")[1]
        keys |= set(re.findall(r"`([a-z_0-9]+)`", first))
    return keys


def test_every_training_and_dataset_key_is_documented() -> None:
    text = section()
    assert table_keys(text, "**Keys**") == {f.name for f in dataclasses.fields(TrainConfig)}
    assert table_keys(text, "**Dataset keys**") == {f.name for f in dataclasses.fields(DatasetSpec)}


def test_the_documented_configs_load(tmp_path: Path) -> None:
    text = section()
    cityscapes = tmp_path / "cityscapes.yaml"
    cityscapes.write_text(code_block(text, "**Cityscapes.**", "yaml"))
    config = load_config(cityscapes, base=preset("default"))
    assert config.dataset.kind == "cityscapes" and config.val_dataset.split == "val"
    labels = yaml.safe_load(code_block(text, "**The folder layout.**", "json"))
    assert labels["class_names"] and len(labels["colors"]) == len(labels["class_names"])


@pytest.mark.slow
@pytest.mark.ros
def test_the_walkthrough_runs_verbatim(tmp_path: Path) -> None:
    commands = code_block(section(), MARKER, "bash")
    env = ros_environment(next_domain_id())
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    log_path = tmp_path / "walkthrough.log"
    work = tmp_path / "work"
    work.mkdir()
    with log_path.open("w", encoding="utf-8") as log:
        process = subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", commands],
            cwd=work,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while "ready:" not in log_path.read_text() and process.poll() is None:
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.5)
            output = log_path.read_text()
            assert process.poll() is None, output  # every step before the node succeeded
            # Ctrl-C, as a user at the terminal would: the node stops, the block ends cleanly.
            os.killpg(process.pid, signal.SIGINT)
            status = process.wait(STOP_TIMEOUT_S)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    output = log_path.read_text()
    assert status == 0, output
    assert "Traceback" not in output
    assert "run written to runs/my_robot" in output
    assert "wrote my_robots/my_robot.yaml" in output
    assert (work / "my_robots" / "my_robot.pt").is_file()
