"""Container operations through the HTTP API and the WebSocket feeds, answered by a fake agent."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import websockets
from kits.platform_fake_agent import FakeAgent, state_item
from kits.platform_harness import Harness
from kits.platform_responder import Responder
from waiting import wait_event, wait_for

from berth.proto import agent_pb2, common_pb2

PREFIX = "shop"


@asynccontextmanager
async def connected(platform: Harness, names: list[str]) -> AsyncIterator[tuple[str, Responder]]:
    node_id = await platform.create_node()
    agent = FakeAgent(platform.grpc_address, await platform.install_token(node_id), node_id)
    await agent.install()
    try:
        async with Responder(agent, PREFIX, names) as responder:
            yield node_id, responder
    finally:
        await agent.close()


async def test_commands_need_a_connected_node(platform: Harness) -> None:
    node_id = await platform.create_node()
    response = await platform.api.get(f"/nodes/{node_id}/{PREFIX}/containers")
    assert response.status_code == 409
    assert (await platform.api.get(f"/nodes/nope/{PREFIX}/containers")).status_code == 404
    assert (await platform.api.post(f"/nodes/{node_id}/kick")).status_code == 409


async def test_callbacks_through_the_api(platform: Harness) -> None:
    async with connected(platform, ["web", "worker"]) as (node_id, responder):
        base = f"/nodes/{node_id}/{PREFIX}/containers"
        listed = await platform.api.get(base)
        assert listed.status_code == 200
        assert [c["id"]["name"] for c in listed.json()] == ["web", "worker"]
        assert listed.json()[0]["state"] == "running"

        inspect = await platform.api.get(f"{base}/web/inspect")
        assert inspect.status_code == 200 and inspect.json()["Name"] == f"/{PREFIX}-web"
        missing = await platform.api.get(f"{base}/ghost/inspect")
        assert missing.status_code == 404 and "not found" in missing.json()["message"]
        slow = await platform.api.get(f"{base}/slow/inspect")
        assert slow.status_code == 504

        logs = await platform.api.get(f"{base}/web/log", params={"take": 3})
        assert logs.json()["logs"] == ["line 0\n", "line 1\n", "line 2\n"]

        assert (await platform.api.delete(f"{base}/web")).status_code == 204
        broken = await platform.api.delete(f"{base}/broken")
        assert broken.status_code == 500 and broken.json()["message"] == "engine said no"
        assert (await platform.api.delete(base)).status_code == 204

        for operation, expected in (
            ("start", common_pb2.START_CONTAINER),
            ("stop", common_pb2.STOP_CONTAINER),
            ("restart", common_pb2.RESTART_CONTAINER),
        ):
            assert (await platform.api.post(f"{base}/worker/{operation}")).status_code == 204
            await wait_for(
                lambda expected=expected: any(
                    c.containerCommand.operation == expected for c in responder.seen
                ),
                2,
                f"{operation} to reach the agent",
            )
        deletes = [
            c.deleteContainers.target for c in responder.seen if c.WhichOneof("command") == "deleteContainers"
        ]
        assert any(t.WhichOneof("target") == "prefix" and t.prefix == PREFIX for t in deletes)


def _ws_url(platform: Harness, path: str) -> str:
    return platform.started.http_url.replace("http://", "ws://") + "/api/default" + path


async def test_state_and_log_feeds(platform: Harness) -> None:
    headers = {"authorization": f"Bearer {platform.started.api_token}"}
    async with connected(platform, ["web"]) as (node_id, responder):
        url = _ws_url(platform, f"/ws/nodes/{node_id}/containers?prefix={PREFIX}")
        async with websockets.connect(url, additional_headers=headers) as ws:
            first = json.loads(await wait_event(ws.recv(), 5, "the next websocket message"))
            assert first["type"] == "containers" and first["items"][0]["id"]["name"] == "web"
            responder.state_messages.put_nowait(
                common_pb2.ContainerStateListMessage(data=[state_item(PREFIX, "web", common_pb2.EXITED)])
            )
            update = json.loads(await wait_event(ws.recv(), 5, "the next websocket message"))
            assert update["items"][0]["state"] == "exited"
        # the last viewer left: the platform completes the agent's stream
        await wait_event(responder.stream_done.wait(), 5, "the stream to end")

        responder.stream_done.clear()
        url = _ws_url(platform, f"/ws/nodes/{node_id}/{PREFIX}/containers/web/log?tail=10")
        async with websockets.connect(url, additional_headers=headers) as ws:
            await wait_for(
                lambda: any(c.containerLog.streaming for c in responder.seen),
                5,
                "the platform asked the agent for a log stream",
            )
            responder.log_lines.put_nowait(common_pb2.ContainerLogMessage(log="2026-01-01T00:00:00Z hello\n"))
            line = json.loads(await wait_event(ws.recv(), 5, "the next websocket message"))
            assert line == {"type": "log", "line": "2026-01-01T00:00:00Z hello\n"}
        await wait_event(responder.stream_done.wait(), 5, "the stream to end")

    # a wrong bearer is refused on the API and on the feeds
    refused = await platform.api.get("/nodes", headers={"authorization": "Bearer wrong"})
    assert refused.status_code == 401
    try:
        async with websockets.connect(_ws_url(platform, "/ws/deployments/x/events?token=wrong")):
            raise AssertionError("the handshake should fail")
    except websockets.InvalidStatus as err:
        assert err.response.status_code == 403


async def test_node_delete_shuts_the_agent_down_and_ends_feeds(platform: Harness) -> None:
    headers = {"authorization": f"Bearer {platform.started.api_token}"}
    async with connected(platform, ["web"]) as (node_id, responder):
        url = _ws_url(platform, f"/ws/nodes/{node_id}/containers?prefix={PREFIX}")
        async with websockets.connect(url, additional_headers=headers) as ws:
            assert (
                json.loads(await wait_event(ws.recv(), 5, "the next websocket message"))["type"]
                == "containers"
            )
            assert (await platform.api.delete(f"/nodes/{node_id}")).status_code == 204
            assert json.loads(await wait_event(ws.recv(), 5, "the next websocket message")) == {"type": "end"}
        closes = [c.close.reason for c in responder.seen if c.HasField("close")]
        assert closes == [agent_pb2.SHUTDOWN]
    assert (await platform.api.get(f"/nodes/{node_id}")).status_code == 404
