"""Child ROS processes: environment, the one node launcher, stop by PID.

Every process is started with DDS discovery limited to this machine, its own
domain id and the large-data Fast DDS profile, in its own session so that a
Ctrl-C meant for the parent does not reach it before the parent has decided
how to stop it. :func:`start_node` is the only way ``segmentation_node`` is
started by the demo, live evaluation, the benchmarks and the tests, so a
started node always runs in that environment. :class:`ProcessSet` stops
every process it started, in reverse order, first with SIGINT (the clean
path), then SIGKILL after a timeout, also when the parent fails half-way.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Final, TextIO

from mess_ros.package_files import package_data_file
from mess_ros.ros.errors import RosError

PROFILE_VARIABLE: Final = "FASTDDS_DEFAULT_PROFILES_FILE"
DISCOVERY_VARIABLE: Final = "ROS_AUTOMATIC_DISCOVERY_RANGE"
DOMAIN_VARIABLE: Final = "ROS_DOMAIN_ID"
# Domain ids whose DDS ports stay below Linux's ephemeral port range (32768 and up):
# above 101 a participant's ports can collide with ports the kernel hands out.
SAFE_DOMAIN_IDS: Final = range(102)
PROFILE_NAME: Final = "fastdds_large_data.xml"
STOP_TIMEOUT_S: Final = 10.0
NODE_NAME: Final = "segmentation_node"
NODE_MODULE: Final = "mess_ros.ros.node"


def default_domain_id(offset: int = 0, environ: Mapping[str, str] = os.environ) -> int:
    """``ROS_DOMAIN_ID`` when it is set, else an id in 1..101 derived from the PID.

    Tools that start their own nodes honour the user's domain; without one
    they keep clear of domain 0 (everybody's default) and of the ids whose
    ports may collide with the ephemeral range. ``offset`` gives concurrent
    users in one process (test fixtures) different ids.
    """
    text = environ.get(DOMAIN_VARIABLE, "").strip()
    if text:
        if not text.isdigit() or int(text) > 232:
            msg = f"{DOMAIN_VARIABLE}={text!r} is not a ROS domain id; expected an integer 0..232"
            raise RosError(msg)
        return int(text)
    first = SAFE_DOMAIN_IDS.start + 1
    return first + (os.getpid() + offset) % (SAFE_DOMAIN_IDS.stop - first)


def _dds_settings() -> dict[str, str]:
    """Discovery on this machine only, and the profile that lets camera frames through."""
    return {
        DISCOVERY_VARIABLE: "LOCALHOST",
        PROFILE_VARIABLE: str(package_data_file(f"config/{PROFILE_NAME}")),
    }


def ros_environment(domain_id: int, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment of a ROS process: local discovery only, ``domain_id``, large-data profile."""
    env = dict(os.environ if base is None else base)
    env.update(_dds_settings())
    env[DOMAIN_VARIABLE] = str(domain_id)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def join_ros_environment() -> None:
    """Give this process the discovery range and DDS profile of the processes it starts.

    Fast DDS reads both when a participant is created, so a client in this
    process must have them before its first node; the domain id is passed
    to ``rclpy.init`` instead.
    """
    os.environ.update(_dds_settings())


def _sigint_ignored() -> bool:
    return signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def _interruptible() -> None:
    """In the child before exec: SIGINT back to its default disposition.

    A shell starts background jobs (``make test &``, ``nohup``) with SIGINT
    ignored and children inherit that; a Python child then never installs
    its KeyboardInterrupt handler, so :meth:`ManagedProcess.stop`'s clean
    path would end in SIGKILL.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class ManagedProcess:
    """One child process, its output in a log file.

    ``stop_timeout_s`` is how long :meth:`stop` waits for a clean exit
    before it kills the process.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.stop_timeout_s = STOP_TIMEOUT_S
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log: TextIO = log_path.open("w", encoding="utf-8")
        try:
            self.popen = subprocess.Popen(
                self.argv,
                env=dict(env),
                cwd=cwd,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_interruptible if _sigint_ignored() else None,
            )
        except OSError as err:
            self._log.close()
            msg = f"cannot start {name} ({' '.join(self.argv)}): {err}"
            raise RosError(msg) from err

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def check_running(self, during: str = "") -> None:
        """Raise a :class:`RosError` ending with the process's output once it has exited."""
        if not self.alive():
            when = f" during {during}" if during else ""
            raise RosError(
                f"{self.name} exited with status {self.popen.returncode}{when}; its output "
                f"({self.log_path}) ends with:\n{self.tail()}"
            )

    def stop(self, sig: int = signal.SIGINT, timeout_s: float | None = None) -> int:
        """``sig`` (SIGINT: the clean path), then SIGKILL after the timeout; the exit status."""
        if timeout_s is None:
            timeout_s = self.stop_timeout_s
        try:
            if self.alive():
                self.popen.send_signal(sig)
                try:
                    return self.popen.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    self.popen.kill()
                    return self.popen.wait(timeout_s)
            return self.popen.returncode
        finally:
            self._log.close()

    def output(self) -> str:
        """Everything the process has written so far ("" when the log cannot be read)."""
        if not self._log.closed:
            self._log.flush()
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 20) -> str:
        """The end of the process's output, for error messages."""
        return "\n".join(self.output().splitlines()[-lines:])


class ProcessSet(contextlib.AbstractContextManager["ProcessSet"]):
    """Processes started together and stopped together (reverse order) on exit."""

    def __init__(self) -> None:
        self._processes: list[ManagedProcess] = []
        self.exit_codes: dict[str, int] = {}

    def start(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], log_path: Path
    ) -> ManagedProcess:
        return self.add(ManagedProcess(name, argv, env, log_path))

    def add(self, process: ManagedProcess) -> ManagedProcess:
        """Stop ``process`` with the others (one started elsewhere, e.g. by :func:`start_node`)."""
        self._processes.append(process)
        return process

    def stop(self, process: ManagedProcess) -> int:
        status = process.stop()
        self.exit_codes[process.name] = status
        if process in self._processes:
            self._processes.remove(process)
        return status

    def stop_all(self) -> None:
        for process in reversed(list(self._processes)):
            self.stop(process)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop_all()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so ``finally`` blocks stop the children."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def python_module_argv(module: str, *args: str) -> list[str]:
    """``python -m module args``, with this interpreter (works without installed scripts)."""
    return [sys.executable, "-m", module, *args]


def parameter_override(name: str, value: object) -> str:
    """``name:=value`` for ``--ros-args -p``, the value written so that it keeps its type.

    ROS reads the value as YAML, and JSON is YAML: ``1.0`` stays a double,
    ``"final"`` a string, ``[]`` an array.
    """
    return f"{name}:={json.dumps(value)}"


def start_node(
    params_file: Path,
    domain_id: int,
    log_path: Path,
    *,
    overrides: Iterable[str] = (),
    node_name: str = "",
    namespace: str = "",
    program: Sequence[str] = (),
    program_args: Sequence[str] = (),
    extra_env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    processes: ProcessSet | None = None,
) -> ManagedProcess:
    """Start ``segmentation_node`` on ``params_file`` in :func:`ros_environment`.

    ``overrides`` are ``name:=value`` parameters, as after ``ros2 run ...
    -p`` (:func:`parameter_override` writes them from values); they win over
    the file. ``node_name`` and ``namespace`` remap the node. ``program`` is
    the node's command (``python -m mess_ros.ros.node`` with this
    interpreter by default; a wrapper or an installed script otherwise) and
    ``program_args`` its own arguments before ``--ros-args`` (``--lifecycle``).
    ``extra_env`` adds to the environment (thread counts), never replacing
    the discovery range, domain or DDS profile. With ``processes`` the node
    is stopped with the rest of that set.
    """
    argv = [*(program or python_module_argv(NODE_MODULE)), *program_args]
    argv += ["--ros-args", "--params-file", str(params_file)]
    if node_name:
        argv += ["-r", f"__node:={node_name}"]
    if namespace.strip("/"):
        argv += ["-r", f"__ns:=/{namespace.strip('/')}"]
    for item in overrides:
        argv += ["-p", item]
    env = ros_environment(domain_id, base={**os.environ, **(extra_env or {})})
    process = ManagedProcess(node_name or NODE_NAME, argv, env, log_path, cwd)
    if processes is not None:
        processes.add(process)
    return process
