"""Webhook notifications against a real HTTP receiver on 127.0.0.1: the three shapes, the events
(node connected and disconnected, deployment successful and failed, agent update aborted), bounded
retries with backoff, no secret in any payload, and a receiver that hangs does not slow the API."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from platform_fake_agent import FakeAgent
from platform_harness import make_config, secret_deployment
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from berth.platform.app import PlatformServer
from berth.platform.services.notifications import (
    QUEUE_SIZE,
    Notification,
    Webhook,
    WebhookSender,
    parse_webhook,
)
from berth.proto import agent_pb2, common_pb2

SECRET = "s3cret-value-never-sent"
REGISTRY_PASSWORD = "registry-password-never-sent"


class Receiver:
    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.arrived = asyncio.Event()
        self.flaky_calls = 0
        self.release = asyncio.Event()

    async def record(self, request: Request) -> Response:
        path = request.url.path.strip("/")
        if path == "flaky":
            self.flaky_calls += 1
            if self.flaky_calls <= 2:
                return JSONResponse({"error": "try later"}, status_code=503)
        if path == "gone":
            return JSONResponse({"error": "no such hook"}, status_code=404)
        body = json.loads(await request.body())
        if path == "hang":
            await self.release.wait()
        self.received.append((path, body))
        self.arrived.set()
        return Response(status_code=204)

    def of(self, path: str) -> list[dict[str, Any]]:
        return [body for p, body in self.received if p == path]

    async def until(self, path: str, predicate: Any, timeout_s: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout_s):
            while True:
                for body in self.of(path):
                    if predicate(body):
                        return body
                self.arrived.clear()
                await self.arrived.wait()


@asynccontextmanager
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    recv = Receiver()
    app = Starlette(routes=[Route("/{path}", recv.record, methods=["POST"])])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]), name="test-webhook-receiver")
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no event for it
        await asyncio.sleep(0.01)
    try:
        yield recv, f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        recv.release.set()
        server.should_exit = True
        await task
        sock.close()


async def test_webhooks_in_three_shapes_with_retries_and_no_secret(tmp_path: Path, templates: Path) -> None:
    async with receiver() as (recv, base):
        config = make_config(
            tmp_path / "data",
            templates,
            webhooks=(
                f"{base}/generic",
                f"slack={base}/slack",
                f"discord={base}/discord",
                f"{base}/flaky",
                f"{base}/gone",
                f"{base}/hang",
            ),
            webhook_attempts=3,
            webhook_backoff_s=0.05,
        )
        server = PlatformServer(config)
        started = await server.start()
        try:
            async with httpx.AsyncClient(
                base_url=f"{started.http_url}/api/default",
                headers={"authorization": f"Bearer {started.api_token}"},
                timeout=10,
            ) as api:
                node_id = (await api.post("/nodes", json={"name": "hooked"})).json()["id"]
                await api.post(f"/nodes/{node_id}/script", json={"type": "docker"})
                script = await api.get(f"/nodes/{node_id}/script", headers={"authorization": ""})
                token = next(x for x in script.text.splitlines() if x.startswith("GRPC_TOKEN=")).split("'")[1]
                agent = FakeAgent(started.config.advertise, token, node_id)
                await agent.install()
                try:
                    connected = await recv.until("generic", lambda b: b["event"] == "node.connected")
                    assert connected["data"] == {"node": {"id": node_id, "name": "hooked"}}
                    assert connected["text"] == "Node hooked connected" and connected["at"].endswith("Z")
                    assert (await recv.until("slack", lambda b: True)) == {"text": "Node hooked connected"}
                    assert (await recv.until("discord", lambda b: True)) == {
                        "content": "Node hooked connected",
                        "username": "Berth",
                    }
                    # 503 twice, then delivered on the third and last attempt
                    await recv.until("flaky", lambda b: b["event"] == "node.connected")
                    assert recv.flaky_calls == 3

                    # a receiver that hangs does not slow the platform down
                    began = time.monotonic()
                    for _ in range(5):
                        assert (await api.get("/nodes")).status_code == 200
                    assert time.monotonic() - began < 2.0

                    registry = await api.post(
                        "/registries",
                        json={
                            "name": "r",
                            "url": "127.0.0.1:5000",
                            "user": "u",
                            "password": REGISTRY_PASSWORD,
                        },
                    )
                    for outcome in (common_pb2.SUCCESSFUL, common_pb2.FAILED):
                        body = secret_deployment(
                            node_id,
                            registry.json()["id"],
                            SECRET,
                            SECRET,
                            prefix="shop",
                            image="berth/busybox",
                            name="web",
                        )
                        created = await api.post("/deployments", json=body)
                        deployment_id = created.json()["id"]
                        assert (await api.post(f"/deployments/{deployment_id}/start")).status_code == 204
                        command = await agent.next_command()
                        assert command.deploy.id == deployment_id
                        await agent.send_deploy_status(
                            deployment_id, [common_pb2.DeploymentStatusMessage(deploymentStatus=outcome)]
                        )
                    ok = await recv.until("generic", lambda b: b["event"] == "deployment.successful")
                    assert (
                        ok["data"]["deployment"]["prefix"] == "shop"
                        and ok["data"]["node"]["name"] == "hooked"
                    )
                    failed = await recv.until("generic", lambda b: b["event"] == "deployment.failed")
                    assert failed["text"] == "Deployment of shop on hooked failed"
                    assert (await recv.until("slack", lambda b: "failed" in b["text"]))["text"] == failed[
                        "text"
                    ]

                    assert (await api.post(f"/nodes/{node_id}/update")).status_code == 204
                    assert (await agent.next_command()).HasField("update")
                    await agent.stub.AbortUpdate(
                        agent_pb2.AgentAbortUpdate(error="no self-update here"), metadata=agent.metadata()
                    )
                    aborted = await recv.until("generic", lambda b: b["event"] == "agent.update_failed")
                    assert aborted["data"]["error"] == "no self-update here"
                finally:
                    await agent.close()
                await recv.until("discord", lambda b: b["content"] == "Node hooked disconnected")
        finally:
            await server.stop()
        everything = json.dumps(recv.received)
        for secret in (SECRET, REGISTRY_PASSWORD, started.api_token, token):
            assert secret not in everything
        assert recv.of("gone") == []  # a 404 is not retried and nothing was recorded


async def test_the_queue_is_bounded_and_counts_what_it_drops() -> None:
    sender = WebhookSender([Webhook("http://127.0.0.1:9/none")], attempts=1, backoff_s=0.01)
    note = Notification(event="node.connected", text="x", data={}, at=0.0)
    for _ in range(QUEUE_SIZE + 3):
        sender.submit(note)  # not started: nothing is delivered, the queue fills up
    assert sender.dropped == 3
    assert WebhookSender([], 1, 0.1).dropped == 0


def test_webhook_specs() -> None:
    assert parse_webhook("https://hooks.example/x") == Webhook("https://hooks.example/x", "generic")
    assert parse_webhook("slack=https://hooks.example/x").shape == "slack"
    assert parse_webhook("discord=http://127.0.0.1:1/y").shape == "discord"
    for bad in ("ftp://x/y", "slack=", "nohost"):
        try:
            parse_webhook(bad)
        except ValueError:
            continue
        raise AssertionError(bad)
