"""``berth agent`` / ``berth health`` as processes, configured from the environment like an
install script starts them."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from fakeplatform import PlatformServer
from waiting import wait_event

from berth.proto import agent_pb2


def _env(tmp_path: Path, **values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BERTH_", "GRPC_", "DEBUG"))}
    env.update(
        {
            "INTERNAL_MOUNT_PATH": str(tmp_path / "data"),
            "DATA_MOUNT_PATH": str(tmp_path / "data"),
            "BERTH_RUNTIME": "memory",
            "BERTH_HEALTH_SOCKET": str(tmp_path / "health.sock"),
            "BERTH_LOG_FORMAT": "json",
            **values,
        }
    )
    return env


async def _berth(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "berth",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _run(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await _berth(env, *args)
    out, err = await wait_event(process.communicate(), 30, "the agent process to exit")
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_invalid_setting_exits_2_with_one_line_naming_it(tmp_path: Path) -> None:
    code, out, err = await _run(
        _env(tmp_path, GRPC_KEEPALIVE="soon", GRPC_TOKEN="secret-token-value"), "agent"
    )
    assert code == 2
    assert err.strip().count("\n") == 0
    assert "GRPC_KEEPALIVE" in err
    assert "secret-token-value" not in err + out


async def test_no_or_malformed_token_exits_1_without_logging_the_token(tmp_path: Path) -> None:
    code, out, err = await _run(_env(tmp_path), "agent")
    assert code == 1
    assert "no token" in out + err
    code, out, err = await _run(_env(tmp_path, GRPC_TOKEN="eyJhbGciOi.bm90IGpzb24.c2lnbmF0dXJl"), "agent")
    assert code == 1
    assert "eyJhbGciOi" not in out + err
    assert "token_unusable" in out + err


async def test_health_without_agent_exits_1(tmp_path: Path) -> None:
    code, _, err = await _run(_env(tmp_path), "health")
    assert code == 1
    assert "not reachable" in err


async def test_agent_process_connects_reports_healthy_and_stops_on_signals(tmp_path: Path) -> None:
    async with PlatformServer() as server:
        token = server.platform.issue_connection_token()
        env = _env(tmp_path, GRPC_TOKEN=token, DEBUG="true")
        agent = await _berth(env, "agent")
        try:
            connect = await server.platform.wait_accepted(within_s=20)
            assert connect.info.id == server.platform.node_id
            await server.platform.send(
                agent_pb2.AgentCommand(
                    containerState=agent_pb2.ContainerStateRequest(prefix="", oneShot=True)
                )
            )
            await server.platform.wait_stream("ContainerState")
            code, out, _ = await _run(env, "health")
            assert (code, out.strip()) == (0, "connected")
            agent.send_signal(signal.SIGTERM)
            _, err = await wait_event(agent.communicate(), 20, "the agent process to exit")
            assert agent.returncode == 0
            assert token not in err.decode()
            assert '"event": "agent_stopped"' in err.decode()
        finally:
            if agent.returncode is None:
                agent.kill()
                await agent.wait()


async def test_agent_process_exits_0_on_close_shutdown(tmp_path: Path) -> None:
    async with PlatformServer() as server:
        env = _env(tmp_path, GRPC_TOKEN=server.platform.issue_connection_token(), DEBUG="true")
        agent = await _berth(env, "agent")
        try:
            await server.platform.wait_accepted(within_s=20)
            await server.platform.send(
                agent_pb2.AgentCommand(close=agent_pb2.CloseConnectionRequest(reason=agent_pb2.SHUTDOWN))
            )
            await wait_event(agent.communicate(), 20, "the agent process to exit")
            assert agent.returncode == 0
        finally:
            if agent.returncode is None:
                agent.kill()
                await agent.wait()
