"""On our own (embedded) platform: the platform process goes away in the middle of a deployment
and comes back (``BERTH_FAULT_OUTAGE_S``, 8 s by default). The Berth agent on the real Docker
runtime finishes the deployment on the node, reconnects with its connection token, and the
outcome is visible afterwards on the platform (its container list of the node: every instance
running)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from fakeplatform import running_agent
from kits.fault_kit import REGISTRY, REGISTRY_PASSWORD, REGISTRY_USER, SERVE_FOREVER, docker_agent_settings
from kits.platform_harness import TEMPLATES, make_config
from waiting import wait_for

from berth.platform.app import PlatformServer as EmbeddedPlatform

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

OUTAGE_S = float(os.environ.get("BERTH_FAULT_OUTAGE_S", "8"))
INSTANCES = 6


async def poll(check: Any, within_s: float, what: str) -> Any:
    return await wait_for(check, within_s, f"timed out waiting for {what}", interval_s=0.1)


def api(started: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"{started.http_url}/api/default",
        headers={"authorization": f"Bearer {started.api_token}"},
        timeout=10,
    )


async def test_platform_restart_mid_deployment_shows_the_outcome(
    tmp_path: Path, prefix: str, docker_client: docker.DockerClient
) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    for name, text in TEMPLATES.items():
        (templates / name).write_text(text)
    server = EmbeddedPlatform(make_config(tmp_path / "platform", templates))
    started = await server.start()
    try:
        async with api(started) as client:
            node_id = (await client.post("/nodes", json={"name": "node-a"})).json()["id"]
            await client.post(f"/nodes/{node_id}/script", json={"type": "docker", "scriptType": "shell"})
            script = (await client.get(f"/nodes/{node_id}/script", headers={"authorization": ""})).text
            token = next(x for x in script.splitlines() if x.startswith("GRPC_TOKEN=")).split("'")[1]
            registry = await client.post(
                "/registries",
                json={"name": "local", "url": REGISTRY, "user": REGISTRY_USER, "password": REGISTRY_PASSWORD},
            )
            instance = {
                "image": "berth/busybox",
                "tag": "1",
                "registryId": registry.json()["id"],
                "config": {
                    "common": {"name": "", "commands": ["sh", "-c"], "args": [SERVE_FOREVER]},
                    "dagent": {"labels": {"io.berth.test": "1"}},
                },
            }
            instances = []
            for index in range(INSTANCES):
                item = {**instance, "config": {**instance["config"]}}
                item["config"]["common"] = {**instance["config"]["common"], "name": f"w{index}"}
                instances.append(item)
            created = await client.post(
                "/deployments", json={"nodeId": node_id, "prefix": prefix, "instances": instances}
            )
            assert created.status_code == 201, created.text
            deployment_id = created.json()["id"]

        settings = docker_agent_settings(tmp_path / "agent", token, backoff_initial_s=0.5, backoff_max_s=2.0)
        async with running_agent(settings) as running:
            async with api(started) as client:

                async def connected() -> bool:
                    return bool((await client.get(f"/nodes/{node_id}")).json()["status"] == "connected")

                await poll(connected, 20, "the node to connect")
                assert (await client.post(f"/deployments/{deployment_id}/start")).status_code == 204

            def first_container() -> bool:
                return bool(docker_client.api.containers(all=True, filters={"name": f"{prefix}-w"}))

            await poll(lambda: asyncio.to_thread(first_container), 60, "the deployment to begin")
            await server.stop()
            await asyncio.sleep(OUTAGE_S)  # the point: an outage of fixed length
            server = EmbeddedPlatform(started.config)
            started = await server.start()
            async with api(started) as client:
                await poll(connected, 30, "the node to reconnect")

                async def all_running() -> list[dict[str, Any]] | None:
                    listed = await client.get(f"/nodes/{node_id}/{prefix}/containers")
                    items: list[dict[str, Any]] = listed.json() if listed.status_code == 200 else []
                    states = sorted((c["id"]["name"], c["state"]) for c in items)
                    return items if states == [(f"w{i}", "running") for i in range(INSTANCES)] else None

                await poll(all_running, 60, "the platform to list every container running")
                record = (await client.get(f"/deployments/{deployment_id}")).json()
            # The deployment record keeps the status it had when the stream broke (the platform
            # does not reconcile it yet); the node's container list is the visible outcome.
            print(f"deployment record after the outage: {record['status']}")
            names = {
                name.lstrip("/")
                for summary in docker_client.api.containers(filters={"label": "io.berth.test=1"})
                for name in summary["Names"]
            }
            assert {f"{prefix}-w{i}" for i in range(INSTANCES)} <= names
            assert not running.task.done()
    finally:
        await server.stop()
