"""§3.7 acceptance from the platform side: install and default strategies, refusal codes."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import grpc
import jwt
import pytest
from platform_fake_agent import FakeAgent
from platform_harness import Harness, make_config

from berth.proto import agent_pb2


async def test_install_handshake_then_connection_token(platform: Harness) -> None:
    node_id = await platform.create_node()
    install = await platform.install_token(node_id)
    claims = jwt.decode(install, options={"verify_signature": False})
    assert claims["type"] == "install" and claims["sub"] == node_id and claims["version"] == "0.1.0"
    assert claims["iss"] == platform.grpc_address and len(claims["nonce"]) == 256

    async with FakeAgent(platform.grpc_address, install, node_id) as agent:
        connection_token = await agent.install()
        assert jwt.decode(connection_token, options={"verify_signature": False})["type"] == "connection"
        node = (await platform.api.get(f"/nodes/{node_id}")).json()
        assert node["status"] == "connected" and node["hasToken"] is True and node["install"] is None
        # one session per node
        async with FakeAgent(platform.grpc_address, connection_token, node_id) as second:
            assert await second.refusal() == grpc.StatusCode.ALREADY_EXISTS
    await _until_status(platform, node_id, "unreachable")

    async with FakeAgent(platform.grpc_address, connection_token, node_id) as again:
        await again.connect()
        await _until_status(platform, node_id, "connected")
    reused = FakeAgent(platform.grpc_address, install, node_id)
    assert await reused.refusal() == grpc.StatusCode.UNAUTHENTICATED
    await reused.close()
    audit = (await platform.api.get(f"/nodes/{node_id}/audit")).json()
    assert {"installed", "connected", "disconnected"} <= {item["event"] for item in audit["items"]}


async def _until_status(platform: Harness, node_id: str, status: str) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if (await platform.api.get(f"/nodes/{node_id}")).json()["status"] == status:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"node never became {status}")


def _platform_secret(platform: Harness) -> str:
    with sqlite3.connect(platform.data_dir / "platform.db") as db:
        return str(db.execute("SELECT value FROM meta WHERE key = 'jwt_secret'").fetchone()[0])


def _forge(claims: dict[str, object], key: str) -> str:
    return jwt.encode(claims, key, algorithm="HS256")


async def test_refusals(platform: Harness) -> None:
    node_id = await platform.create_node()
    install = await platform.install_token(node_id)
    claims = jwt.decode(install, options={"verify_signature": False})
    secret = _platform_secret(platform)
    cases: list[tuple[str, str, grpc.StatusCode]] = [
        ("forged", _forge(claims, "not-the-platform-key-but-32-bytes-long!!"), grpc.StatusCode.UNKNOWN),
        (
            "wrong iss",
            _forge({**claims, "iss": "evil:1"}, secret),
            grpc.StatusCode.UNKNOWN,
        ),
        ("missing", "", grpc.StatusCode.INVALID_ARGUMENT),
    ]
    for label, token, code in cases:
        agent = FakeAgent(platform.grpc_address, token, node_id)
        agent.token = token
        if not token:
            agent.metadata = lambda **_: []  # type: ignore[method-assign]
        assert await agent.refusal() == code, label
        await agent.close()
    mismatch = FakeAgent(platform.grpc_address, install, "someone-else")
    assert await mismatch.refusal() == grpc.StatusCode.INVALID_ARGUMENT
    await mismatch.close()


@pytest.mark.parametrize("platform", [{"install_window_s": 0.2}], indirect=True)
async def test_expired_install_token(platform: Harness) -> None:
    node_id = await platform.create_node()
    install = await platform.install_token(node_id)
    await asyncio.sleep(0.3)
    agent = FakeAgent(platform.grpc_address, install, node_id)
    assert await agent.refusal() == grpc.StatusCode.FAILED_PRECONDITION
    await agent.close()
    gone = await platform.api.get(f"/nodes/{node_id}/script")
    assert gone.status_code == 404


async def test_unknown_node_and_nonce_mismatch(platform: Harness) -> None:
    node_id = await platform.create_node()
    install = await platform.install_token(node_id)
    agent = FakeAgent(platform.grpc_address, install, node_id)
    token = await agent.install()
    await agent.close()
    await _until_status(platform, node_id, "unreachable")
    assert (await platform.api.delete(f"/nodes/{node_id}/token")).status_code == 204
    revoked = FakeAgent(platform.grpc_address, token, node_id)
    assert await revoked.refusal() == grpc.StatusCode.UNAUTHENTICATED
    await revoked.close()
    assert (await platform.api.delete(f"/nodes/{node_id}")).status_code == 204
    deleted = FakeAgent(platform.grpc_address, token, node_id)
    assert await deleted.refusal() == grpc.StatusCode.NOT_FOUND
    await deleted.close()


async def test_revoke_and_kick_close_the_stream(platform: Harness) -> None:
    node_id = await platform.create_node()
    async with FakeAgent(platform.grpc_address, await platform.install_token(node_id), node_id) as agent:
        token = await agent.install()
        assert (await platform.api.post(f"/nodes/{node_id}/kick")).status_code == 204
        command = await agent.next_command()
        assert command.close.reason == agent_pb2.SHUTDOWN
        assert await agent.stream_ended()
    await _until_status(platform, node_id, "unreachable")
    async with FakeAgent(platform.grpc_address, token, node_id) as agent:
        await agent.connect()
        await _until_status(platform, node_id, "connected")
        assert (await platform.api.delete(f"/nodes/{node_id}/token")).status_code == 204
        assert (await agent.next_command()).close.reason == agent_pb2.REVOKE_TOKEN
        assert await agent.stream_ended()
    node = (await platform.api.get(f"/nodes/{node_id}")).json()
    assert node["hasToken"] is False


async def test_tls_by_default(tmp_path, templates) -> None:  # type: ignore[no-untyped-def]
    from berth.platform.app import PlatformServer

    server = PlatformServer(make_config(tmp_path / "tls-data", templates, insecure=False))
    started = await server.start()
    try:
        import httpx

        async with httpx.AsyncClient(
            base_url=f"{started.http_url}/api/default",
            headers={"authorization": f"Bearer {started.api_token}"},
        ) as api:
            node_id = (await api.post("/nodes", json={"name": "tls"})).json()["id"]
            await api.post(f"/nodes/{node_id}/script", json={"type": "docker", "scriptType": "shell"})
            script = (await api.get(f"/nodes/{node_id}/script")).text
            assert "BEGIN CERTIFICATE" in script and "INSECURE='false'" in script
            token = next(x for x in script.splitlines() if x.startswith("GRPC_TOKEN=")).split("'")[1]
            plaintext = FakeAgent(started.config.advertise, token, node_id)
            with pytest.raises(grpc.aio.AioRpcError):
                await asyncio.wait_for(plaintext.connect(), 3)
            await plaintext.close()
            agent = FakeAgent(started.config.advertise, token, node_id, ca_pem=started.ca_pem)
            try:
                await agent.install()
                assert (await api.get(f"/nodes/{node_id}")).json()["status"] == "connected"
            finally:
                await agent.close()
    finally:
        await server.stop()
