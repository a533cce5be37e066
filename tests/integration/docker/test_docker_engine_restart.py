"""The engine restarts while a state watch is open: the watcher survives and resyncs with a full
``initial=True`` list. It restarts the shared test engine, so it is marked ``engine_restart``
(exclude with ``-m "not engine_restart"`` when others use the engine at the same time)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
from docker_support import RecordingEvents, workload
from waiting import wait_event

from berth.model import ContainerRef, ContainerState, DeploymentSpec, StateUpdate
from berth.runtimes.docker import DockerRuntime

pytestmark = [pytest.mark.docker, pytest.mark.engine_restart]

REPO = Path(__file__).resolve().parents[3]


def restart_engine() -> None:
    """Restart the dockerd that tools/testenv.sh started (skip when it did not start one)."""
    done = subprocess.run(
        [str(REPO / "tools" / "testenv.sh"), "restart-engine"], capture_output=True, text=True
    )
    if done.returncode == 3:
        pytest.skip(f"cannot restart the engine: {done.stderr.strip()}")
    done.check_returncode()


async def test_watch_survives_an_engine_restart(runtime: DockerRuntime, prefix: str) -> None:
    spec = workload(prefix, "web")
    await runtime.deploy(DeploymentSpec(id="d", prefix=prefix, workloads=(spec,)), RecordingEvents())
    updates = runtime.watch(prefix)
    try:
        assert (await anext(updates)).initial
        await asyncio.to_thread(restart_engine)

        async def resynced() -> StateUpdate:
            async for update in updates:
                if update.initial:
                    return update
            raise AssertionError("the watch ended")

        again = await wait_event(resynced(), 60, "the watch to resync with a full list")
        assert ContainerRef(prefix, "web") in {i.ref for i in again.items}
        # live events flow again on the new subscription
        await runtime.stop(ContainerRef(prefix, "web"))

        async def exited() -> None:
            async for update in updates:
                if any(i.ref.name == "web" and i.state is ContainerState.EXITED for i in update.items):
                    return

        await wait_event(exited(), 20, "the stopped container reported")
    finally:
        await updates.aclose()
