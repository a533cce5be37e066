"""Token refusal rules (§4.4), the fallback to the install token, the nonce blacklist and the
retryable statuses (§3.7)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from fakeplatform import PlatformServer, agent_settings, eventually, mint_token, running_agent

from berth.agent.credentials import parse_token
from berth.runtimes.memory import MemoryRuntime

REFUSALS = [
    (grpc.StatusCode.NOT_FOUND, "Node not found"),
    (grpc.StatusCode.UNAUTHENTICATED, "Invalid token"),
    (grpc.StatusCode.PERMISSION_DENIED, "denied"),
    (grpc.StatusCode.UNKNOWN, '{"message": "Forbidden resource", "details": {}}'),
]


@pytest.mark.parametrize(("code", "details"), REFUSALS, ids=[c.name for c, _ in REFUSALS])
async def test_refused_connection_token_falls_back_to_install_token(
    tmp_path: Path, code: grpc.StatusCode, details: str
) -> None:
    async with PlatformServer() as server:
        platform = server.platform
        install = platform.issue_install_token()
        stale = platform.mint("connection")
        data = tmp_path / "d"
        data.mkdir()
        (data / "token.jwt").write_text(stale)
        platform.connect_status_override = lambda record: (code, details) if record.token == stale else None
        async with running_agent(agent_settings(data, install), runtime=MemoryRuntime()):
            accepted = await platform.wait_accepted()
            assert accepted.token == install
            assert [c.status for c in platform.connects][:1] == [code]
            await platform.wait_unary("TokenReplaced")
            await eventually((data / "token.jwt").exists)
            assert (data / "token.jwt").read_text() != stale
            assert parse_token((data / "token.jwt").read_text()).type == "connection"


async def test_refused_connection_token_without_fallback_exits_zero(tmp_path: Path) -> None:
    async with PlatformServer() as server:
        platform = server.platform
        token = platform.issue_connection_token()
        platform.stored_nonce = "revoked"
        data = tmp_path / "d"
        data.mkdir()
        (data / "token.jwt").write_text(token)
        async with running_agent(agent_settings(data, ""), runtime=MemoryRuntime()) as running:
            assert await running.exit_code() == 0
        assert not (data / "token.jwt").exists()
        assert [c.status for c in platform.connects] == [grpc.StatusCode.UNAUTHENTICATED]


async def test_refused_install_token_is_blacklisted(tmp_path: Path) -> None:
    async with PlatformServer() as server:
        platform = server.platform
        install = platform.issue_install_token()
        platform.installer_token = None  # lost by a platform restart
        data = tmp_path / "d"
        async with running_agent(agent_settings(data, install), runtime=MemoryRuntime()) as running:
            assert await running.exit_code() == 0
        assert (data / "token-nonce.blacklist").read_text() == parse_token(install).nonce
        # The next start does not try the blacklisted token again: "no token", non-zero.
        async with running_agent(agent_settings(data, install), runtime=MemoryRuntime()) as running:
            assert await running.exit_code() == 1
        assert len(platform.connects) == 1


async def test_refused_fallback_exits_non_zero(tmp_path: Path) -> None:
    async with PlatformServer() as server:
        platform = server.platform
        install = platform.issue_install_token()
        platform.installer_token = None
        data = tmp_path / "d"
        data.mkdir()
        (data / "token.jwt").write_text(platform.mint("connection"))
        async with running_agent(agent_settings(data, install), runtime=MemoryRuntime()) as running:
            assert await running.exit_code() == 1
        assert not (data / "token.jwt").exists()
        assert (data / "token-nonce.blacklist").read_text() == parse_token(install).nonce
        assert len(platform.connects) == 2


async def test_token_signed_by_another_platform_is_refused(tmp_path: Path) -> None:
    async with PlatformServer() as server:
        platform = server.platform
        forged = mint_token(
            iss=platform.iss,
            sub=platform.node_id,
            token_type="connection",
            secret="another-platform-secret-0123456789abcdef",
        )
        async with running_agent(agent_settings(tmp_path / "d", forged), runtime=MemoryRuntime()) as running:
            assert await running.exit_code() == 0
        assert platform.connects[0].status == grpc.StatusCode.UNKNOWN


RETRYABLE = [
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNAVAILABLE,
]


@pytest.mark.parametrize("code", RETRYABLE, ids=[c.name for c in RETRYABLE])
async def test_retryable_statuses_keep_the_token_and_retry(tmp_path: Path, code: grpc.StatusCode) -> None:
    async with PlatformServer() as server:
        platform = server.platform
        token = platform.issue_connection_token()
        failures = {"left": 3}

        def flaky(_: object) -> tuple[grpc.StatusCode, str] | None:
            if failures["left"]:
                failures["left"] -= 1
                return code, "try later"
            return None

        platform.connect_status_override = flaky
        data = tmp_path / "d"
        data.mkdir()
        (data / "token.jwt").write_text(token)
        async with running_agent(agent_settings(data, ""), runtime=MemoryRuntime()) as running:
            accepted = await platform.wait_accepted(within_s=10)
            assert accepted.token == token
            assert [c.status for c in platform.connects][:3] == [code] * 3
            assert (data / "token.jwt").read_text() == token
            assert running.agent.metrics.reconnects >= 3


async def test_stored_token_for_another_platform_yields_to_env_token(tmp_path: Path) -> None:
    async with PlatformServer() as server:
        platform = server.platform
        install = platform.issue_install_token()
        data = tmp_path / "d"
        data.mkdir()
        (data / "token.jwt").write_text(
            mint_token(iss="elsewhere:5000", sub=platform.node_id, token_type="connection")
        )
        async with running_agent(agent_settings(data, install), runtime=MemoryRuntime()):
            accepted = await platform.wait_accepted()
            assert accepted.token == install
            assert len(platform.connects) == 1


async def test_no_token_at_all_exits_non_zero(tmp_path: Path) -> None:
    async with running_agent(
        agent_settings(tmp_path / "d", "garbage.token"), runtime=MemoryRuntime()
    ) as running:
        assert await running.exit_code() == 1
