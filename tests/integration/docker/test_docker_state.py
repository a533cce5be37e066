"""containerState on the real engine: initial list, live events (not polling), REMOVED, id rule."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace

import docker
import pytest
from docker_support import RecordingEvents, next_item, workload

from berth.model import ContainerRef, ContainerState, DeploymentSpec, PrefixTarget
from berth.runtimes.docker import DockerRuntime
from berth.settings import DockerSettings

pytestmark = pytest.mark.docker


async def deploy(runtime: DockerRuntime, prefix: str, *names: str) -> None:
    specs = tuple(workload(prefix, name) for name in names)
    await runtime.deploy(DeploymentSpec(id="d", prefix=prefix, workloads=specs), RecordingEvents())


async def test_watch_reports_the_list_then_changes_then_removal(
    runtime: DockerRuntime, prefix: str, docker_client: docker.DockerClient
) -> None:
    await deploy(runtime, prefix, "old")
    updates = runtime.watch(prefix)
    try:
        first = await anext(updates)
        assert first.initial
        assert [item.ref for item in first.items] == [ContainerRef(prefix, "old")]
        item = first.items[0]
        assert item.state is ContainerState.RUNNING and item.reason == "running"
        assert item.created_at is not None and item.image_tag == "1"
        assert item.image_name == "127.0.0.1:5000/berth/busybox"

        await deploy(runtime, prefix, "web")
        web = ContainerRef(prefix, "web")
        running = await next_item(updates, lambda i: i.ref == web and i.state is ContainerState.RUNNING)
        assert running.labels["io.berth.test"] == "1"

        await asyncio.to_thread(docker_client.api.stop, f"{prefix}-web")
        exited = await next_item(updates, lambda i: i.ref == web)
        assert exited.state is ContainerState.EXITED and exited.reason == "exited"

        await runtime.delete(ContainerRef(prefix, "web"))
        removed = await next_item(updates, lambda i: i.ref == web)
        assert removed.state is ContainerState.REMOVED
    finally:
        await updates.aclose()
    # closing the stream ends its event subscription at once, not when the collector gets to it
    assert not runtime._engine._open_streams  # no public view of the open streams


async def test_watch_everything_uses_full_names(runtime: DockerRuntime, prefix: str) -> None:
    await deploy(runtime, prefix, "web")
    updates = runtime.watch(None)
    try:
        first = await anext(updates)
        assert ContainerRef("", f"{prefix}-web") in {i.ref for i in first.items}
        await runtime.stop(ContainerRef("", f"{prefix}-web"))  # the other lookup form
        item = await next_item(updates, lambda i: i.ref.key == f"{prefix}-web")
        assert item.ref == ContainerRef("", f"{prefix}-web")
        assert item.state is ContainerState.EXITED
    finally:
        await updates.aclose()


async def test_resync_sends_nothing_when_nothing_changed(settings: DockerSettings, prefix: str) -> None:
    rt = DockerRuntime(replace(settings, resync_interval_s=0.2))
    try:
        await deploy(rt, prefix, "web")
        updates = rt.watch(prefix)
        try:
            assert (await anext(updates)).initial
            with contextlib.suppress(TimeoutError):
                extra = await asyncio.wait_for(anext(updates), 1.2)  # ~5 resyncs
                pytest.fail(f"a resync reported an unchanged container: {extra}")
        finally:
            await updates.aclose()
    finally:
        await rt.aclose()


async def test_one_shot_list(runtime: DockerRuntime, prefix: str) -> None:
    await deploy(runtime, prefix, "a", "b")
    listed = await runtime.list_state(prefix)
    assert listed.initial
    assert sorted(i.ref.name for i in listed.items) == ["a", "b"]
    await runtime.delete(PrefixTarget(prefix))
    assert (await runtime.list_state(prefix)).items == ()
