"""Child processes are always stopped by PID, also when the parent fails."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from mess_ros.package_files import package_data_file
from mess_ros.ros.errors import RosError
from mess_ros.ros.processes import ProcessSet, parameter_override, ros_environment, start_node

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


STOPPER = f"""
import json, sys, time
from pathlib import Path
from mess_ros.ros.processes import ProcessSet
with ProcessSet() as processes:
    child = processes.start("sleeper", [sys.executable, "-c", {SLEEPER!r}], {{}}, Path(sys.argv[1]))
    while "ready" not in child.tail():
        time.sleep(0.05)
    child.stop_timeout_s = 10.0
print(json.dumps(processes.exit_codes))
"""


def test_children_stop_cleanly_when_started_with_sigint_ignored(tmp_path: Path) -> None:
    """A launcher run as a background job (SIGINT ignored) still stops its children cleanly."""
    done = subprocess.run(
        [sys.executable, "-c", STOPPER, str(tmp_path / "sleeper.log")],
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(done.stdout) == {"sleeper": 0}
    assert "stopped cleanly" in (tmp_path / "sleeper.log").read_text()


ECHO = """
import json, os, sys
names = ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "FASTDDS_DEFAULT_PROFILES_FILE",
         "OMP_NUM_THREADS")
print(json.dumps({"argv": sys.argv[1:], "env": {n: os.environ.get(n) for n in names}}))
sys.exit(3)
"""


def test_node_launcher_passes_parameters_remaps_and_the_ros_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FASTDDS_DEFAULT_PROFILES_FILE", "/somewhere/else.xml")
    node = start_node(
        tmp_path / "params.yaml",
        42,
        tmp_path / "node.log",
        overrides=[parameter_override("use_sim_time", True), "policy.name:=final"],
        node_name="seg",
        namespace="/robot/",
        program=[sys.executable, "-c", ECHO],
        program_args=["--lifecycle"],
        extra_env={"OMP_NUM_THREADS": "3", "ROS_DOMAIN_ID": "7"},
    )
    assert node.popen.wait(20) == 3
    seen = json.loads(node.output())
    assert seen["argv"] == [
        "--lifecycle",
        "--ros-args",
        "--params-file",
        str(tmp_path / "params.yaml"),
        "-r",
        "__node:=seg",
        "-r",
        "__ns:=/robot",
        "-p",
        "use_sim_time:=true",
        "-p",
        "policy.name:=final",
    ]
    # The launcher's domain, discovery range and profile win over the caller's environment.
    profile = ros_environment(42)["FASTDDS_DEFAULT_PROFILES_FILE"]
    assert Path(profile).is_file()
    assert seen["env"] == {
        "ROS_DOMAIN_ID": "42",
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "FASTDDS_DEFAULT_PROFILES_FILE": profile,
        "OMP_NUM_THREADS": "3",
    }
    with pytest.raises(RosError, match=r"(?s)seg exited with status 3 during the test.*argv"):
        node.check_running("the test")


def test_parameter_overrides_keep_their_types() -> None:
    assert parameter_override("deadline.deadline_ms", 50.0) == "deadline.deadline_ms:=50.0"
    assert parameter_override("policy.name", "final") == 'policy.name:="final"'
    assert parameter_override("policy.active_exits", []) == "policy.active_exits:=[]"
