"""close{SHUTDOWN} on Kubernetes (§13.3, §17 #30): the agent scales its own Deployment to 0 before
it exits 0, so it is not restarted; when it cannot, it says why and still exits 0. Through the
fake platform (real gRPC) to an in-process agent on the real API server."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest
import structlog
from fakeplatform import PlatformServer, agent_settings, running_agent
from kits.kube_objects import AGENT_DEPLOYMENT, agent_deployment, create_namespace

from berth.errors import NotFound, PermanentCommandError
from berth.proto import agent_pb2
from berth.runtimes.kubernetes import KubernetesRuntime, resources
from berth.runtimes.kubernetes.api import KubeApi
from berth.runtimes.kubernetes.selfscale import KubernetesSelfScaler
from berth.settings import KubernetesSettings

pytestmark = pytest.mark.kube

SHUTDOWN = agent_pb2.AgentCommand(close=agent_pb2.CloseConnectionRequest(reason=agent_pb2.SHUTDOWN))


async def shutdown_agent(settings: KubernetesSettings, tmp_path: Path) -> int:
    """Connect an agent with these Kubernetes settings, send close{SHUTDOWN}, return its exit code."""
    async with PlatformServer() as server:
        platform = server.platform
        config = replace(
            agent_settings(tmp_path / "data", platform.issue_connection_token()),
            runtime="kubernetes",
            kubernetes=settings,
        )
        async with running_agent(config, runtime=KubernetesRuntime(settings)) as running:
            await platform.wait_accepted()
            await platform.send(SHUTDOWN)
            return await running.exit_code(within_s=15)


async def test_shutdown_scales_own_deployment_to_zero_then_exits_0(
    settings: KubernetesSettings, admin: KubeApi, prefix: str, tmp_path: Path
) -> None:
    await asyncio.to_thread(create_namespace, admin, prefix)
    await asyncio.to_thread(admin.apply, agent_deployment(prefix, replicas=2))
    own = replace(settings, deployment_name=AGENT_DEPLOYMENT, deployment_namespace=prefix)

    assert await shutdown_agent(own, tmp_path) == 0

    deployment = await asyncio.to_thread(admin.get, resources.DEPLOYMENT, prefix, AGENT_DEPLOYMENT)
    assert deployment["spec"]["replicas"] == 0


async def test_shutdown_without_own_deployment_logs_why_and_still_exits_0(
    settings: KubernetesSettings, admin: KubeApi, prefix: str, tmp_path: Path
) -> None:
    await asyncio.to_thread(create_namespace, admin, prefix)
    # §17 #30: the reference manifest put the pod name here; no such Deployment exists.
    own = replace(settings, deployment_name=f"{AGENT_DEPLOYMENT}-7d9f8-abcde", deployment_namespace=prefix)

    with structlog.testing.capture_logs() as logs:
        assert await shutdown_agent(own, tmp_path) == 0

    failures = [entry for entry in logs if entry["event"] == "self_scale_down_failed"]
    assert len(failures) == 1, logs
    assert f"{prefix}/{AGENT_DEPLOYMENT}-7d9f8-abcde does not exist" in failures[0]["reason"]


async def test_scaler_refuses_clearly_without_a_deployment_name(settings: KubernetesSettings) -> None:
    with pytest.raises(PermanentCommandError, match="CRANE_DEPLOYMENT_NAME is not set"):
        await KubernetesSelfScaler(settings).scale_down_self()


async def test_scaler_namespace_falls_back_to_the_secret_namespace(
    settings: KubernetesSettings, admin: KubeApi, prefix: str
) -> None:
    await asyncio.to_thread(create_namespace, admin, prefix)
    await asyncio.to_thread(admin.apply, agent_deployment(prefix, replicas=1))
    scaler = KubernetesSelfScaler(
        replace(settings, deployment_name=AGENT_DEPLOYMENT, secret_namespace=prefix)
    )
    assert scaler.target == (prefix, AGENT_DEPLOYMENT)

    await scaler.scale_down_self()

    deployment = await asyncio.to_thread(admin.get, resources.DEPLOYMENT, prefix, AGENT_DEPLOYMENT)
    assert deployment["spec"]["replicas"] == 0
    missing = KubernetesSelfScaler(replace(settings, deployment_name="absent", secret_namespace=prefix))
    with pytest.raises(NotFound, match="absent does not exist"):
        await missing.scale_down_self()
