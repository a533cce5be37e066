"""A read-only persistence folder, or a full disk: a clear error, and the token on disk is neither
lost nor corrupted (writes are temp file + fsync + rename, and TokenReplaced is only sent once the
new token is staged).

The read-only folder is a read-only bind mount and the full disk a 256 KiB tmpfs, both mounted by
the test on its own temporary folder (root bypasses file modes, not mount flags).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fakeplatform import FakePlatform, PlatformServer, agent_settings, eventually, running_agent
from waiting import wait_event

from berth.agent.app import Agent
from berth.proto import agent_pb2
from berth.runtimes.memory import MemoryRuntime
from berth.settings import AgentSettings


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


def umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


@contextlib.asynccontextmanager
async def own_mount(folder: Path, kind: str) -> AsyncIterator[None]:
    """``folder`` becomes its own mount: a bind mount (to be made read-only) or a small tmpfs."""
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    if kind == "read-only":
        await asyncio.to_thread(mount, "--bind", str(folder), str(folder))
    else:
        await asyncio.to_thread(mount, "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(folder))
    try:
        yield
    finally:
        await asyncio.to_thread(umount, folder)


def make_unwritable(folder: Path, kind: str) -> None:
    if kind == "read-only":
        mount("-o", "remount,ro,bind", str(folder))
        return
    with (folder / "filler").open("wb", buffering=0) as filler:
        try:
            while True:
                filler.write(b"\0" * 4096)
        except OSError as err:
            assert err.errno == errno.ENOSPC


def settings_in(data: Path, token: str) -> AgentSettings:
    """The health socket lives outside the persistence folder, as in production (/tmp/dyrectorio)."""
    return dataclasses.replace(agent_settings(data, token), health_socket=data.parent / "health.sock")


def replace_token(platform: FakePlatform, token: str) -> agent_pb2.AgentCommand:
    return agent_pb2.AgentCommand(replaceToken=agent_pb2.ReplaceTokenRequest(token=token))


@pytest.mark.parametrize("kind", ["read-only", "disk-full"])
async def test_replace_token_on_unwritable_folder_keeps_the_old_token(tmp_path: Path, kind: str) -> None:
    data = tmp_path / "data"
    async with own_mount(data, kind), PlatformServer() as server:
        platform = server.platform
        settings = settings_in(data, platform.issue_install_token())
        async with running_agent(settings, runtime=MemoryRuntime()) as running:
            await platform.wait_unary("TokenReplaced")
            stored = await eventually(
                lambda: (data / "token.jwt").exists() and (data / "token.jwt").read_text()
            )
            await asyncio.to_thread(make_unwritable, data, kind)

            await platform.send(replace_token(platform, platform.mint("connection")))
            metrics = running.agent.metrics
            await eventually(lambda: metrics.count("replace_token", "failed") == 1)
            assert (data / "token.jwt").read_text() == stored
            assert [p.name for p in data.iterdir() if p.name.endswith(".tmp")] == []
            # TokenReplaced was not sent for a token that could not be stored: the platform keeps
            # the nonce the agent still holds, so the next session is accepted.
            assert len(platform.calls("TokenReplaced")) == 1
            assert running.agent.keeper is not None and running.agent.keeper.current.raw == stored
            await server.restart()
            connect = await platform.wait_accepted(count=2, within_s=10)
            assert connect.token == stored
            assert not running.task.done()


async def test_read_only_folder_without_key_exits_with_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    async with own_mount(data, "read-only"), PlatformServer() as server:
        await asyncio.to_thread(make_unwritable, data, "read-only")
        token = server.platform.issue_connection_token()
        agent = Agent(settings_in(data, token), runtime=MemoryRuntime(), updater=None)
        assert await wait_event(agent.run(), 10, "the agent to exit") == 1
        assert server.platform.connects == []
    said = capsys.readouterr().out
    assert "agent_credentials_failed" in said and "Read-only file system" in said


async def test_refused_token_on_read_only_folder_exits_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The platform refuses the stored token while the folder is read-only: forgetting it fails,
    and the agent still ends with an exit code, not an unhandled exception."""
    data = tmp_path / "data"
    async with own_mount(data, "read-only"), PlatformServer() as server:
        platform = server.platform
        settings = settings_in(data, platform.issue_install_token())
        async with running_agent(settings, runtime=MemoryRuntime()) as running:
            await platform.wait_unary("TokenReplaced")
            await eventually(lambda: (data / "token.jwt").exists())
            await asyncio.to_thread(make_unwritable, data, "read-only")
            platform.stored_nonce = "revoked-on-the-platform"
            await server.restart()
            code = await running.exit_code(within_s=15)
            assert code in (0, 1)
            assert (data / "token.jwt").exists()
    assert "refused_token_not_forgotten" in capsys.readouterr().out
