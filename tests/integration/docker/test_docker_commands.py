"""Callback and fire-and-forget commands on the real engine: start/stop/restart, inspect, delete."""

from __future__ import annotations

import asyncio
import json
import time

import docker
import pytest
from docker_support import RecordingEvents, workload
from waiting import scaled

from berth.errors import InvalidSpec, NotFound
from berth.model import ContainerRef, DeploymentSpec, PrefixTarget
from berth.runtimes.docker import DockerRuntime

pytestmark = pytest.mark.docker


async def deploy(runtime: DockerRuntime, prefix: str, *names: str, args: str | None = None) -> None:
    specs = tuple(workload(prefix, name, **({"args": (args,)} if args else {})) for name in names)
    await runtime.deploy(DeploymentSpec(id="d", prefix=prefix, workloads=specs), RecordingEvents())


def status(client: docker.DockerClient, name: str) -> str:
    return str(client.api.inspect_container(name)["State"]["Status"])


async def test_start_stop_restart_with_both_id_forms(
    runtime: DockerRuntime, prefix: str, docker_client: docker.DockerClient
) -> None:
    await deploy(runtime, prefix, "web")
    await runtime.stop(ContainerRef(prefix, "web"))
    assert await asyncio.to_thread(status, docker_client, f"{prefix}-web") == "exited"
    await runtime.start(ContainerRef("", f"{prefix}-web"))
    assert await asyncio.to_thread(status, docker_client, f"{prefix}-web") == "running"
    await runtime.restart(ContainerRef(prefix, "web"))
    assert await asyncio.to_thread(status, docker_client, f"{prefix}-web") == "running"
    with pytest.raises(NotFound):
        await runtime.start(ContainerRef(prefix, "missing"))
    with pytest.raises(NotFound):
        await runtime.stop(ContainerRef("other", "web"))  # right name, wrong prefix


async def test_inspect_is_the_engine_document(runtime: DockerRuntime, prefix: str) -> None:
    await deploy(runtime, prefix, "web")
    document = json.loads(await runtime.inspect(ContainerRef(prefix, "web")))
    assert {"Id", "Created", "State", "Config", "HostConfig", "Mounts", "NetworkSettings"} <= set(document)
    with pytest.raises(NotFound):
        await runtime.inspect(ContainerRef(prefix, "missing"))


async def test_delete_kills_a_container_ignoring_sigterm_within_the_callback_window(
    runtime: DockerRuntime, prefix: str, docker_client: docker.DockerClient
) -> None:
    await deploy(runtime, prefix, "stubborn", args="exec sleep 1000")  # PID 1 ignores SIGTERM
    started = time.monotonic()
    outcome = await runtime.delete(ContainerRef(prefix, "stubborn"))
    # within the platform's 5 s callback window (wall clock: a busy machine scales it)
    assert time.monotonic() - started < scaled(4.0)
    assert any("killed after" in note for note in outcome.notes)
    with pytest.raises(docker.errors.NotFound):
        await asyncio.to_thread(docker_client.api.inspect_container, f"{prefix}-stubborn")


async def test_delete_missing_is_success_and_prefix_deletes_all(
    runtime: DockerRuntime, prefix: str, docker_client: docker.DockerClient
) -> None:
    outcome = await runtime.delete(ContainerRef(prefix, "missing"))
    assert "does not exist" in outcome.notes[0]
    await deploy(runtime, prefix, "a", "b", "c")
    await runtime.delete(PrefixTarget(prefix))
    left = await asyncio.to_thread(
        docker_client.api.containers, all=True, filters={"label": f"org.dyrectorio.container.prefix={prefix}"}
    )
    assert left == []
    with pytest.raises(InvalidSpec):
        await runtime.delete(PrefixTarget(""))
    with pytest.raises(InvalidSpec):
        await runtime.delete(ContainerRef(prefix, ""))
