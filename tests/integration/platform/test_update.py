"""Agent update from the platform side (§13.1): withheld commands, AbortUpdate, the successor."""

from __future__ import annotations

import jwt
from kits.platform_fake_agent import FakeAgent
from kits.platform_harness import Harness
from waiting import wait_for

from berth.proto import agent_pb2, common_pb2


async def test_update_aborted_by_the_agent(platform: Harness) -> None:
    node_id = await platform.create_node()
    agent = FakeAgent(platform.grpc_address, await platform.install_token(node_id), node_id)
    await agent.install()
    try:
        assert (await platform.api.post(f"/nodes/{node_id}/update")).status_code == 204
        update = (await agent.next_command()).update
        assert update.timeoutSeconds == 300 and update.tag == "0.1"
        assert jwt.decode(update.token, options={"verify_signature": False})["type"] == "connection"
        node = (await platform.api.get(f"/nodes/{node_id}")).json()
        assert node["status"] == "updating"
        assert (await platform.api.get(f"/nodes/{node_id}/p/containers")).status_code == 412
        assert (await platform.api.post(f"/nodes/{node_id}/update")).status_code == 412
        await agent.stub.AbortUpdate(
            agent_pb2.AgentAbortUpdate(error="no self-update"), metadata=agent.metadata()
        )
        assert (await platform.api.get(f"/nodes/{node_id}")).json()["status"] == "connected"
        audit = (await platform.api.get(f"/nodes/{node_id}/audit")).json()["items"]
        assert audit[0]["event"] == "update_aborted" and audit[0]["data"] == {"error": "no self-update"}
    finally:
        await agent.close()


async def test_successor_takes_over(platform: Harness) -> None:
    node_id = await platform.create_node()
    old = FakeAgent(platform.grpc_address, await platform.install_token(node_id), node_id)
    await old.install()
    successor: FakeAgent | None = None
    try:
        assert (await platform.api.post(f"/nodes/{node_id}/update")).status_code == 204
        token = (await old.next_command()).update.token
        old_token = old.token
        old.token = token
        await old.stub.TokenReplaced(common_pb2.Empty(), metadata=[("dyo-node-token", old_token)])
        successor = FakeAgent(platform.grpc_address, token, node_id, version="0.15.4-berth.next")
        await successor.connect()
        assert (await old.next_command()).close.reason == agent_pb2.SELF_DESTRUCT
        assert await old.stream_ended()
        node = (await platform.api.get(f"/nodes/{node_id}")).json()
        assert node["status"] == "connected" and node["version"] == "0.15.4-berth.next"
    finally:
        await old.close()
        if successor is not None:
            await successor.close()


async def _status_is(platform: Harness, node_id: str, status: str) -> bool:
    return bool((await platform.api.get(f"/nodes/{node_id}")).json()["status"] == status)


async def test_outdated_agent_gets_only_update(platform: Harness) -> None:
    node_id = await platform.create_node()
    agent = FakeAgent(platform.grpc_address, await platform.install_token(node_id), node_id)
    token = await agent.install()
    await agent.close()
    await wait_for(
        lambda: _status_is(platform, node_id, "unreachable"), 5, "the closed agent's node turned unreachable"
    )
    outdated = FakeAgent(platform.grpc_address, token, node_id, version="1.2.0-berth")
    try:
        await outdated.connect()
        node = (await platform.api.get(f"/nodes/{node_id}")).json()
        assert node["status"] == "outdated"
        assert (await platform.api.get(f"/nodes/{node_id}/p/containers")).status_code == 412
        assert (await platform.api.post(f"/nodes/{node_id}/update")).status_code == 204
    finally:
        await outdated.close()
