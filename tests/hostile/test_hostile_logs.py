"""Very long log lines and binary log output from a real container: the follow and the log list
stay well-formed (each message far below 4 MiB, valid UTF-8 for protobuf strings), long lines are
cut with a marker, and the agent keeps answering."""

from __future__ import annotations

import pytest
from kits.fault_kit import DockerAgent, deploy, deployment_stream, final_status, inspect, logs, workload

from berth.proto import common_pb2

pytestmark = [pytest.mark.docker]

HOSTILE = (
    "trap 'exit 0' TERM; "
    "head -c 1000000 /dev/zero | tr '\\0' a; echo; "
    "head -c 65536 /dev/urandom; echo; "
    "printf '\\xff\\xfe\\xc3\\x28 invalid utf-8\\n'; "
    "echo after-the-noise; "
    "while true; do sleep 0.1; done"
)
LINE_LIMIT = 64 * 1024


async def test_long_and_binary_log_lines_stay_well_formed(docker_agent: DockerAgent, prefix: str) -> None:
    platform = docker_agent.platform
    await platform.send(deploy("noisy", prefix, workload("noisy", args=HOSTILE)))
    assert final_status(await deployment_stream(platform, "noisy")) == common_pb2.SUCCESSFUL

    await platform.send(logs(prefix, "noisy", streaming=True, tail=1000))
    follow = await platform.wait_stream("ContainerLogStream")
    await platform.wait_for(lambda: any("after-the-noise" in m.log for m in follow.messages), within_s=20)
    for message in follow.messages:
        assert len(message.log.encode("utf-8")) <= LINE_LIMIT
    assert any("line truncated" in m.log for m in follow.messages)
    follow.complete()

    await platform.send(logs(prefix, "noisy", streaming=False, tail=1000))
    answer = await platform.wait_unary("ContainerLog", within_s=20)
    lines = list(answer.message.logs)
    assert any("after-the-noise" in line for line in lines)
    assert all(len(line.encode("utf-8")) <= LINE_LIMIT for line in lines)
    assert answer.message.ByteSize() < 4 * 1024 * 1024

    # Still answering afterwards, and nothing crashed on the way.
    await platform.send(inspect(prefix, "noisy"))
    await platform.wait_unary("ContainerInspect", within_s=10)
    crashed = {k: v for k, v in docker_agent.running.agent.metrics.commands.items() if k[1] == "crashed"}
    assert crashed == {}
