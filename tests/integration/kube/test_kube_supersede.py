"""A rollout being waited on never blocks the operator (real API server, pods never ready: there
is no kubelet): a delete or a shutdown arriving during the wait takes effect within a second, and
the waiting deployment ends FAILED with "superseded by …"."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
from fakeplatform import FakePlatform, PlatformServer, StreamRecord, agent_settings, running_agent
from waiting import wait_event

from berth.proto import agent_pb2, common_pb2
from berth.runtimes.kubernetes import KubernetesRuntime, resources
from berth.settings import KubernetesSettings

pytestmark = pytest.mark.kube
WITHIN_S = 1.0


def deploy_command(deployment_id: str, prefix: str) -> agent_pb2.AgentCommand:
    workload = agent_pb2.DeployWorkloadRequest(
        id="w-stuck", imageName="busybox", tag="1", common=agent_pb2.CommonContainerConfig(name="stuck")
    )
    return agent_pb2.AgentCommand(
        deploy=agent_pb2.DeployRequest(id=deployment_id, prefix=prefix, requests=[workload])
    )


def delete_command(prefix: str, whole_prefix: bool) -> agent_pb2.AgentCommand:
    workload = common_pb2.ContainerIdentifier(prefix=prefix, name="stuck")
    target = (
        common_pb2.ContainerOrPrefix(prefix=prefix)
        if whole_prefix
        else common_pb2.ContainerOrPrefix(container=workload)
    )
    return agent_pb2.AgentCommand(deleteContainers=common_pb2.DeleteContainersRequest(target=target))


def logs_of(stream: StreamRecord) -> list[str]:
    return [line for message in stream.messages for line in message.log]


async def waiting_rollout(platform: FakePlatform, prefix: str) -> StreamRecord:
    await platform.send(deploy_command("dep-stuck", prefix))
    stream = await platform.wait_stream("DeploymentStatus", within_s=20)
    await platform.wait_for(
        lambda: any(line.startswith("Waiting for the rollout") for line in logs_of(stream)), within_s=20
    )
    return stream


def waiting_settings(settings: KubernetesSettings) -> KubernetesSettings:
    return replace(settings, wait_for_rollout=True, rollout_timeout_s=120.0)


@pytest.mark.parametrize("whole_prefix", [False, True], ids=["workload", "prefix"])
async def test_delete_during_a_rollout_wait_runs_at_once(
    settings, admin, prefix, tmp_path: Path, whole_prefix: bool
) -> None:
    kube = waiting_settings(settings)
    async with PlatformServer() as server:
        platform = server.platform
        config = replace(
            agent_settings(tmp_path / "data", platform.issue_connection_token()),
            runtime="kubernetes",
            kubernetes=kube,
        )
        async with running_agent(config, runtime=KubernetesRuntime(kube)):
            await platform.wait_accepted()
            stream = await waiting_rollout(platform, prefix)
            started = time.monotonic()
            await platform.send(delete_command(prefix, whole_prefix))
            answer = await platform.wait_unary("DeleteContainers", within_s=WITHIN_S)
            took = time.monotonic() - started
            await wait_event(stream.done.wait(), WITHIN_S, "the stream to finish")
    print(f"\ndelete during a rollout wait answered in {took * 1000:.0f} ms")
    assert took < WITHIN_S
    assert answer.metadata["dyo-container-prefix"] == prefix
    assert stream.messages[-1].deploymentStatus == common_pb2.FAILED
    target = f"prefix {prefix}" if whole_prefix else f"{prefix}-stuck"
    assert any(f"superseded by deleteContainers of {target}" in line for line in logs_of(stream))
    if not whole_prefix:
        assert admin.get_or_none(resources.DEPLOYMENT, prefix, "stuck") is None


async def test_shutdown_during_a_rollout_wait_exits_at_once(settings, prefix, tmp_path: Path) -> None:
    kube = waiting_settings(settings)
    async with PlatformServer() as server:
        platform = server.platform
        config = replace(
            agent_settings(tmp_path / "data", platform.issue_connection_token()),
            runtime="kubernetes",
            kubernetes=kube,
        )
        async with running_agent(config, runtime=KubernetesRuntime(kube)) as running:
            await platform.wait_accepted()
            stream = await waiting_rollout(platform, prefix)
            started = time.monotonic()
            await platform.send(
                agent_pb2.AgentCommand(close=agent_pb2.CloseConnectionRequest(reason=agent_pb2.SHUTDOWN))
            )
            assert await running.exit_code(within_s=WITHIN_S + 1.0) == 0
            took = time.monotonic() - started
    print(f"\nclose(SHUTDOWN) during a rollout wait: agent exited in {took * 1000:.0f} ms")
    assert took < WITHIN_S
    assert stream.messages[-1].deploymentStatus == common_pb2.FAILED
    assert any("superseded by close(SHUTDOWN)" in line for line in logs_of(stream))


async def test_a_new_deployment_supersedes_the_waiting_one(settings, prefix, tmp_path: Path) -> None:
    kube = waiting_settings(settings)
    async with PlatformServer() as server:
        platform = server.platform
        config = replace(
            agent_settings(tmp_path / "data", platform.issue_connection_token()),
            runtime="kubernetes",
            kubernetes=kube,
        )
        async with running_agent(config, runtime=KubernetesRuntime(kube)):
            await platform.wait_accepted()
            first = await waiting_rollout(platform, prefix)
            started = time.monotonic()
            await platform.send(deploy_command("dep-next", prefix))
            await wait_event(first.done.wait(), WITHIN_S, "the first stream to finish")
            second = await platform.wait_stream("DeploymentStatus", count=2, within_s=WITHIN_S)
            await platform.wait_for(
                lambda: any(line.startswith("Waiting for the rollout") for line in logs_of(second)),
                within_s=WITHIN_S * 5,
            )
            took = time.monotonic() - started
    assert first.messages[-1].deploymentStatus == common_pb2.FAILED
    assert any("superseded by deployment dep-next" in line for line in logs_of(first))
    print(f"\na new deployment took over a waiting one in {took * 1000:.0f} ms")
