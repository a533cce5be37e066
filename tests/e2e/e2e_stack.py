"""The real pieces of the end-to-end tests: the platform in the test's loop, ``berth agent`` as a
process against the real Docker engine and registry, and a sweep of what they created."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from berth.platform.app import PlatformServer, Started
from berth.platform.config import PlatformConfig

REGISTRY = os.environ.get("BERTH_TEST_REGISTRY", "127.0.0.1:5000")
REGISTRY_USER = os.environ.get("BERTH_TEST_REGISTRY_USER", "berth")
REGISTRY_PASSWORD = os.environ.get("BERTH_TEST_REGISTRY_PASSWORD", "berth-registry-pass")
TEST_LABEL = {"io.berth.test": "1"}


def platform_config(data_dir: Path) -> PlatformConfig:
    return PlatformConfig(
        data_dir=data_dir,
        grpc_listen="127.0.0.1:0",
        http_listen="127.0.0.1:0",
        advertise="127.0.0.1:0",
        insecure=False,
        callback_timeout_s=5.0,
    )


async def start_platform(config: PlatformConfig) -> tuple[PlatformServer, Started]:
    server = PlatformServer(config)
    return server, await server.start()


class AgentProcess:
    def __init__(self, data_dir: Path, install_token: str, ca_file: Path, log_file: Path) -> None:
        self.data_dir = data_dir
        self.env = {
            **os.environ,
            "GRPC_TOKEN": install_token,
            "DATA_MOUNT_PATH": str(data_dir),
            "BERTH_CA_FILE": str(ca_file),
            "BERTH_RUNTIME": "docker",
            "BERTH_HEALTH_SOCKET": str(data_dir.parent / f"{data_dir.name}-health.sock"),
            "BERTH_LOG_FORMAT": "json",
            "BERTH_BACKOFF_MAX": "2s",
        }
        self.log_file = log_file
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = await asyncio.to_thread(self.log_file.open, "ab")
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "berth", "agent", env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        finally:
            log.close()

    async def wait_exit(self, timeout_s: float) -> int:
        assert self.process is not None
        return await asyncio.wait_for(self.process.wait(), timeout_s)

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), 15)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.is_file() else ""


# (name, install token, the platform's config) -> an agent process, not started yet
AgentFactory = Callable[[str, str, PlatformConfig], AgentProcess]


async def new_node(api: httpx.AsyncClient, name: str) -> tuple[str, str]:
    """A new node's id and the install token of its Docker install script."""
    node_id = str((await api.post("/nodes", json={"name": name})).json()["id"])
    install = (await api.post(f"/nodes/{node_id}/script", json={"type": "docker"})).json()
    return node_id, str(install["installToken"])


async def eventually(description: str, check: Callable[[], Awaitable[Any]], timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"{description}: not within {timeout_s} s (last: {last!r})")


async def wait_for_engine(timeout_s: float = 60.0) -> None:
    """The engine may be restarting (fault tests restart it): wait until it answers."""

    def _up() -> bool:
        return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0

    async def _check() -> bool:
        return await asyncio.to_thread(_up)

    await eventually("the Docker engine answers", _check, timeout_s)


async def sweep_containers(prefix: str) -> None:
    """Removes every test container of the prefix (labelled io.berth.test=1)."""

    def _sweep() -> None:
        listed = subprocess.run(
            [
                "docker",
                "ps",
                "-aq",
                "--filter",
                "label=io.berth.test=1",
                "--filter",
                f"label=org.dyrectorio.container.prefix={prefix}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        ids = listed.stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)

    await asyncio.to_thread(_sweep)


def api_client(started: Started) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"{started.http_url}/api/default",
        headers={"authorization": f"Bearer {started.api_token}"},
        timeout=20,
    )
