"""Agent start-up and idle footprint.

Starts ``python -m berth agent`` (configured from the environment, as an install script does)
against the fake platform of the test suite on 127.0.0.1 and prints:

* the time from process start to the ``Connect`` call arriving at the platform (median of N runs);
* the agent's resident memory (VmRSS) after it has been connected and idle for a while.

    .venv/bin/python bench/agent_startup.py                 # memory runtime, 5 runs, 60 s idle
    .venv/bin/python bench/agent_startup.py --runtime docker  # with the Docker runtime (needs dockerd)

Targets (issue 2): under 1 s to Connect, under 50 MB idle RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fakeplatform import PlatformServer  # noqa: E402

CONNECT_TARGET_S = 1.0
RSS_TARGET_MB = 50.0


def _memory_mb(pid: int) -> dict[str, float]:
    """Rss (what the target is about), Pss and Private (USS) from /proc/<pid>/smaps_rollup."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("Rss", "Pss", "Private_Clean", "Private_Dirty"):
            values[name] = int(rest.split()[0]) / 1024
    values["Private"] = values.pop("Private_Clean", 0.0) + values.pop("Private_Dirty", 0.0)
    return values


def _env(data_dir: Path, token: str, runtime: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BERTH_", "GRPC_"))}
    env.update(
        {
            "GRPC_TOKEN": token,
            "DEBUG": "true",  # the fake platform serves plaintext, like the platform behind its proxy
            "INTERNAL_MOUNT_PATH": str(data_dir),
            "DATA_MOUNT_PATH": str(data_dir),
            "BERTH_RUNTIME": runtime,
            "BERTH_HEALTH_SOCKET": str(data_dir / "health.sock"),
            "BERTH_LOG_FORMAT": "json",
            "BERTH_LOG_LEVEL": "warning",
        }
    )
    return env


async def _start_agent(
    server: PlatformServer, data_dir: Path, runtime: str
) -> tuple[asyncio.subprocess.Process, float]:
    platform = server.platform
    token = platform.issue_connection_token()
    before = len(platform.connects)
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "berth",
        "agent",
        env=_env(data_dir, token, runtime),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await platform.wait_for(lambda: len(platform.connects) > before, within_s=30)
    connect = platform.connects[before]
    return process, connect.at - started


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 20)
        except TimeoutError:
            process.kill()
            await process.wait()


async def measure(runs: int, idle_s: float, runtime: str) -> int:
    async with PlatformServer() as server:
        with tempfile.TemporaryDirectory(prefix="berth-bench-") as tmp:
            times: list[float] = []
            for index in range(runs):
                process, seconds = await _start_agent(server, Path(tmp) / f"run{index}", runtime)
                times.append(seconds)
                await _stop(process)
            process, seconds = await _start_agent(server, Path(tmp) / "idle", runtime)
            times.append(seconds)
            try:
                await server.platform.wait_accepted(count=runs + 1, within_s=30)
                await asyncio.sleep(idle_s)
                alive = process.returncode is None and server.platform.connected
                memory = _memory_mb(process.pid)
            finally:
                await _stop(process)
    median = statistics.median(times)
    print(f"runtime: {runtime}; runs: {len(times)}")
    spread = f"min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f}"
    print(
        f"process start -> Connect at the platform: median {median * 1000:.0f} ms "
        f"({spread}; target < {CONNECT_TARGET_S * 1000:.0f} ms)"
    )
    rss = memory["Rss"]
    print(
        f"idle RSS after {idle_s:.0f} s connected: {rss:.1f} MB "
        f"(target < {RSS_TARGET_MB:.0f} MB; PSS {memory['Pss']:.1f} MB, private {memory['Private']:.1f} MB); "
        f"still connected: {alive}"
    )
    return 0 if median < CONNECT_TARGET_S and rss < RSS_TARGET_MB and alive else 1


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--runtime", choices=("memory", "docker"), default="memory")
    args = parser.parse_args()
    return asyncio.run(measure(args.runs, args.idle_seconds, args.runtime))


if __name__ == "__main__":
    sys.exit(main())
