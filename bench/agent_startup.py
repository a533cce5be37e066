"""Agent start-up and idle footprint.

Starts ``python -m berth agent`` (configured from the environment, as an install script does)
against the fake platform of the test suite on 127.0.0.1 and prints:

* the time from process start to the ``Connect`` call arriving at the platform (median of N runs)
  for a restart (the node's key in place, the usual case) and for a first start (the key is
  generated), next to two floors measured in the same run, interleaved with the agent's runs: a bare
  ``python -c pass`` (process start to exit) and a bare gRPC client (``grpc.aio`` and the generated
  stubs imported, one channel, one ``Connect`` with a valid token: process start to its arrival);
* the agent's resident memory (VmRSS) after it has been connected and idle for a while (a
  restarted agent; ``--fresh-key`` for one that generated its key);
* Berth's bytecode is compiled first, as an installed wheel has it (see ``compile_berth``);
* the machine's load average before and after (the figures are wall-clock times on a shared
  machine: compare runs at a similar load).

    .venv/bin/python bench/agent_startup.py                 # memory runtime, 5 runs, 60 s idle
    .venv/bin/python bench/agent_startup.py --runtime docker  # with the Docker runtime (needs dockerd)

Targets: start -> Connect <= 250 ms (issue 15, Docker runtime; dagent 0.15.4: 121 ms), idle RSS
<= 50 MB after 60 s connected.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fakeplatform import PlatformServer  # noqa: E402

import berth  # noqa: E402
from berth.agent.credentials import AgentKey, FileCredentialStore  # noqa: E402

CONNECT_TARGET_S = 0.25
RSS_TARGET_MB = 50.0

# The floor: what any Python gRPC agent pays before its Connect reaches the platform.
BARE_CONNECT = """
import asyncio, sys
import grpc.aio
from berth.proto import agent_pb2, agent_pb2_grpc

async def connect(target, token, node_id):
    async with grpc.aio.insecure_channel(target) as channel:
        call = agent_pb2_grpc.AgentStub(channel).Connect(
            agent_pb2.AgentInfo(id=node_id, version="floor"), metadata=(("dyo-node-token", token),)
        )
        async for _ in call:
            pass

asyncio.run(connect(*sys.argv[1:]))
"""


def _memory_mb(pid: int) -> dict[str, float]:
    """Rss (what the target is about), Pss and Private (USS) from /proc/<pid>/smaps_rollup."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("Rss", "Pss", "Private_Clean", "Private_Dirty"):
            values[name] = int(rest.split()[0]) / 1024
    values["Private"] = values.pop("Private_Clean", 0.0) + values.pop("Private_Dirty", 0.0)
    return values


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def compile_berth() -> None:
    """Berth's bytecode, written once as pip writes it when it installs the wheel: a checkout
    run with PYTHONDONTWRITEBYTECODE (as this project's machines set it) would otherwise compile
    every Berth module at every start, which an installed agent never does."""
    package = Path(berth.__file__).parent
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=True)


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


async def _bare_connect(server: PlatformServer) -> float:
    """Process start -> Connect arrival for the bare gRPC client (the floor)."""
    platform = server.platform
    token = platform.issue_connection_token()
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    before = len(platform.connects)
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", BARE_CONNECT, platform.iss, token, claims["sub"]
    )
    try:
        await platform.wait_for(lambda: len(platform.connects) > before, within_s=30)
        return platform.connects[before].at - started
    finally:
        await _stop(process)
        await platform.wait_for(lambda: not platform.connected, within_s=10)


async def _bare_python() -> float:
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await process.wait()
    return time.monotonic() - started


def _ms(values: list[float]) -> str:
    low, high = min(values) * 1000, max(values) * 1000
    return f"median {statistics.median(values) * 1000:.0f} ms (min {low:.0f}, max {high:.0f})"


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 20)
        except TimeoutError:
            process.kill()
            await process.wait()


def _seeded(folder: Path, seed: Path | None) -> Path:
    """A data folder; with ``seed``, holding the node's key already (a restart, the usual case)."""
    folder.mkdir(parents=True)
    for item in seed.iterdir() if seed is not None else ():
        shutil.copy2(item, folder / item.name)
    return folder


async def measure(runs: int, idle_s: float, runtime: str, fresh_key: bool) -> int:
    compile_berth()
    load_before = os.getloadavg()
    times: list[float] = []
    first: list[float] = []
    bare: list[float] = []
    python: list[float] = []
    async with PlatformServer() as server:
        with tempfile.TemporaryDirectory(prefix="berth-bench-") as tmp:
            seed = Path(tmp) / "seed"
            AgentKey.load_or_create(FileCredentialStore(seed))
            for index in range(runs):
                # interleaved, the order alternating: a load change hits all of them alike
                order = ("restart", "first", "bare") if index % 2 else ("bare", "first", "restart")
                for kind in order:
                    if kind == "bare":
                        bare.append(await _bare_connect(server))
                        continue
                    folder = _seeded(Path(tmp) / f"{kind}{index}", None if kind == "first" else seed)
                    process, seconds = await _start_agent(server, folder, runtime)
                    (first if kind == "first" else times).append(seconds)
                    await _stop(process)
                    await server.platform.wait_for(lambda: not server.platform.connected, within_s=10)
                python.append(await _bare_python())
            folder = _seeded(Path(tmp) / "idle", None if fresh_key else seed)
            process, seconds = await _start_agent(server, folder, runtime)
            (first if fresh_key else times).append(seconds)
            try:
                await server.platform.wait_accepted(count=2 * runs + 1, within_s=30)
                await asyncio.sleep(idle_s)
                alive = process.returncode is None and server.platform.connected
                memory = _memory_mb(process.pid)
                threads = _threads(process.pid)
            finally:
                await _stop(process)
    load_after = os.getloadavg()
    median = statistics.median(times)
    load = f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}"
    print(f"runtime: {runtime}; runs: {len(times)} restarts, {len(first)} first starts; {load}")
    print(
        f"process start -> Connect at the platform: median {median * 1000:.0f} ms "
        f"(min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f}; key in place; "
        f"target <= {CONNECT_TARGET_S * 1000:.0f} ms)"
    )
    print(f"first start (the key generated) -> Connect: {_ms(first)}")
    print(f"floor, bare gRPC client start -> Connect: {_ms(bare)}")
    print(f"floor, python -c pass: {_ms(python)}")
    print(f"Berth adds to the bare gRPC client: {(median - statistics.median(bare)) * 1000:.0f} ms")
    rss = memory["Rss"]
    key = "first start, key generated" if fresh_key else "key in place"
    print(
        f"idle RSS after {idle_s:.0f} s connected: {rss:.1f} MB "
        f"(target <= {RSS_TARGET_MB:.0f} MB; {key}; PSS {memory['Pss']:.1f} MB, "
        f"private {memory['Private']:.1f} MB; {threads} threads); still connected: {alive}"
    )
    return 0 if median <= CONNECT_TARGET_S and rss <= RSS_TARGET_MB and alive else 1


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--runtime", choices=("memory", "docker"), default="memory")
    parser.add_argument(
        "--fresh-key", action="store_true", help="the idle agent generates its key (a first start)"
    )
    args = parser.parse_args()
    return asyncio.run(measure(args.runs, args.idle_seconds, args.runtime, args.fresh_key))


if __name__ == "__main__":
    sys.exit(main())
