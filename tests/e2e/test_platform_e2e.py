"""Issue 4 end to end: the embedded platform drives a real ``berth agent`` process on the real
Docker engine and the private registry."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from e2e_stack import (
    REGISTRY,
    REGISTRY_PASSWORD,
    REGISTRY_USER,
    TEST_LABEL,
    AgentFactory,
    api_client,
    eventually,
    new_node,
    platform_config,
    start_platform,
    wait_for_engine,
)

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

SECRET_VALUE = "e2e-" + secrets.token_hex(8)


def _stack(node_id: str, prefix: str, registry_id: str) -> dict[str, Any]:
    image = f"{REGISTRY}/berth/busybox".removeprefix(f"{REGISTRY}/")
    return {
        "nodeId": node_id,
        "prefix": prefix,
        "instances": [
            {
                "image": image,
                "tag": "1",
                "registryId": registry_id,
                "config": {
                    "common": {
                        "name": "web",
                        "commands": ["sh", "-c"],
                        "args": ["trap 'exit 0' TERM; httpd -f -p 8080 & wait $!"],
                    },
                    "dagent": {"labels": TEST_LABEL},
                },
            },
            {
                "image": image,
                "tag": "1",
                "registryId": registry_id,
                "config": {
                    "common": {
                        "name": "logger",
                        "commands": ["sh", "-c"],
                        "args": [
                            'i=0; while true; do i=$((i+1)); echo "line $i $APP_SECRET"; sleep 0.5; done'
                        ],
                        "secrets": {"APP_SECRET": SECRET_VALUE},
                    },
                    "dagent": {"labels": TEST_LABEL},
                },
            },
        ],
    }


async def _ws_messages(
    url: str, token: str, count: int, match: Any, timeout_s: float = 30
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    async with websockets.connect(url, additional_headers={"authorization": f"Bearer {token}"}) as ws:
        async with asyncio.timeout(timeout_s):
            while len(found) < count:
                message = json.loads(await ws.recv())
                if match(message):
                    found.append(message)
    return found


async def test_platform_drives_a_real_agent(tmp_path: Path, prefix: str, agents: AgentFactory) -> None:
    config = platform_config(tmp_path / "platform")
    server, started = await start_platform(config)
    try:
        async with api_client(started) as api:
            node_id, install_token = await new_node(api, "e2e-node")
            agent = agents("agent", install_token, config)
            await wait_for_engine()
            await agent.start()

            async def node_status() -> str:
                return str((await api.get(f"/nodes/{node_id}")).json()["status"])

            await eventually("agent connected", lambda: _equals(node_status, "connected"))
            token_file = tmp_path / "agent" / "token.jwt"
            assert token_file.is_file() and token_file.stat().st_mode & 0o777 == 0o600
            assert (await api.get(f"/nodes/{node_id}")).json()["hasToken"] is True

            # a reused install token is refused: the second agent gives up
            intruder = agents("intruder", install_token, config)
            await intruder.start()
            await intruder.wait_exit(30)
            assert await node_status() == "connected"

            registry = await api.post(
                "/registries",
                json={"name": "e2e", "url": REGISTRY, "user": REGISTRY_USER, "password": REGISTRY_PASSWORD},
            )
            created = await api.post("/deployments", json=_stack(node_id, prefix, registry.json()["id"]))
            assert created.status_code == 201, created.text
            deployment_id = created.json()["id"]
            ws_base = started.http_url.replace("http", "ws", 1) + "/api/default/ws"
            events_task = asyncio.create_task(
                _ws_messages(
                    f"{ws_base}/deployments/{deployment_id}/events",
                    started.api_token,
                    1,
                    lambda m: m.get("type") == "end",
                ),
                name="e2e-deployment-events",
            )
            await asyncio.sleep(0.3)
            assert (await api.post(f"/deployments/{deployment_id}/start")).status_code == 204
            end = await asyncio.wait_for(events_task, 120)
            assert end == [{"type": "end", "status": "successful"}], agent.log_text()[-3000:]
            events = (await api.get(f"/deployments/{deployment_id}/log")).json()["items"]
            assert [e["containerState"]["state"] for e in events if e["type"] == "containerState"][-2:] == [
                "running",
                "running",
            ]
            assert events[-1]["deploymentStatus"] == "successful"

            # states and logs over the WebSocket
            states = await _ws_messages(
                f"{ws_base}/nodes/{node_id}/containers?prefix={prefix}",
                started.api_token,
                1,
                lambda m: m.get("type") == "containers" and len(m["items"]) >= 2,
            )
            assert {i["id"]["name"]: i["state"] for i in states[0]["items"]} == {
                "web": "running",
                "logger": "running",
            }
            lines = await _ws_messages(
                f"{ws_base}/nodes/{node_id}/{prefix}/containers/logger/log?tail=5",
                started.api_token,
                3,
                lambda m: m.get("type") == "log",
            )
            # the secret was delivered encrypted and is plain text only inside the container
            assert all(SECRET_VALUE in m["line"] for m in lines)
            shared = (tmp_path / "agent").rglob("*")
            assert all(SECRET_VALUE not in p.read_text(errors="ignore") for p in shared if p.is_file())

            await _container_operations(api, node_id, prefix)

            # platform restart: the agent reconnects with its connection token, nothing is lost
            await server.stop()
            server, started = await start_platform(started.config)
            async with api_client(started) as api2:

                async def status_after_restart() -> str:
                    return str((await api2.get(f"/nodes/{node_id}")).json()["status"])

                await eventually(
                    "reconnect after restart", lambda: _equals(status_after_restart, "connected"), 45
                )
                kept = (await api2.get(f"/deployments/{deployment_id}")).json()
                assert kept["status"] == "successful"
                assert (await api2.get(f"/deployments/{deployment_id}/log")).json()["items"] == events
                listed = (await api2.get(f"/nodes/{node_id}/{prefix}/containers")).json()
                assert {c["id"]["name"] for c in listed} == {"logger"}

                # revoke: the agent deletes its token and exits
                assert (await api2.delete(f"/nodes/{node_id}/token")).status_code == 204
                assert await agent.wait_exit(30) == 0
                assert not token_file.exists()
    finally:
        await server.stop()


async def _equals(read: Any, expected: str) -> bool:
    return bool(await read() == expected)


async def _container_operations(api: httpx.AsyncClient, node_id: str, prefix: str) -> None:
    base = f"/nodes/{node_id}/{prefix}/containers"
    inspect = await api.get(f"{base}/web/inspect")
    assert inspect.status_code == 200 and inspect.json()["Config"]["Labels"]["io.berth.test"] == "1"
    env = inspect.json()["Config"]["Env"]
    assert not any(SECRET_VALUE in item for item in env)
    logger_env = (await api.get(f"{base}/logger/inspect")).json()["Config"]["Env"]
    # the secret is in the container (its log lines show it) but inspect masks it
    assert "APP_SECRET=******" in logger_env and not any(SECRET_VALUE in item for item in logger_env)
    assert (await api.get(f"{base}/ghost/inspect")).status_code == 404
    tail = await api.get(f"{base}/logger/log", params={"take": 2})
    assert tail.status_code == 200 and len(tail.json()["logs"]) == 2

    async def state_of(name: str) -> str:
        response = await api.get(base)
        if response.status_code != 200:
            return f"unknown (HTTP {response.status_code})"
        items = response.json()
        return next((str(i["state"]) for i in items if i["id"]["name"] == name), "absent")

    async def becomes(name: str, state: str) -> bool:
        return await state_of(name) == state

    assert (await api.post(f"{base}/web/stop")).status_code == 204
    await eventually("web stopped", lambda: becomes("web", "exited"))
    assert (await api.post(f"{base}/web/start")).status_code == 204
    await eventually("web started", lambda: becomes("web", "running"))
    assert (await api.post(f"{base}/web/restart")).status_code == 204
    await eventually("web running after restart", lambda: becomes("web", "running"))
    assert (await api.delete(f"{base}/web")).status_code == 204
    await eventually("web deleted", lambda: becomes("web", "absent"))
    assert (await api.get(f"{base}/web/inspect")).status_code == 404
    containers = await asyncio.to_thread(
        subprocess.run,
        ["docker", "ps", "-a", "--filter", f"name=^{prefix}-web$", "-q"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert containers.stdout.strip() == ""
