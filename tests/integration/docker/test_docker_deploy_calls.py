"""What a deployment asks the engine, on the real engine: per workload only create and start
(plus a constant number of calls per deployment), and the state checks it keeps where they tell
something a start does not."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import docker
import pytest
from docker_support import SERVE_FOREVER, RecordingEvents, workload

from berth.errors import PermanentCommandError, TemporaryCommandError
from berth.model import (
    PREFIX_LABEL,
    ContainerState,
    DeploymentSpec,
    DockerOptions,
    LogLevel,
    RestartPolicy,
    WorkloadSpec,
)
from berth.runtimes.docker import DockerRuntime
from berth.runtimes.docker.deployer import Deployer
from berth.runtimes.docker.engine import Engine

pytestmark = pytest.mark.docker

T = TypeVar("T")


@pytest.fixture
def engine_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """What each one-shot engine call of the runtime was about (``create p-web``, ...)."""
    calls: list[str] = []
    original = Engine.call

    async def recording(self: Engine, what: str, fn: Callable[[docker.DockerClient], T]) -> T:
        calls.append(what)
        return await original(self, what, fn)

    monkeypatch.setattr(Engine, "call", recording)
    yield calls


def deployment(prefix: str, *workloads: WorkloadSpec) -> DeploymentSpec:
    return DeploymentSpec(id="dep-calls", prefix=prefix, workloads=workloads)


def about(calls: list[str], name: str) -> list[str]:
    return [what for what in calls if what.split(" ", 1)[-1] == name]


async def test_a_fresh_deployment_creates_and_starts_each_workload_and_lists_once(
    runtime: DockerRuntime, prefix: str, engine_calls: list[str]
) -> None:
    names = ["a", "b", "c", "d"]
    events = RecordingEvents()
    await runtime.deploy(deployment(prefix, *(workload(prefix, n) for n in names)), events)

    for n in names:
        assert about(engine_calls, f"{prefix}-{n}") == [f"create {prefix}-{n}", f"start {prefix}-{n}"]
    assert engine_calls.count("list containers") == 1
    assert [(wid, state, reason) for wid, state, reason, _ in events.instances] == [
        (f"id-{n}", ContainerState.RUNNING, "running") for n in names
    ]


async def test_restart_policy_no_reads_the_state_back_after_the_start(
    runtime: DockerRuntime, prefix: str, engine_calls: list[str]
) -> None:
    once = workload(prefix, "once", docker=DockerOptions(restart_policy=RestartPolicy.NO))
    await runtime.deploy(deployment(prefix, once), RecordingEvents())
    name = f"{prefix}-once"
    assert about(engine_calls, name) == [f"create {name}", f"start {name}", f"inspect {name}"]


async def test_a_name_taken_after_the_listing_is_still_replaced(
    runtime: DockerRuntime,
    prefix: str,
    docker_client: docker.DockerClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The listing is a snapshot: a container created under the name after it makes the create
    collide (409), and the deployment then looks by name and replaces it as usual."""
    name = f"{prefix}-web"
    created: dict[str, Any] = await asyncio.to_thread(
        docker_client.api.create_container,
        "local/busybox:1",
        name=name,
        command=["sh", "-c", SERVE_FOREVER],
        labels={"io.berth.test": "1", PREFIX_LABEL: prefix},
    )
    await asyncio.to_thread(docker_client.api.start, created["Id"])

    async def nothing_listed(self: Deployer, workloads: tuple[WorkloadSpec, ...]) -> frozenset[str]:
        return frozenset()

    monkeypatch.setattr(Deployer, "_names_in_use", nothing_listed)
    events = RecordingEvents()
    await runtime.deploy(deployment(prefix, workload(prefix, "web")), events)

    after = await asyncio.to_thread(docker_client.api.inspect_container, name)
    assert after["Id"] != created["Id"] and after["State"]["Running"]
    with pytest.raises(docker.errors.NotFound):
        await asyncio.to_thread(docker_client.api.inspect_container, created["Id"])
    assert [s for _, s, _, _ in events.instances] == [
        ContainerState.RUNNING,
        ContainerState.WAITING,
        ContainerState.RUNNING,
    ]


async def test_a_container_of_another_prefix_with_the_same_name_is_found_by_the_listing(
    runtime: DockerRuntime, prefix: str, docker_client: docker.DockerClient
) -> None:
    """``<p>-b`` + ``c`` and ``<p>`` + ``b-c`` share a name: the listing matches names, not labels,
    so the deployment refuses to take over the other prefix's container (it is not a 409)."""
    name = f"{prefix}-b-c"
    await asyncio.to_thread(
        docker_client.api.create_container,
        "local/busybox:1",
        name=name,
        command=["true"],
        labels={"io.berth.test": "1", PREFIX_LABEL: f"{prefix}-b"},
    )
    events = RecordingEvents()
    with pytest.raises(PermanentCommandError, match="belongs to prefix"):
        await runtime.deploy(deployment(prefix, workload(prefix, "b-c")), events)
    assert events.instances[-1][1] is ContainerState.UNSPECIFIED


async def test_a_failed_listing_fails_the_first_workload_with_its_reason(
    runtime: DockerRuntime, prefix: str, monkeypatch: pytest.MonkeyPatch, docker_client: docker.DockerClient
) -> None:
    async def engine_gone(self: Deployer, workloads: tuple[WorkloadSpec, ...]) -> frozenset[str]:
        raise TemporaryCommandError("list containers: the container engine is not reachable")

    monkeypatch.setattr(Deployer, "_names_in_use", engine_gone)
    events = RecordingEvents()
    with pytest.raises(TemporaryCommandError):
        await runtime.deploy(deployment(prefix, workload(prefix, "a"), workload(prefix, "b")), events)
    assert [(wid, state, level) for wid, state, _, level in events.instances] == [
        ("id-a", ContainerState.UNSPECIFIED, LogLevel.ERROR)
    ]
    listed = await asyncio.to_thread(
        docker_client.api.containers, all=True, filters={"label": f"{PREFIX_LABEL}={prefix}"}
    )
    assert listed == []
