"""End to end through the agent: a fake platform (real gRPC server) sends deploy and state
commands to an in-process agent running the Kubernetes runtime on the real API server. Measures
the time from the deploy command to SUCCESSFUL (rollout wait off) for a workload with a Service
and an Ingress."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import replace
from pathlib import Path

import pytest
from fakeplatform import PlatformServer, agent_settings, running_agent
from waiting import wait_event

from berth.proto import agent_pb2, common_pb2
from berth.runtimes.kubernetes import KubernetesRuntime, resources

pytestmark = pytest.mark.kube
ROUNDS = 5


def deploy_command(deployment_id: str, prefix: str) -> agent_pb2.AgentCommand:
    workload = agent_pb2.DeployWorkloadRequest(
        id="w-web",
        imageName="nginx",
        tag="1.25",
        common=agent_pb2.CommonContainerConfig(
            name="web",
            ports=[agent_pb2.Port(internal=80, external=8080)],
            expose=common_pb2.EXPOSE,
            routing=common_pb2.Routing(domain="web.example.test", path="/"),
            environment={"MODE": "prod"},
        ),
    )
    return agent_pb2.AgentCommand(
        deploy=agent_pb2.DeployRequest(id=deployment_id, prefix=prefix, requests=[workload])
    )


async def test_deploy_to_successful_through_the_agent(settings, admin, prefix, tmp_path: Path) -> None:
    durations = []
    async with PlatformServer() as server:
        platform = server.platform
        token = platform.issue_connection_token()
        agent_config = replace(
            agent_settings(tmp_path / "data", token), runtime="kubernetes", kubernetes=settings
        )
        runtime = KubernetesRuntime(settings)
        async with running_agent(agent_config, runtime=runtime):
            await platform.wait_accepted()
            for round_ in range(ROUNDS):
                started = time.perf_counter()
                await platform.send(deploy_command(f"dep-{round_}", prefix))
                stream = await platform.wait_stream("DeploymentStatus", count=round_ + 1, within_s=20)
                await wait_event(stream.done.wait(), 20, "the stream to finish")
                durations.append(time.perf_counter() - started)
                last = stream.messages[-1]
                assert last.deploymentStatus == common_pb2.SUCCESSFUL, [m for m in stream.messages]
                logs = [line for m in stream.messages for line in m.log]
                assert any(line.startswith("Applied Ingress") for line in logs)
    assert (await asyncio.to_thread(admin.get, resources.SERVICE, prefix, "web"))["spec"]["ports"][0][
        "port"
    ] == 80
    assert (await asyncio.to_thread(admin.get, resources.INGRESS, prefix, "web"))["spec"]["rules"][0][
        "host"
    ] == "web.example.test"
    dep = await asyncio.to_thread(admin.get, resources.DEPLOYMENT, prefix, "web")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "docker.io/library/nginx:1.25"
    print(
        "deploy command -> SUCCESSFUL (Service + Ingress, rollout wait off): "
        f"first {durations[0] * 1000:.0f} ms, "
        f"median of {ROUNDS} {statistics.median(durations) * 1000:.0f} ms, max {max(durations) * 1000:.0f} ms"
    )
    assert statistics.median(durations) < 2.0
