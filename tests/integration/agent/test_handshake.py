"""Install handshake, token persistence and acceptance against the fake platform."""

from __future__ import annotations

import stat
from pathlib import Path

from fakeplatform import PlatformServer, agent_settings, eventually, mint_token, running_agent

from berth.agent.credentials import parse_token
from berth.proto import agent_pb2
from berth.runtimes.memory import MemoryRuntime


async def test_install_handshake_persists_connection_token(tmp_path: Path) -> None:
    async with PlatformServer() as server:
        platform = server.platform
        install = platform.issue_install_token()
        settings = agent_settings(tmp_path / "data", install)
        async with running_agent(settings, runtime=MemoryRuntime()) as running:
            first = await platform.wait_accepted()
            assert first.token == install
            assert first.info.id == platform.node_id
            assert first.info.version.startswith("0.15.4-")
            assert first.info.publicKey.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
            replaced = await platform.wait_unary("TokenReplaced")
            # TokenReplaced carries the OLD (install) token.
            assert replaced.metadata["dyo-node-token"] == install
            token_file = tmp_path / "data" / "token.jwt"
            await eventually(token_file.exists)
            stored = token_file.read_text()
            assert parse_token(stored).type == "connection"
            assert platform.stored_nonce == parse_token(stored).nonce
            assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
            assert stat.S_IMODE((tmp_path / "data" / "secret.key").stat().st_mode) == 0o600
            await running.agent.health.wait_accepted()
            # A later call uses the new token.
            await platform.send(
                agent_pb2.AgentCommand(
                    containerState=agent_pb2.ContainerStateRequest(prefix="p", oneShot=True)
                )
            )
            state = await platform.wait_stream("ContainerState")
            assert state.metadata["dyo-node-token"] == stored
            # Reconnect after the platform ends the stream: the connection token is used.
            await platform.end_stream()
            second = await platform.wait_accepted(count=2)
            assert second.token == stored
            assert second.info.publicKey == first.info.publicKey
            assert not list((tmp_path / "data").glob(".token.jwt.*"))


async def test_restart_uses_stored_token_and_same_public_key(tmp_path: Path) -> None:
    async with PlatformServer() as server:
        platform = server.platform
        install = platform.issue_install_token()
        settings = agent_settings(tmp_path / "data", install)
        async with running_agent(settings, runtime=MemoryRuntime()):
            first = await platform.wait_accepted()
            await platform.wait_unary("TokenReplaced")
            await eventually((tmp_path / "data" / "token.jwt").exists)
        async with running_agent(settings, runtime=MemoryRuntime()):
            again = await platform.wait_accepted(count=2)
            assert again.token == (tmp_path / "data" / "token.jwt").read_text()
            assert again.info.publicKey == first.info.publicKey


async def test_replacement_token_for_another_node_is_not_taken(tmp_path: Path) -> None:
    async with PlatformServer() as server:
        platform = server.platform
        install = platform.issue_install_token()
        settings = agent_settings(tmp_path / "data", install)
        async with running_agent(settings, runtime=MemoryRuntime()) as running:
            await platform.wait_accepted()
            await platform.wait_unary("TokenReplaced")
            await platform.send(
                agent_pb2.AgentCommand(
                    replaceToken=agent_pb2.ReplaceTokenRequest(
                        token=mint_token(iss=platform.iss, sub="other-node", token_type="connection")
                    )
                )
            )
            await platform.send(
                agent_pb2.AgentCommand(
                    containerState=agent_pb2.ContainerStateRequest(prefix="", oneShot=True)
                )
            )
            await platform.wait_stream("ContainerState")
            assert len(platform.calls("TokenReplaced")) == 1
            assert running.agent.keeper is not None
            assert running.agent.keeper.current.sub == platform.node_id


async def test_token_replaced_failure_keeps_old_token_and_writes_nothing(tmp_path: Path) -> None:
    async with PlatformServer() as server:
        platform = server.platform
        install = platform.issue_install_token()
        platform.fail_token_replaced = True
        settings = agent_settings(tmp_path / "data", install)
        async with running_agent(settings, runtime=MemoryRuntime()) as running:
            await platform.wait_accepted()
            await running.agent.health.wait_accepted()
            await eventually(lambda: running.agent.metrics.count("replace_token", "failed"))
            assert not (tmp_path / "data" / "token.jwt").exists()
            assert not list((tmp_path / "data").glob(".token.jwt.*"))
            assert running.agent.keeper is not None
            assert running.agent.keeper.current.raw == install
