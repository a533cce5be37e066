"""The Docker-runtime agent's start-up, as a process on the real engine: the first ``Connect``
waits for an SDK-free engine check only (no SDK, OpenPGP library, command codec or handlers are
loaded by then; the first command builds them and waits for them), a fresh install's
``replaceToken`` swaps the token without building the runtime, and an engine that is down still
keeps the agent from connecting."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sys
from pathlib import Path

import pytest
from fakeplatform import PlatformServer
from waiting import wait_event

from berth.agent.credentials import AgentKey, FileCredentialStore
from berth.agent.tokens import TokenKeeper
from berth.proto import agent_pb2

pytestmark = pytest.mark.docker

LAUNCHER = Path(__file__).with_name("connect_watch_agent.py")


def _env(tmp_path: Path, token: str, **values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BERTH_", "GRPC_", "DEBUG"))}
    env.update(
        {
            "GRPC_TOKEN": token,
            "DEBUG": "true",
            "INTERNAL_MOUNT_PATH": str(tmp_path / "data"),
            "DATA_MOUNT_PATH": str(tmp_path / "data"),
            "BERTH_RUNTIME": "docker",
            "BERTH_HEALTH_SOCKET": str(tmp_path / "health.sock"),
            "BERTH_LOG_FORMAT": "json",
            "BERTH_RECONCILE": "false",
            **values,
        }
    )
    return env


async def _launch(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(LAUNCHER),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _stop(process: asyncio.subprocess.Process) -> int:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    await wait_event(process.communicate(), 20, "the agent process to exit")
    assert process.returncode is not None
    return process.returncode


async def test_first_connect_imports_no_sdk_and_commands_wait_for_the_runtime(tmp_path: Path) -> None:
    AgentKey.load_or_create(FileCredentialStore(tmp_path / "data"))  # a restart: the key is in place
    async with PlatformServer() as server:
        process = await _launch(_env(tmp_path, server.platform.issue_connection_token()))
        try:
            assert process.stdout is not None
            line = await wait_event(process.stdout.readline(), 30, "the first Connect")
            assert json.loads(line) == {"imported_at_connect": []}
            # sent at once: the command waits for the runtime built behind the Connect
            prefix = f"st{secrets.token_hex(3)}"
            await server.platform.send(
                agent_pb2.AgentCommand(
                    containerState=agent_pb2.ContainerStateRequest(prefix=prefix, oneShot=True)
                )
            )
            state = await server.platform.wait_stream("ContainerState", within_s=30)
            await wait_event(state.done.wait(), 30, "the one-shot state list")
            assert state.half_closed_by_agent
            assert [item for message in state.messages for item in message.data] == []
        finally:
            assert await _stop(process) == 0


RUNTIME_MODULES = ("docker", "requests", "berth.runtimes.docker.runtime")


async def test_fresh_install_swaps_its_token_without_building_the_runtime(tmp_path: Path) -> None:
    """No key, an install token: the platform's replaceToken is served by the life-cycle handler
    alone (the SDK, the runtime and the OpenPGP library stay unloaded); the next real command
    builds them and works."""
    async with PlatformServer() as server:
        platform = server.platform
        process = await _launch(_env(tmp_path, platform.issue_install_token()))
        try:
            assert process.stdout is not None
            line = await wait_event(process.stdout.readline(), 30, "the first Connect")
            assert json.loads(line) == {"imported_at_connect": []}  # the key generated apart
            line = await wait_event(process.stdout.readline(), 30, "the replaceToken dispatched")
            swapped = json.loads(line)
            assert swapped["dispatched"] == "ReplaceToken"
            assert not {*RUNTIME_MODULES, "pysequoia"} & set(swapped["imported"])
            assert len(platform.calls("TokenReplaced")) == 1
            stored = TokenKeeper.select(FileCredentialStore(tmp_path / "data"), "")
            assert stored.current.type == "connection"

            prefix = f"fi{secrets.token_hex(3)}"
            await platform.send(
                agent_pb2.AgentCommand(
                    containerState=agent_pb2.ContainerStateRequest(prefix=prefix, oneShot=True)
                )
            )
            line = await wait_event(process.stdout.readline(), 30, "the containerState dispatched")
            assert set(RUNTIME_MODULES) <= set(json.loads(line)["imported"])
            state = await platform.wait_stream("ContainerState", within_s=30)
            await wait_event(state.done.wait(), 30, "the one-shot state list")
            assert [item for message in state.messages for item in message.data] == []
        finally:
            assert await _stop(process) == 0


async def test_engine_down_at_start_the_agent_waits_and_does_not_connect(tmp_path: Path) -> None:
    socket = tmp_path / "no-engine.sock"
    async with PlatformServer() as server:
        token = server.platform.issue_connection_token()
        process = await _launch(_env(tmp_path, token, DOCKER_HOST=f"unix://{socket}"))
        try:
            assert process.stderr is not None

            async def waiting_logged() -> str:
                assert process.stderr is not None
                while b"runtime_waiting" not in (line := await process.stderr.readline()):
                    assert line, "the agent exited"
                return line.decode()

            line = await wait_event(waiting_logged(), 30, "runtime_waiting")
            assert str(socket) in line
            assert not server.platform.connects
        finally:
            assert await _stop(process) == 0
        assert not server.platform.connects
