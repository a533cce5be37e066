"""``berth agent`` as a process on the real Docker runtime, talking to the test suite's fake
platform on 127.0.0.1 — what the soak, flood and burst benchmarks drive — and its footprint from
/proc (RSS, open file descriptors, threads)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fakeplatform import FakePlatform

from berth.proto import common_pb2
from kits.fault_kit import TunedPlatformServer, sweep_async


@dataclass(frozen=True)
class Footprint:
    rss_mb: float
    fds: int
    threads: int

    @classmethod
    def of(cls, pid: int) -> Footprint:
        status = Path(f"/proc/{pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        return cls(
            rss_mb=int(fields["VmRSS"].split()[0]) / 1024,
            fds=len(os.listdir(f"/proc/{pid}/fd")),
            threads=int(fields["Threads"].strip()),
        )


class CountingPlatform(FakePlatform):
    """Counts log lines instead of keeping them (a flood would fill the benchmark's memory)."""

    def __init__(self) -> None:
        super().__init__()
        self.log_lines = 0

    async def ContainerLogStream(self, request_iterator: Any, context: Any) -> common_pb2.Empty:  # type: ignore[override]
        async for _ in request_iterator:
            self.log_lines += 1
        return common_pb2.Empty()


def agent_env(data_dir: Path, token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BERTH_", "GRPC_", "DEBUG"))}
    env.update(
        {
            "GRPC_TOKEN": token,
            "DEBUG": "true",
            "INTERNAL_MOUNT_PATH": str(data_dir),
            "DATA_MOUNT_PATH": str(data_dir),
            "BERTH_RUNTIME": "docker",
            "BERTH_HEALTH_SOCKET": str(data_dir / "health.sock"),
            "BERTH_LOG_FORMAT": "json",
            "BERTH_LOG_LEVEL": "warning",
            "BERTH_STOP_GRACE": "1s",
        }
    )
    return env


@dataclass
class AgentProcess:
    platform: FakePlatform
    process: asyncio.subprocess.Process

    def footprint(self) -> Footprint:
        return Footprint.of(self.process.pid)


async def stop_process(process: asyncio.subprocess.Process, within_s: float) -> None:
    """SIGTERM (the agent's staged shutdown), SIGKILL when it has not exited ``within_s``."""
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), within_s)
        except TimeoutError:
            process.kill()
            await process.wait()


@contextlib.asynccontextmanager
async def agent_process(platform: FakePlatform, prefix: str) -> AsyncIterator[AgentProcess]:
    """A connected agent process; its containers (``prefix``) are swept afterwards."""
    async with TunedPlatformServer(platform) as server:
        with tempfile.TemporaryDirectory(prefix="berth-bench-") as folder:
            data = Path(folder)
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "berth",
                "agent",
                env=agent_env(data, server.platform.issue_connection_token()),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            try:
                await server.platform.wait_accepted(within_s=30)
                yield AgentProcess(server.platform, process)
            finally:
                await stop_process(process, within_s=30)
                await sweep_async(prefix)
