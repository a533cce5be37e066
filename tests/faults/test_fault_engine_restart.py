"""The Docker engine restarts while the agent has a state watch and a log follow open: the agent
does not crash, the log follow ends with a clear message (the platform's call is half-closed by
the agent) or keeps going, the state is resynchronised with a full list, and commands work again.

It restarts the shared test engine, so it is marked ``engine_restart``."""

from __future__ import annotations

import asyncio
import gc
import subprocess
from pathlib import Path

import pytest
from fakeplatform import running_agent
from kits.fault_kit import (
    TunedPlatformServer,
    deploy,
    deployment_stream,
    docker_agent_settings,
    final_status,
    inspect,
    logs,
    state_names,
    watch,
    workload,
)
from waiting import wait_for

from berth.proto import common_pb2

pytestmark = [
    pytest.mark.docker,
    pytest.mark.engine_restart,
    # docker-py's UnixHTTPConnection.connect does not close its socket when connect() fails (the
    # engine is down): the garbage collector closes it, with a ResourceWarning. Not Berth's leak.
    pytest.mark.filterwarnings(
        r"ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
    ),
]

REPO = Path(__file__).resolve().parents[2]
CHATTY = "trap 'exit 0' TERM; i=0; while true; do i=$((i+1)); echo line $i; sleep 0.1; done"


def restart_engine() -> None:
    """Restart the dockerd that tools/testenv.sh started (skip when it did not start one)."""
    done = subprocess.run(
        [str(REPO / "tools" / "testenv.sh"), "restart-engine"], capture_output=True, text=True
    )
    if done.returncode == 3:
        pytest.skip(f"cannot restart the engine: {done.stderr.strip()}")
    done.check_returncode()


async def test_engine_restart_under_open_streams(tmp_path: Path, prefix: str) -> None:
    async with TunedPlatformServer() as server:
        platform = server.platform
        settings = docker_agent_settings(tmp_path / "data", platform.issue_connection_token())
        async with running_agent(settings) as running:
            await platform.wait_accepted()
            await platform.send(deploy("d1", prefix, workload("chatty", args=CHATTY)))
            assert final_status(await deployment_stream(platform, "d1")) == common_pb2.SUCCESSFUL
            await platform.send(watch(prefix))
            state = await platform.wait_stream("ContainerState")
            await platform.send(logs(prefix, "chatty", streaming=True, tail=10))
            follow = await platform.wait_stream("ContainerLogStream")
            await platform.wait_for(lambda: len(follow.messages) >= 5, within_s=20)
            await platform.wait_for(lambda: state_names(state).get("chatty") == common_pb2.RUNNING)
            before = len(state.messages)

            await asyncio.to_thread(restart_engine)

            # The watch reports the container again (it exited with the engine) in a new list.
            await platform.wait_for(
                lambda: len(state.messages) > before and "chatty" in state_names(state), within_s=60
            )
            after = state.messages[before:]
            assert any(any(item.id.name == "chatty" for item in m.data) for m in after)
            assert not state.done.is_set()
            # The follow either ended, half-closed by the agent, or is still delivering lines.
            lines = len(follow.messages)
            await wait_for(
                lambda: follow.half_closed_by_agent or len(follow.messages) > lines,
                10,
                "the follow half-closed by the agent or delivering lines again",
            )
            # Commands reach the restarted engine.
            await platform.send(inspect(prefix, "chatty"))
            answer = await platform.wait_unary("ContainerInspect", within_s=20)
            assert '"Name"' in answer.message.data
            assert not running.task.done()
            follow.complete()
            state.complete()
    # Finalise docker-py's leaked sockets (see pytestmark) here, not in whichever test runs next.
    gc.collect()
