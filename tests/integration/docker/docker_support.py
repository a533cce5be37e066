"""Helpers for the Docker runtime tests on the real engine and registry (tools/testenv.sh).

Every container, network and volume a test makes carries ``io.berth.test=1`` (workloads get it
through ``dagent.labels``) or the test's own unique prefix; a fixture removes them before and
after each test. Helper containers (init/import) carry the prefix label.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import docker
from waiting import wait_event

from berth.model import (
    PREFIX_LABEL,
    ContainerState,
    ContainerStatus,
    DockerOptions,
    LogLevel,
    RegistryAuth,
    StateUpdate,
    WorkloadSpec,
    frozen_map,
)

TEST_LABEL = "io.berth.test"
REGISTRY = os.environ.get("BERTH_TEST_REGISTRY", "127.0.0.1:5000")
REGISTRY_USER = os.environ.get("BERTH_TEST_REGISTRY_USER", "berth")
REGISTRY_PASSWORD = os.environ.get("BERTH_TEST_REGISTRY_PASSWORD", "berth-registry-pass")
# A shell loop that exits at once on SIGTERM (busybox sh as PID 1 would ignore it).
SERVE_FOREVER = "trap 'exit 0' TERM; while true; do sleep 0.1; done"


@dataclass
class RecordingEvents:
    """The DeployEvents protocol, recorded (the boundary between the runtime and the handler)."""

    logs: list[tuple[LogLevel, tuple[str, ...]]] = field(default_factory=list)
    instances: list[tuple[str, ContainerState, str, LogLevel]] = field(default_factory=list)
    progress_items: list[tuple[str, str, float]] = field(default_factory=list)

    async def log(self, level: LogLevel, *lines: str) -> None:
        self.logs.append((level, lines))

    async def instance(
        self, workload_id: str, state: ContainerState, reason: str, level: LogLevel = LogLevel.INFO
    ) -> None:
        self.instances.append((workload_id, state, reason, level))

    async def progress(self, workload_id: str, status: str, fraction: float) -> None:
        self.progress_items.append((workload_id, status, fraction))

    @property
    def text(self) -> str:
        return "\n".join(line for _, lines in self.logs for line in lines)


def engine() -> docker.DockerClient:
    return docker.from_env(version="auto")


def sweep(client: docker.DockerClient, prefix: str | None = None) -> None:
    """Remove what a test made: with a prefix only that prefix's containers, networks and volumes
    (other test runs may share the engine); without one, everything carrying the test label."""
    filters: list[dict[str, Any]] = (
        [{"label": f"{PREFIX_LABEL}={prefix}"}, {"label": f"{TEST_LABEL}=1", "name": prefix}]
        if prefix
        else [{"label": f"{TEST_LABEL}=1"}]
    )
    for f in filters:
        for summary in client.api.containers(all=True, filters=f):
            try:
                client.api.remove_container(summary["Id"], force=True, v=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as err:
                if err.status_code != 409:  # 409: its removal is already in progress
                    raise
    named = {"name": prefix} if prefix else {}
    for net in client.api.networks(filters={"label": f"{TEST_LABEL}=1", **named}):
        with contextlib.suppress(docker.errors.APIError):
            client.api.remove_network(net["Id"])
    volumes = client.api.volumes(filters={"label": f"{TEST_LABEL}=1", **named}) or {}
    for vol in volumes.get("Volumes") or []:
        with contextlib.suppress(docker.errors.APIError):
            client.api.remove_volume(vol["Name"], force=True)


def registry_auth(password: str = REGISTRY_PASSWORD) -> RegistryAuth:
    return RegistryAuth(name="test", url=REGISTRY, user=REGISTRY_USER, password=password)


def workload(prefix: str, name: str, **overrides: Any) -> WorkloadSpec:
    """A busybox workload from the authenticated test registry that keeps running."""
    docker_options = overrides.pop("docker", DockerOptions())
    labels = {TEST_LABEL: "1", **dict(docker_options.labels)}
    spec = WorkloadSpec(
        id=f"id-{name}",
        prefix=prefix,
        name=name,
        image_name="berth/busybox",
        tag="1",
        registry=REGISTRY,
        registry_auth=registry_auth(),
        commands=("sh", "-c"),
        args=(SERVE_FOREVER,),
        docker=replace(docker_options, labels=frozen_map(labels)),
    )
    return replace(spec, **overrides)


@dataclass(frozen=True)
class PushedImage:
    reference: str  # registry/repository:tag, present in the registry, absent locally
    repository: str  # without the registry


async def next_item(
    updates: AsyncIterator[StateUpdate], predicate: Callable[[ContainerStatus], bool], timeout_s: float = 10.0
) -> ContainerStatus:
    """The first item of a watch that matches, waiting at most ``timeout_s``."""

    async def scan() -> ContainerStatus:
        async for update in updates:
            for item in update.items:
                if predicate(item):
                    return item
        raise AssertionError("the watch ended")

    return await wait_event(scan(), timeout_s, "the watch to report what the test expects")
