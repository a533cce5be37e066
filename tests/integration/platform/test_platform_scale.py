"""A large deployment ends in agreement: a memory-runtime agent deploys every instance, the
platform records every instance's state and the final status, and stays responsive meanwhile.
(``bench/platform_scale.py`` runs the 2,000-instance case and prints its figures.)"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest
from kits.platform_harness import Harness
from waiting import wait_event, wait_for

INSTANCES = int(os.environ.get("BERTH_TEST_SCALE_INSTANCES", "300"))


@pytest.mark.parametrize("platform", [{"max_instances": 2000}], indirect=True)
async def test_a_large_deployment_records_every_instance(platform: Harness, tmp_path: Path) -> None:
    api = platform.api
    node_id = await platform.create_node("scale")
    token = (await api.post(f"/nodes/{node_id}/script", json={"type": "docker"})).json()["installToken"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BERTH_", "GRPC_", "DEBUG"))}
    env.update(
        GRPC_TOKEN=token,
        DEBUG="true",
        BERTH_RUNTIME="memory",
        DATA_MOUNT_PATH=str(tmp_path / "agent"),
        BERTH_HEALTH_SOCKET=str(tmp_path / "health.sock"),
        BERTH_LOG_FORMAT="json",
        BERTH_LOG_LEVEL="warning",
    )
    agent = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "berth", "agent", env=env, stdout=asyncio.subprocess.DEVNULL
    )
    try:

        async def connected() -> bool:
            return bool((await api.get(f"/nodes/{node_id}")).json()["status"] == "connected")

        await wait_for(connected, 30, "the memory-runtime agent connected")
        instances = [{"image": "busybox", "config": {"common": {"name": f"w{i}"}}} for i in range(INSTANCES)]
        created = await api.post(
            "/deployments", json={"nodeId": node_id, "prefix": "s", "instances": instances}
        )
        assert created.status_code == 201, created.text
        deployment_id = created.json()["id"]
        started = time.monotonic()
        assert (await api.post(f"/deployments/{deployment_id}/start")).status_code == 204
        health_s: list[float] = []

        async def ended_with_the_platform_responsive() -> bool:
            probe = time.monotonic()
            assert (await api.get(f"{platform.started.http_url}/api/health")).status_code == 200
            health_s.append(time.monotonic() - probe)
            status = (await api.get(f"/deployments/{deployment_id}")).json()["status"]
            return status in ("successful", "failed")

        await wait_for(ended_with_the_platform_responsive, 120, "the deployment to reach a final status")
        worst_health_s = max(health_s)
        took_s = time.monotonic() - started
        deployment = (await api.get(f"/deployments/{deployment_id}")).json()
        assert deployment["status"] == "successful"
        states = [i["state"] for i in deployment["instances"]]
        assert len(states) == INSTANCES and None not in states, states[:5]
        health_ms = worst_health_s * 1000
        print(
            f"{INSTANCES} instances: final status after {took_s:.2f} s, worst /api/health {health_ms:.0f} ms"
        )
        assert worst_health_s < 1.0
    finally:
        agent.terminate()
        await wait_event(agent.wait(), 30, "the agent process to exit")
