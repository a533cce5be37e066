"""Secrets that are not OpenPGP or not for this agent's key, and tokens with forged, missing or
absurd claims: each gets a clear outcome, nothing is replaced or leaked."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pysequoia
import pytest
from fakeplatform import (
    FakePlatform,
    PlatformServer,
    RunningAgent,
    agent_settings,
    eventually,
    mint_token,
    running_agent,
)
from kits.fault_kit import deployment_stream, final_status

from berth.agent.credentials import AgentKey
from berth.proto import agent_pb2, common_pb2
from berth.runtimes.memory import MemoryRuntime

PLAINTEXT = "top-secret-plaintext-3f1c"
KEY = "a-signing-key-the-agent-cannot-know-0123456789"


@dataclass
class Connected:
    platform: FakePlatform
    running: RunningAgent
    data_dir: Path


@pytest.fixture
async def connected(tmp_path: Path) -> AsyncIterator[Connected]:
    """Installed with an install token, so token.jwt holds the connection token."""
    async with PlatformServer() as server:
        settings = agent_settings(tmp_path / "data", server.platform.issue_install_token())
        async with running_agent(settings, runtime=MemoryRuntime()) as running:
            await server.platform.wait_unary("TokenReplaced")
            await eventually(lambda: (tmp_path / "data" / "token.jwt").exists())
            yield Connected(server.platform, running, tmp_path / "data")


def foreign_cipher() -> str:
    other = AgentKey.generate()
    cert = pysequoia.Cert.from_bytes(other.public_key.encode())
    return str(pysequoia.encrypt(PLAINTEXT.encode(), [cert]).decode())


SECRETS = {
    "not-openpgp": "hello world",
    "base64": base64.b64encode(PLAINTEXT.encode()).decode(),
    "armored-garbage": "-----BEGIN PGP MESSAGE-----\n\nAAAAAAAA\n=AAAA\n-----END PGP MESSAGE-----\n",
    "for-another-key": "FOREIGN",
    "huge": "A" * 1_000_000,
    "nul-bytes": "\x00" * 64,
}


@pytest.mark.parametrize("kind", sorted(SECRETS))
async def test_undecryptable_secret_fails_the_deployment_naming_only_the_key(
    connected: Connected, kind: str
) -> None:
    value = foreign_cipher() if SECRETS[kind] == "FOREIGN" else SECRETS[kind]
    request = agent_pb2.DeployWorkloadRequest(
        id="w1",
        imageName="busybox",
        tag="1",
        common=agent_pb2.CommonContainerConfig(name="web", secrets={"DB_PASSWORD": value}),
    )
    await connected.platform.send(
        agent_pb2.AgentCommand(deploy=agent_pb2.DeployRequest(id=f"d-{kind}", prefix="p", requests=[request]))
    )
    record = await deployment_stream(connected.platform, f"d-{kind}", within_s=10)
    assert final_status(record) == common_pb2.FAILED
    text = " ".join(line for message in record.messages for line in message.log)
    assert "DB_PASSWORD" in text
    assert PLAINTEXT not in text and value[:64] not in text.replace("DB_PASSWORD", "")


def _raw_jwt(header: dict[str, Any], claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part(claims)}.c2ln"


def hostile_tokens(platform: FakePlatform) -> dict[str, str]:
    iss, sub, now = platform.iss, platform.node_id, time.time()
    base = {"iss": iss, "sub": sub, "type": "connection", "nonce": "n", "version": "1"}
    return {
        "other-node": mint_token(iss=iss, sub="another-node", token_type="connection"),
        "other-platform": mint_token(iss="203.0.113.9:443", sub=sub, token_type="connection"),
        "install-type": mint_token(iss=iss, sub=sub, token_type="install"),
        "unknown-type": mint_token(iss=iss, sub=sub, token_type="root"),
        "future-iat": mint_token(iss=iss, sub=sub, token_type="connection", iat=now + 365 * 86400),
        "absurd-iat": jwt.encode({**base, "iat": 1e300}, KEY, algorithm="HS256"),
        "string-iat": jwt.encode({**base, "iat": "yesterday"}, KEY, algorithm="HS256"),
        "missing-iat": jwt.encode(base, KEY, algorithm="HS256"),
        "expired": jwt.encode({**base, "iat": now - 100, "exp": 1}, KEY, algorithm="HS256"),
        "sub-list": jwt.encode({**base, "iat": now, "sub": ["a", "b"]}, KEY, algorithm="HS256"),
        "missing-sub": jwt.encode({k: v for k, v in {**base, "iat": now}.items() if k != "sub"}, KEY),
        "alg-none-no-header-alg": _raw_jwt({"typ": "JWT"}, {**base, "iat": now}),
        "payload-not-object": _raw_jwt({"alg": "HS256"}, [1, 2]),  # type: ignore[arg-type]
        "not-a-jwt": "definitely not a token",
        "huge": "a." + "b" * 2_000_000 + ".c",
    }


@pytest.mark.parametrize(
    "kind",
    [
        "other-node",
        "other-platform",
        "install-type",
        "unknown-type",
        "future-iat",
        "absurd-iat",
        "string-iat",
        "missing-iat",
        "expired",
        "sub-list",
        "missing-sub",
        "alg-none-no-header-alg",
        "payload-not-object",
        "not-a-jwt",
        "huge",
    ],
)
async def test_replace_token_with_hostile_claims_is_rejected(connected: Connected, kind: str) -> None:
    platform = connected.platform
    token_file = connected.data_dir / "token.jwt"
    stored = token_file.read_text()
    bad = hostile_tokens(platform)[kind]
    await platform.send(agent_pb2.AgentCommand(replaceToken=agent_pb2.ReplaceTokenRequest(token=bad)))
    metrics = connected.running.agent.metrics
    await eventually(lambda: metrics.count("replace_token", "rejected") == 1)
    assert token_file.read_text() == stored
    assert len(platform.calls("TokenReplaced")) == 1  # only the install handshake's
    assert connected.running.agent.keeper is not None
    assert connected.running.agent.keeper.current.raw == stored
    assert platform.connected and not connected.running.task.done()


async def test_forged_signature_at_start_is_refused_by_the_platform_and_the_agent_stops(
    tmp_path: Path,
) -> None:
    """The agent cannot check the platform's HS256 signature; the platform can, and refuses."""
    async with PlatformServer() as server:
        platform = server.platform
        platform.issue_connection_token()
        forged = mint_token(
            iss=platform.iss, sub=platform.node_id, token_type="connection", secret="forger-" * 8
        )
        async with running_agent(agent_settings(tmp_path / "d", forged), runtime=MemoryRuntime()) as running:
            assert await running.exit_code(within_s=10) == 0
        assert [c.status.name for c in platform.connects] == ["UNKNOWN"]
