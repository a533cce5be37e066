"""One-workload deploy through the agent: the platform's ``deploy`` command -> the SUCCESSFUL
status at the platform, the way dyrector.io's platform sees it, against the engine floor measured
in the same run (the same container created and started with the Docker SDK directly).

``berth agent`` runs as a process on the Docker runtime, connected to the test suite's fake
platform on 127.0.0.1. The image comes from the test registry with its credentials (already on the
node: Berth checks the registry for a newer one, as a platform deploy does). Rounds alternate
which side goes first; each figure is a median. The agent's first command (which builds the
runtime, see berth/agent/app.py) is reported on its own line and kept out of the median.

Target (issue 15): <= 1.05 x dagent 0.15.4's 351 ms on this machine kind, i.e. <= 369 ms.

    eval "$(tools/testenv.sh env)"; .venv/bin/python bench/agent_deploy.py [--rounds 9]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from typing import Any

import docker
import kitpath  # noqa: F401
from fakeplatform import FakePlatform
from kits.agent_process import agent_process
from kits.benchkit import SERVE_FOREVER, TEST_LABEL, engine, labels, new_prefix, remove_prefix

from berth.proto import agent_pb2, common_pb2

REGISTRY = os.environ.get("BERTH_TEST_REGISTRY", "127.0.0.1:5000")
IMAGE = os.environ.get("BERTH_TEST_IMAGE", f"{REGISTRY}/berth/busybox")
USER = os.environ.get("BERTH_TEST_REGISTRY_USER", "berth")
PASSWORD = os.environ.get("BERTH_TEST_REGISTRY_PASSWORD", "berth-registry-pass")
TAG = "1"
DAGENT_MS = 351.0
TARGET_MS = DAGENT_MS * 1.05
FINAL = frozenset({common_pb2.SUCCESSFUL, common_pb2.FAILED, common_pb2.OBSOLETE, common_pb2.DOWNGRADED})


class TimingPlatform(FakePlatform):
    """Records when each deployment's final status arrives (monotonic clock)."""

    def __init__(self) -> None:
        super().__init__()
        self.finished: dict[str, tuple[float, int, list[str]]] = {}
        self.changed = asyncio.Event()

    async def DeploymentStatus(self, request_iterator: Any, context: Any) -> common_pb2.Empty:  # type: ignore[override]
        deployment_id = dict(context.invocation_metadata() or ()).get("dyo-deployment-id", "")
        log: list[str] = []
        async for message in request_iterator:
            log.extend(message.log)
            if message.HasField("deploymentStatus") and message.deploymentStatus in FINAL:
                self.finished[deployment_id] = (time.monotonic(), message.deploymentStatus, log)
                self.changed.set()
        return common_pb2.Empty()


def deploy_command(deployment_id: str, prefix: str) -> agent_pb2.AgentCommand:
    registry, _, repository = IMAGE.partition("/")
    workload = agent_pb2.DeployWorkloadRequest(
        id="w1",
        registry=registry,
        imageName=repository,
        tag=TAG,
        registryAuth=agent_pb2.RegistryAuth(name="bench", url=registry, user=USER, password=PASSWORD),
        common=agent_pb2.CommonContainerConfig(name="web", commands=["sh", "-c"], args=[SERVE_FOREVER]),
        dagent=agent_pb2.DagentContainerConfig(labels={TEST_LABEL: "1"}),
    )
    return agent_pb2.AgentCommand(
        deploy=agent_pb2.DeployRequest(id=deployment_id, prefix=prefix, requests=[workload])
    )


async def berth_deploy(platform: TimingPlatform, prefix: str) -> float:
    deployment_id = f"bench-{prefix}"
    started = time.monotonic()
    await platform.send(deploy_command(deployment_id, prefix))
    while deployment_id not in platform.finished:
        platform.changed.clear()
        await asyncio.wait_for(platform.changed.wait(), 60)
    at, status, log = platform.finished[deployment_id]
    if status != common_pb2.SUCCESSFUL:
        raise RuntimeError(f"deployment {deployment_id} ended {status}: {log[-5:]}")
    return at - started


def floor_deploy(client: docker.DockerClient, prefix: str) -> float:
    """The engine's own cost: the same container created and started with the SDK."""
    name = f"{prefix}-web"
    started = time.monotonic()
    host = client.api.create_host_config(
        restart_policy={"Name": "unless-stopped"}, extra_hosts=["host.docker.internal:host-gateway"]
    )
    created = client.api.create_container(
        f"{IMAGE}:{TAG}",
        name=name,
        hostname=name,
        entrypoint=["sh", "-c"],
        command=[SERVE_FOREVER],
        labels=labels(prefix),
        host_config=host,
    )
    client.api.start(created["Id"])
    return time.monotonic() - started


async def measure(rounds: int) -> int:
    load_before = os.getloadavg()
    client = engine()
    platform = TimingPlatform()
    berth: list[float] = []
    floor: list[float] = []
    run_prefix = new_prefix("adep")
    try:
        async with agent_process(platform, run_prefix) as agent:
            warm = f"{run_prefix}w"
            first = await berth_deploy(agent.platform, warm)
            await asyncio.to_thread(remove_prefix, client, warm)
            for index in range(rounds):
                for side in ("floor", "berth") if index % 2 else ("berth", "floor"):
                    prefix = f"{run_prefix}{side[0]}{index}"
                    try:
                        if side == "berth":
                            berth.append(await berth_deploy(agent.platform, prefix))
                        else:
                            floor.append(await asyncio.to_thread(floor_deploy, client, prefix))
                    finally:
                        await asyncio.to_thread(remove_prefix, client, prefix)
            busy_rss_mb = agent.footprint().rss_mb
    finally:
        client.close()
    load_after = os.getloadavg()
    berth_ms, floor_ms = statistics.median(berth) * 1000, statistics.median(floor) * 1000
    load = f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}"
    print(f"one-workload deploy, {rounds} rounds; {load}")
    print(
        f"deploy command -> SUCCESSFUL at the platform: median {berth_ms:.0f} ms "
        f"(min {min(berth) * 1000:.0f}, max {max(berth) * 1000:.0f})"
    )
    print(
        f"floor, SDK create+start: median {floor_ms:.0f} ms "
        f"(min {min(floor) * 1000:.0f}, max {max(floor) * 1000:.0f})"
    )
    print(f"ratio to the floor: {berth_ms / floor_ms:.2f}; Berth adds {berth_ms - floor_ms:.0f} ms")
    print(
        f"against dagent 0.15.4's {DAGENT_MS:.0f} ms: {berth_ms / DAGENT_MS:.2f}x "
        f"(target <= 1.05x, {TARGET_MS:.0f} ms)"
    )
    print(f"the agent's first command after its start (builds the runtime): {first * 1000:.0f} ms")
    print(f"the agent's RSS after these {rounds + 1} deploys: {busy_rss_mb:.1f} MB")
    return 0 if berth_ms <= TARGET_MS else 1


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    return asyncio.run(measure(args.rounds))


if __name__ == "__main__":
    sys.exit(main())
