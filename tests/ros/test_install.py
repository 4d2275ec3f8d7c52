"""An installed package (pip into a fresh prefix, as colcon does) runs its robots from anywhere.

The source is copied aside with a robot that ``mess_configure`` wrote into
``config/robots`` (parameter file, pruned checkpoint and latency table side
by side), installed with ``pip install --prefix``, and the node is started
from an unrelated directory holding stray files of the same names, which
must never be loaded.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mess_ros.common.exits import FINAL_EXIT
from mess_ros.deploy.cli import configure_main
from mess_ros.ros.processes import ManagedProcess
from tests.deploy.conftest import write_run
from tests.ros.conftest import REPO, next_domain_id, start_node

pytestmark = [pytest.mark.ros, pytest.mark.slow]

# What setup.py needs to build the package; everything else of a checkout stays behind.
SOURCE_ITEMS = ("setup.py", "setup.cfg", "package.xml", "resource", "mess_ros", "config", "launch")
READY_TIMEOUT_S = 120.0


def copy_source(target: Path) -> None:
    target.mkdir()
    for name in SOURCE_ITEMS:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target / name)
    # The bundled models (cpu_rover's and gpu_orin's checkpoints and tables live there).
    shutil.copytree(REPO / "models", target / "models")


def installed_env(prefix: Path) -> dict[str, str]:
    site = prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    return {"PYTHONPATH": str(site / "site-packages"), "AMENT_PREFIX_PATH": str(prefix)}


def wait_for(process: ManagedProcess, text: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in process.output():
            return True
        if not process.alive():
            return False
        time.sleep(0.2)
    return False


def test_installed_robots_run_from_another_directory(tmp_path: Path) -> None:
    source = tmp_path / "src"
    copy_source(source)
    run = write_run(tmp_path / "run", seed=0)
    robots = source / "config" / "robots"
    budget = run.table.path_ms([], FINAL_EXIT)
    argv = ["--run", str(run.root), "--latency-table", str(run.table_path), "--robot", "tinybot"]
    argv += ["--out-dir", str(robots), "--budget-ms", f"{budget:.6f}", "--no-progress"]
    assert configure_main(argv) == 0

    prefix = tmp_path / "prefix"
    pip = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    # --ignore-installed: never uninstall the package from the environment running the tests.
    pip += ["--no-deps", "--no-build-isolation", "--ignore-installed"]
    pip += ["--prefix", str(prefix), str(source)]
    subprocess.run(pip, check=True, cwd=tmp_path, capture_output=True, timeout=600)
    share = prefix / "share" / "mess_ros"
    for name in ("tinybot.yaml", "tinybot.pt", "tinybot.latency.json"):
        assert (share / "config" / "robots" / name).is_file(), name

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for stray in ("tinybot.pt", "tinybot.latency.json", "cpu_rover.pt", "cpu_rover.latency.json"):
        (elsewhere / stray).write_bytes(b"a stray file that must never be loaded")
    env = installed_env(prefix)

    # Every robot the package ships finds its files in the installed share directory.
    check = (
        "import pathlib, sys\n"
        "import mess_ros\n"
        "from mess_ros.config import parameter_file\n"
        "from mess_ros.runtime.engine import resolve_model_path, resolve_package_file\n"
        "assert pathlib.Path(mess_ros.__file__).is_relative_to(sys.argv[1]), mess_ros.__file__\n"
        "robots = pathlib.Path(sys.argv[1], 'share/mess_ros/config/robots')\n"
        "for path in sorted(robots.glob('*.yaml')):\n"
        "    engine = parameter_file.read(path).engine\n"
        "    print(resolve_model_path(engine.model_path))\n"
        "    print(resolve_package_file(engine.latency_table, 'engine.latency_table'))\n"
    )
    process = subprocess.run(
        [sys.executable, "-c", check, str(prefix)],
        cwd=elsewhere,
        env={**_base_env(), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == 0, process.stderr
    resolved = [Path(line) for line in process.stdout.split()]
    assert len(resolved) == 2 * len(list((share / "config" / "robots").glob("*.yaml"))) >= 6
    assert all(path.is_relative_to(share) and path.is_file() for path in resolved), resolved

    # The node, started from elsewhere on the installed robot file.
    robot = share / "config" / "robots" / "tinybot.yaml"
    node = start_node(robot, next_domain_id(), tmp_path / "node.log", cwd=elsewhere, extra_env=env)
    try:
        assert wait_for(node, "ready:", READY_TIMEOUT_S), node.output()
        assert node.stop(signal.SIGINT) == 0, node.output()
        assert "Traceback" not in node.output()
    finally:
        node.stop(signal.SIGKILL)


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AMENT_PREFIX_PATH")}
