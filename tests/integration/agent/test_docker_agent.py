"""The agent end to end on the real Docker engine and registry: the fake platform deploys an
image from the authenticated registry with an encrypted secret, then lists, inspects, reads logs
and deletes — every answer through the agent's gRPC session."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pysequoia
import pytest
from fakeplatform import FakePlatform, PlatformServer, RunningAgent, agent_settings, running_agent
from waiting import wait_event, wait_for

from berth.proto import agent_pb2, common_pb2
from berth.settings import DockerSettings

pytestmark = pytest.mark.docker

REGISTRY = os.environ.get("BERTH_TEST_REGISTRY", "127.0.0.1:5000")
IMAGE = os.environ.get("BERTH_TEST_IMAGE", f"{REGISTRY}/berth/busybox")
USER = os.environ.get("BERTH_TEST_REGISTRY_USER", "berth")
PASSWORD = os.environ.get("BERTH_TEST_REGISTRY_PASSWORD", "berth-registry-pass")


def _sweep(client: docker.DockerClient, prefix: str) -> None:
    for container in client.containers.list(
        all=True, filters={"label": f"org.dyrectorio.container.prefix={prefix}"}
    ):
        container.remove(force=True)


@pytest.fixture
def prefix() -> Iterator[str]:
    client = docker.from_env()
    value = f"ba{secrets.token_hex(3)}"
    try:
        yield value
    finally:
        _sweep(client, value)
        client.close()


@dataclass
class DockerAgent:
    platform: FakePlatform
    running: RunningAgent


@pytest.fixture
async def docker_agent(tmp_path: Path) -> AsyncIterator[DockerAgent]:
    from berth.runtimes.docker import DockerRuntime

    data = tmp_path / "data"
    async with PlatformServer() as server:
        settings = agent_settings(data, server.platform.issue_connection_token())
        runtime = DockerRuntime(
            DockerSettings(data_mount_path=data, internal_mount_path=data, stop_grace_s=1.0)
        )
        async with running_agent(settings, runtime=runtime) as running:
            await server.platform.wait_accepted(within_s=20)
            yield DockerAgent(server.platform, running)


async def test_deploy_list_inspect_logs_delete_on_docker(docker_agent: DockerAgent, prefix: str) -> None:
    platform, agent = docker_agent.platform, docker_agent.running.agent
    assert agent.key is not None
    cipher = pysequoia.encrypt(
        b"from-the-platform", [pysequoia.Cert.from_bytes(agent.key.public_key.encode())]
    )
    registry, _, repository = IMAGE.partition("/")
    workload = agent_pb2.DeployWorkloadRequest(
        id="w1",
        registry=registry,
        imageName=repository,
        tag="1",
        registryAuth=agent_pb2.RegistryAuth(name="test", url=registry, user=USER, password=PASSWORD),
        common=agent_pb2.CommonContainerConfig(
            name="web",
            commands=["sh", "-c"],
            args=['echo "secret=$SECRET"; trap "exit 0" TERM; while true; do sleep 0.1; done'],
            secrets={"SECRET": cipher.decode()},
        ),
        dagent=agent_pb2.DagentContainerConfig(labels={"io.berth.test": "1"}),
    )
    await platform.send(
        agent_pb2.AgentCommand(
            deploy=agent_pb2.DeployRequest(id="d-docker", prefix=prefix, requests=[workload])
        )
    )
    status = await platform.wait_stream("DeploymentStatus")
    await wait_event(status.done.wait(), 90, "the status stream to finish")
    final = status.messages[-1]
    assert final.deploymentStatus == common_pb2.SUCCESSFUL, [list(m.log) for m in status.messages]
    target = common_pb2.ContainerIdentifier(prefix=prefix, name="web")

    await platform.send(
        agent_pb2.AgentCommand(containerState=agent_pb2.ContainerStateRequest(prefix=prefix, oneShot=True))
    )
    state = await platform.wait_stream("ContainerState")
    await wait_event(state.done.wait(), 20, "the state stream to finish")
    items = [item for message in state.messages for item in message.data]
    assert [(i.id.prefix, i.id.name, i.state) for i in items] == [(prefix, "web", common_pb2.RUNNING)]

    await platform.send(
        agent_pb2.AgentCommand(containerInspect=agent_pb2.ContainerInspectRequest(container=target))
    )
    inspect = await platform.wait_unary("ContainerInspect", within_s=10)
    assert json.loads(inspect.message.data)["Name"] == f"/{prefix}-web"

    async def logged() -> bool:
        """The container prints its line as it starts, which a busy engine may not have logged yet."""
        asked = len(platform.calls("ContainerLog"))
        await platform.send(
            agent_pb2.AgentCommand(containerLog=agent_pb2.ContainerLogRequest(container=target, tail=10))
        )
        logs = await platform.wait_unary("ContainerLog", count=asked + 1, within_s=10)
        return any(line.rstrip().endswith("secret=from-the-platform") for line in logs.message.logs)

    await wait_for(logged, 10, "the container's line in the agent's log answer", interval_s=0.2)

    await platform.send(
        agent_pb2.AgentCommand(
            listSecrets=agent_pb2.ListSecretsRequest(target=common_pb2.ContainerOrPrefix(container=target))
        )
    )
    listed = await platform.wait_unary("SecretList", within_s=10)
    assert list(listed.message.keys) == ["SECRET"]

    await platform.send(
        agent_pb2.AgentCommand(
            deleteContainers=common_pb2.DeleteContainersRequest(
                target=common_pb2.ContainerOrPrefix(prefix=prefix)
            )
        )
    )
    deleted = await platform.wait_unary("DeleteContainers", within_s=30)
    assert deleted.metadata["dyo-container-prefix"] == prefix
    assert platform.calls("CommandError") == []
