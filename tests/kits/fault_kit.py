"""What the fault, hostile-input and long-run suites share: a fake platform server with tunable
HTTP/2 options and address, command builders on the wire types, an agent on the real Docker
runtime, and the sweep of everything labelled ``io.berth.test=1``.

The bench scripts (bench/soak.py, bench/burst.py) import it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import docker
import docker.errors
import grpc
import grpc.aio
from fakeplatform import FakePlatform, PlatformServer, RunningAgent, StreamRecord, agent_settings

from berth.proto import agent_pb2, agent_pb2_grpc, common_pb2
from berth.settings import AgentSettings, DockerSettings

TEST_LABEL = "io.berth.test"
PREFIX_LABEL = "org.dyrectorio.container.prefix"
REGISTRY = os.environ.get("BERTH_TEST_REGISTRY", "127.0.0.1:5000")
REGISTRY_USER = os.environ.get("BERTH_TEST_REGISTRY_USER", "berth")
REGISTRY_PASSWORD = os.environ.get("BERTH_TEST_REGISTRY_PASSWORD", "berth-registry-pass")
LOCAL_IMAGE = ("local/busybox", "1")
# A shell loop that exits at once on SIGTERM (busybox sh as PID 1 would ignore it).
SERVE_FOREVER = "trap 'exit 0' TERM; while true; do sleep 0.1; done"

# Server options that let a test agent ping every second or two (the default policy answers
# frequent pings with GOAWAY) and let the platform notice a dead agent too.
PING_FRIENDLY: tuple[tuple[str, int], ...] = (
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 500),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.keepalive_permit_without_calls", 1),
)


def new_prefix(kind: str) -> str:
    return f"f{kind}{secrets.token_hex(3)}"


class TunedPlatformServer(PlatformServer):
    """``PlatformServer`` with server options and a listening address of the test's choosing
    (e.g. the root side of a veth pair); ``iss`` follows the address."""

    def __init__(
        self,
        platform: FakePlatform | None = None,
        *,
        host: str = "127.0.0.1",
        options: Sequence[tuple[str, int | str]] = PING_FRIENDLY,
    ) -> None:
        super().__init__(platform)
        self.host = host
        self.options = list(options)

    @property
    def iss(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        server = grpc.aio.server(options=self.options)
        agent_pb2_grpc.add_AgentServicer_to_server(self.platform, server)
        self.port = server.add_insecure_port(f"{self.host}:{self.port}")
        await server.start()
        self._server = server
        self.platform.iss = self.iss


# -- agents --------------------------------------------------------------------------------------


@dataclasses.dataclass
class DockerAgent:
    platform: FakePlatform
    running: RunningAgent
    data_dir: Path


def docker_agent_settings(data_dir: Path, token: str, **connection: Any) -> AgentSettings:
    """An in-process agent on the real Docker runtime; volumes live under ``data_dir``."""
    base = agent_settings(data_dir, token, **connection)
    return dataclasses.replace(
        base,
        runtime="docker",
        docker=DockerSettings(
            data_mount_path=data_dir,
            internal_mount_path=data_dir,
            stop_grace_s=1.0,
            default_expected_timeout_s=20,
            resync_interval_s=30.0,
        ),
    )


# -- commands ------------------------------------------------------------------------------------


def container_id(prefix: str, name: str) -> common_pb2.ContainerIdentifier:
    return common_pb2.ContainerIdentifier(prefix=prefix, name=name)


def workload(
    name: str,
    *,
    workload_id: str | None = None,
    args: str = SERVE_FOREVER,
    secrets_map: dict[str, str] | None = None,
    volumes: Iterable[agent_pb2.Volume] = (),
    init_containers: Iterable[agent_pb2.InitContainer] = (),
    from_registry: bool = False,
) -> agent_pb2.DeployWorkloadRequest:
    """A busybox workload labelled for the sweep (local image unless ``from_registry``)."""
    request = agent_pb2.DeployWorkloadRequest(
        id=workload_id or f"id-{name}",
        imageName=LOCAL_IMAGE[0] if not from_registry else "berth/busybox",
        tag=LOCAL_IMAGE[1],
        common=agent_pb2.CommonContainerConfig(
            name=name,
            commands=["sh", "-c"],
            args=[args],
            secrets=secrets_map or {},
            volumes=list(volumes),
            initContainers=list(init_containers),
        ),
        dagent=agent_pb2.DagentContainerConfig(labels={TEST_LABEL: "1"}),
    )
    if from_registry:
        request.registry = REGISTRY
        request.registryAuth.CopyFrom(
            agent_pb2.RegistryAuth(name="test", url=REGISTRY, user=REGISTRY_USER, password=REGISTRY_PASSWORD)
        )
    return request


def deploy(
    deployment_id: str, prefix: str, *workloads: agent_pb2.DeployWorkloadRequest
) -> agent_pb2.AgentCommand:
    return agent_pb2.AgentCommand(
        deploy=agent_pb2.DeployRequest(id=deployment_id, prefix=prefix, requests=list(workloads))
    )


def inspect(prefix: str, name: str) -> agent_pb2.AgentCommand:
    return agent_pb2.AgentCommand(
        containerInspect=agent_pb2.ContainerInspectRequest(container=container_id(prefix, name))
    )


def operate(prefix: str, name: str, operation: int) -> agent_pb2.AgentCommand:
    return agent_pb2.AgentCommand(
        containerCommand=common_pb2.ContainerCommandRequest(
            container=container_id(prefix, name),
            operation=operation,  # type: ignore[arg-type]
        )
    )


def watch(prefix: str, *, one_shot: bool = False) -> agent_pb2.AgentCommand:
    return agent_pb2.AgentCommand(
        containerState=agent_pb2.ContainerStateRequest(prefix=prefix, oneShot=one_shot)
    )


def logs(prefix: str, name: str, *, streaming: bool, tail: int = 100) -> agent_pb2.AgentCommand:
    return agent_pb2.AgentCommand(
        containerLog=agent_pb2.ContainerLogRequest(
            container=container_id(prefix, name), streaming=streaming, tail=tail
        )
    )


def delete_prefix(prefix: str) -> agent_pb2.AgentCommand:
    return agent_pb2.AgentCommand(
        deleteContainers=common_pb2.DeleteContainersRequest(
            target=common_pb2.ContainerOrPrefix(prefix=prefix)
        )
    )


# -- reading what the platform received ------------------------------------------------------------


async def deployment_stream(
    platform: FakePlatform, deployment_id: str, within_s: float = 60.0
) -> StreamRecord:
    """The DeploymentStatus call of ``deployment_id`` once it has ended."""

    def found() -> StreamRecord | None:
        for record in platform.streams_of("DeploymentStatus"):
            if record.metadata.get("dyo-deployment-id") == deployment_id and record.done.is_set():
                return record
        return None

    await platform.wait_for(lambda: found() is not None, within_s)
    record = found()
    assert record is not None
    return record


def final_status(record: StreamRecord) -> int:
    statuses = [m.deploymentStatus for m in record.messages if m.WhichOneof("data") == "deploymentStatus"]
    return statuses[-1] if statuses else common_pb2.DEPLOYMENT_STATUS_UNSPECIFIED


def state_names(record: StreamRecord) -> dict[str, int]:
    """Container name -> last reported state over every message of a ContainerState call."""
    states: dict[str, int] = {}
    for message in record.messages:
        for item in message.data:
            states[item.id.name] = item.state
    return states


# -- the engine ------------------------------------------------------------------------------------


def engine() -> docker.DockerClient:
    return docker.from_env(version="auto")


def sweep(client: docker.DockerClient, prefix: str | None = None) -> None:
    """Remove the test's containers (by prefix label and by the test label when no prefix)."""
    label = f"{PREFIX_LABEL}={prefix}" if prefix else f"{TEST_LABEL}=1"
    for summary in client.api.containers(all=True, filters={"label": label}):
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            client.api.remove_container(summary["Id"], force=True, v=True)


def containers_named(client: docker.DockerClient, fragment: str) -> list[str]:
    return [
        name.lstrip("/")
        for summary in client.api.containers(all=True, filters={"name": fragment})
        for name in summary["Names"]
    ]


async def sweep_async(prefix: str) -> None:
    def run() -> None:
        client = engine()
        try:
            sweep(client, prefix)
        finally:
            client.close()

    await asyncio.to_thread(run)
