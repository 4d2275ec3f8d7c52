"""Child processes are always stopped by PID, also when the parent fails."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import psutil
import pytest

from mess_ros.package_files import package_data_file
from mess_ros.ros.processes import ProcessSet, ros_environment

SLEEPER = """
import time
print("ready", flush=True)
try:
    time.sleep(60)
except KeyboardInterrupt:
    print("stopped cleanly")
"""


def test_environment_is_local_with_profile() -> None:
    env = ros_environment(123, base={"PATH": "/bin"})
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert env["ROS_DOMAIN_ID"] == "123"
    assert Path(env["FASTDDS_DEFAULT_PROFILES_FILE"]).is_file()
    assert package_data_file("config/default.yaml").is_file()


def test_children_stopped_on_failure(tmp_path: Path) -> None:
    pids = []
    with pytest.raises(RuntimeError, match="boom"), ProcessSet() as processes:
        for i in range(2):
            child = processes.start(
                f"sleeper_{i}", [sys.executable, "-c", SLEEPER], {}, tmp_path / f"{i}.log"
            )
            pids.append(child.pid)
            deadline = time.monotonic() + 20
            while "ready" not in child.tail() and time.monotonic() < deadline:
                time.sleep(0.05)
        raise RuntimeError("boom")
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    # SIGINT first: the children ran their own clean-up and exited normally.
    assert processes.exit_codes == {"sleeper_1": 0, "sleeper_0": 0}
    assert "stopped cleanly" in (tmp_path / "0.log").read_text()
