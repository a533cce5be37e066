"""The platform goes away (idle, and in the middle of a deployment) and comes back.

While it is away, a plain TCP listener stands on its port and counts every connection attempt
(gRPC's own reconnects included), so a reconnect storm would show. The outage lasts
``BERTH_FAULT_OUTAGE_S`` seconds (8 by default; 30 as in the issue with BERTH_FAULT_OUTAGE_S=30).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from fakeplatform import running_agent
from kits.fault_kit import (
    TunedPlatformServer,
    deploy,
    deployment_stream,
    docker_agent_settings,
    state_names,
    watch,
    workload,
)

from berth.proto import common_pb2

pytestmark = [pytest.mark.docker]

OUTAGE_S = float(os.environ.get("BERTH_FAULT_OUTAGE_S", "8"))
BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 4.0


class CountingListener:
    """Stands where the platform was: accepts each connection, counts it and closes it."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.accepted: list[float] = []
        self._server: asyncio.Server | None = None

    async def _accept(self, _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted.append(time.monotonic())
        writer.close()

    async def __aenter__(self) -> CountingListener:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


def storm_bound(outage_s: float) -> int:
    """Attempts a jittered backoff capped at 4 s may make in ``outage_s`` (mean about one per
    2 s once capped); anything above one per second on average is a storm."""
    return int(4 + outage_s)


@pytest.mark.parametrize("moment", ["idle", "mid-deployment"])
async def test_platform_outage_backs_off_reconnects_and_resyncs(
    tmp_path: Path, prefix: str, moment: str
) -> None:
    async with TunedPlatformServer() as server:
        platform = server.platform
        token = platform.issue_connection_token()
        settings = docker_agent_settings(
            tmp_path / "data", token, backoff_initial_s=BACKOFF_INITIAL_S, backoff_max_s=BACKOFF_MAX_S
        )
        names = [f"w{i}" for i in range(4)]
        async with running_agent(settings) as running:
            await platform.wait_accepted()
            if moment == "idle":
                await platform.send(deploy("before", prefix, *(workload(n) for n in names)))
                record = await deployment_stream(platform, "before")
                assert record.messages[-1].deploymentStatus == common_pb2.SUCCESSFUL
            else:
                await platform.send(deploy("during", prefix, *(workload(n) for n in names)))
                await platform.wait_stream("DeploymentStatus")
            session = running.agent.session
            assert session is not None
            attempts_before = session.attempts
            await server.stop()
            async with CountingListener("127.0.0.1", server.port) as listener:
                await asyncio.sleep(OUTAGE_S)  # the point: an outage of fixed length
            attempts = session.attempts - attempts_before
            tcp = len(listener.accepted)
            print(f"outage {OUTAGE_S:.0f} s: agent attempts {attempts}, TCP connects {tcp}")
            assert 2 <= attempts <= storm_bound(OUTAGE_S)
            # The channel may add a reconnect of its own between session attempts (seen: 6 TCP
            # connects for 4 attempts); all TCP connects together still stay below a storm.
            assert tcp <= storm_bound(OUTAGE_S)
            assert not running.task.done()

            await server.start()
            connect = await platform.wait_accepted(count=2, within_s=BACKOFF_MAX_S + 10)
            assert connect.token == token  # the stored connection token, not an install token
            assert connect.info.id == platform.node_id
            # The platform asks for the state again after a reconnect: a full list comes back,
            # with the deployment that was running finished on the node.
            await platform.send(watch(prefix))
            state = await platform.wait_stream("ContainerState")
            await platform.wait_for(lambda: len(state.messages) >= 1, within_s=10)
            if moment == "mid-deployment":
                await platform.wait_for(
                    lambda: state_names(state).get("w3") == common_pb2.RUNNING, within_s=30
                )
            if moment == "idle":
                # The first message after the reconnect is the full list.
                first = {item.id.name: item.state for item in state.messages[0].data}
                assert first == dict.fromkeys(names, common_pb2.RUNNING)
            assert state_names(state) == dict.fromkeys(names, common_pb2.RUNNING)
            state.complete()
