"""Deadlines as a subscriber sees them: judged at publication, infeasible frames, priority."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rclpy.parameter import Parameter

from mess_ros.ros.diagnostics import ExitInfo
from tests.ros.conftest import (
    NODE_PROGRAM,
    NodeUnderTest,
    RosClient,
    next_domain_id,
    run_node,
    stamp_of,
    start_node,
    wait_until_serving,
    write_params,
)
from tests.ros.test_node import probe_image

pytestmark = pytest.mark.ros

PUBLISH_DELAY_MS = 80.0
DEADLINE_MS = 50.0
SLOW_NODE = Path(__file__).with_name("slow_publish_node.py")


@pytest.fixture(scope="module")
def slow_publisher(
    tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path
) -> Iterator[NodeUnderTest]:
    """The tiny model (a few ms) behind a mask publication that takes 80 ms."""
    tmp = tmp_path_factory.mktemp("slow_publisher")
    params = write_params(
        tmp / "params.yaml",
        tiny_checkpoint,
        node__image_qos_reliability="reliable",
        node__image_qos_depth=10,
    )
    program = (sys.executable, str(SLOW_NODE), "--publish-delay-ms", f"{PUBLISH_DELAY_MS:g}")
    yield from run_node(tmp, params, probe_image(), program=program, reliable_images=True)


def stamp_ns(stamp: tuple[int, int]) -> int:
    return stamp[0] * 1_000_000_000 + stamp[1]


def test_deadline_is_met_only_once_the_mask_is_published(slow_publisher: NodeUnderTest) -> None:
    client = slow_publisher.client
    (result,) = client.set_parameters(
        [
            Parameter("policy.name", value="final"),
            Parameter("deadline.deadline_ms", value=DEADLINE_MS),
        ]
    )
    assert result.successful, result.reason
    for _ in range(3):
        image = probe_image()
        mask, values = client.segment(image)
        arrived_ns = client.node.get_clock().now().nanoseconds
        report = client.exit_for(stamp_of(mask))
        assert report is not None
        info = ExitInfo.from_message(report)
        assert info.measured_ms < DEADLINE_MS, values  # the network alone was in time ...
        # ... the subscriber got the mask late, and the node says so
        assert (arrived_ns - stamp_ns(stamp_of(mask))) / 1e6 > DEADLINE_MS
        assert info.met_deadline is False, values
        assert info.end_to_end_ms >= PUBLISH_DELAY_MS
        deliver = [ms for stage, ms in info.stage_ms.items() if stage.startswith("deliver:")]
        assert len(deliver) == 1 and deliver[0] >= PUBLISH_DELAY_MS - 1.0


def test_infeasible_frames_are_dropped_and_counted_apart(slow_publisher: NodeUnderTest) -> None:
    """Publishing alone takes longer than the deadline: no exit can make it, nothing runs."""
    client = slow_publisher.client
    (result,) = client.set_parameters(
        [
            Parameter("policy.name", value="hybrid"),
            Parameter("policy.late_frame_action", value="drop"),
            Parameter("deadline.deadline_ms", value=DEADLINE_MS),
        ]
    )
    assert result.successful, result.reason
    infos: list[ExitInfo] = []
    for _ in range(3):
        image = probe_image()
        stamp = client.next_stamp(image)
        info = client.request(
            lambda image=image: client.image_pub.publish(image),  # type: ignore[misc]
            lambda stamp=stamp: client.exit_for(stamp),  # type: ignore[misc]
            20.0,
        )
        infos.append(ExitInfo.from_message(info))
    assert all(i.dropped and i.infeasible and i.met_deadline is False for i in infos), infos
    assert infos[-1].reason.startswith("infeasible: earliest exit needs")
    assert not any(client.mask_for((i.stamp_ns // 10**9, i.stamp_ns % 10**9)) for i in infos)
    client.health.clear()
    assert client.spin_until(lambda: bool(client.health), 5.0)
    health = client.latest_health()
    assert int(health["deadline_infeasible_total"]) >= 3
    assert int(health["dropped.late"]) >= 3
    (result,) = client.set_parameters(
        [
            Parameter("policy.late_frame_action", value="earliest"),
            Parameter("deadline.deadline_ms", value=0.0),
        ]
    )
    assert result.successful


def thread_niceness(pid: int) -> list[int]:
    """Niceness of every thread of ``pid`` (field 19 of its stat lines)."""
    values = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        stat = (task / "stat").read_text(encoding="utf-8")
        values.append(int(stat.rpartition(")")[2].split()[16]))
    return values


def test_raised_priority_reaches_every_thread(tmp_path: Path, tiny_checkpoint: Path) -> None:
    if os.geteuid() != 0 and resource.getrlimit(resource.RLIMIT_NICE)[0] < 20 + 5:
        pytest.skip("this user may not lower the niceness to -5 (RLIMIT_NICE)")
    params = write_params(tmp_path / "params.yaml", tiny_checkpoint, node__scheduling_priority=-5)
    with contextlib.closing(run_node(tmp_path, params, probe_image())) as nodes:
        node = next(nodes)
        node.client.segment(probe_image())  # torch's worker threads exist by now
        pid = node.process.pid
        # The node applies it again after its first frame (for threads created by then).
        assert node.client.spin_until(lambda: set(thread_niceness(pid)) == {-5}, 5.0), (
            thread_niceness(pid)
        )
        assert node.client.spin_until(
            lambda: "threads run at niceness -5" in node.process.output(), 5.0
        )


def test_refused_priority_is_a_warning_and_the_node_serves(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    """Without CAP_SYS_NICE (dropped from the bounding set for root) the raise is refused."""
    wrapper: tuple[str, ...] = ()
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("setpriv (util-linux) is needed to drop CAP_SYS_NICE as root")
        wrapper = (setpriv, "--bounding-set", "-sys_nice", "--inh-caps", "-sys_nice")
    params = write_params(tmp_path / "params.yaml", tiny_checkpoint, node__scheduling_priority=-5)
    domain_id = next_domain_id()
    process = start_node(
        params, domain_id, tmp_path / "node.log", program=(*wrapper, *NODE_PROGRAM)
    )
    client: RosClient | None = None
    try:
        client = RosClient(domain_id)
        wait_until_serving(process, client, probe_image())
        time.sleep(0.2)
        output = process.output()
        assert "could not set niceness -5" in output
        assert "CAP_SYS_NICE" in output
        # Left at the niceness it started with: this test's own, which it inherited.
        assert os.getpriority(os.PRIO_PROCESS, 0) in thread_niceness(process.pid)
    finally:
        process.stop(signal.SIGINT)
        if client is not None:
            client.close()
