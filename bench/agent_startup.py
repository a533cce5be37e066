"""Agent start-up and idle footprint, measured on the agent as shipped.

Starts ``python -m berth agent`` (configured from the environment, as an install script does)
against the fake platform of the test suite on 127.0.0.1. The agent is Berth as a user installs
it: the wheel built from this tree, installed with ``constraints.txt`` into a fresh virtual
environment (``shipped_python``; cached under /var/tmp by the wheel's content hash, so a rerun
reuses it). Three ways an agent comes up are measured:

* **restart**: the node's key and a connection token in place (the usual case);
* **first start**: a connection token, the key generated at start;
* **fresh install**: an install token and no key; the platform answers the first ``Connect`` with
  ``replaceToken``, the agent swaps its token and idles (what ``install.sh`` leaves running).

It prints:

* the time from process start to the ``Connect`` call arriving at the platform (median of N runs)
  for each of them, next to two floors measured in the same run, interleaved with the agent's
  runs: a bare ``python -c pass`` (process start to exit) and a bare gRPC client (``grpc.aio`` and
  the generated stubs imported, one channel, one ``Connect`` with a valid token: process start to
  its arrival);
* each one's resident memory (VmRSS, with PSS and private) after it has been connected and idle
  for ``--idle-seconds`` (all of them side by side, each on its own platform; ``--idle-runs``
  rounds, medians); the same for the development checkout's venv (``.venv``, editable install,
  with its development tools: ``rich`` there makes ``structlog`` load more), labelled as such;
* the machine's load average before and after (the figures are wall-clock times on a shared
  machine: compare runs at a similar load).

    .venv/bin/python bench/agent_startup.py                   # memory runtime, 5 runs, 60 s idle
    .venv/bin/python bench/agent_startup.py --runtime docker  # with the Docker runtime (needs dockerd)

Targets: start -> Connect <= 250 ms (issue 15, Docker runtime; dagent 0.15.4: 121 ms), idle RSS
<= 50 MB after 60 s connected, for every way an agent comes up.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import fcntl
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fakeplatform import PlatformServer  # noqa: E402
from kits.agent_process import Footprint, stop_process  # noqa: E402
from kits.wheel import build_wheel, install_venv  # noqa: E402

import berth  # noqa: E402
from berth.agent.credentials import AgentKey, FileCredentialStore  # noqa: E402

CONNECT_TARGET_S = 0.25
RSS_TARGET_MB = 50.0
VENV_CACHE = Path("/var/tmp")

SCENARIOS = {
    "restart": "restart (key and connection token in place)",
    "first": "first start (connection token, key generated)",
    "fresh": "fresh install (install token, no key; replaceToken swapped)",
}

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


# -- the agent as shipped ------------------------------------------------------------------------------


def _content_hash(wheel: Path) -> str:
    """Of the files in the wheel (names and bytes), not of the zip (which holds timestamps)."""
    digest = hashlib.sha256()
    with zipfile.ZipFile(wheel) as archive:
        for name in sorted(archive.namelist()):
            digest.update(name.encode() + b"\0" + archive.read(name))
    return digest.hexdigest()[:16]


def _clean_env() -> dict[str, str]:
    drop = ("BERTH_", "GRPC_", "DEBUG", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def shipped_python() -> Path:
    """The interpreter of a venv holding the wheel built from this tree, its dependencies pinned
    by constraints.txt: built once per wheel content (under a lock: runs may overlap), then
    reused."""
    with tempfile.TemporaryDirectory(prefix="berth-bench-wheel-") as tmp:
        wheel = build_wheel(Path(tmp))
        venv = VENV_CACHE / f"berth-bench-venv-{_content_hash(wheel)}"
        complete = venv / ".complete"
        with open(f"{venv}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not complete.exists():
                shutil.rmtree(venv, ignore_errors=True)
                installed = install_venv(venv, str(wheel), _clean_env(), timeout_s=900)
                if installed.returncode != 0:
                    raise RuntimeError(f"pip install of the wheel failed:\n{installed.stderr[-3000:]}")
            complete.touch()  # its last use: what _prune_venvs goes by
    _prune_venvs(keep=venv)
    return venv / "bin" / "python"


def _prune_venvs(keep: Path, unused_s: float = 7 * 86400) -> None:
    """Venvs of older trees, unused for a week (each tree's change makes a new one)."""
    for other in VENV_CACHE.glob("berth-bench-venv-*"):
        complete = other / ".complete"
        if other == keep or not other.is_dir() or not complete.exists():
            continue
        if time.time() - complete.stat().st_mtime > unused_s:
            shutil.rmtree(other, ignore_errors=True)


def compile_berth() -> None:
    """Berth's bytecode in the development checkout, written once as pip writes it when it
    installs the wheel: a checkout run with PYTHONDONTWRITEBYTECODE (as this project's machines
    set it) would otherwise compile every Berth module at every start."""
    package = Path(berth.__file__).parent
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=True)


# -- one agent -------------------------------------------------------------------------------------------


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
    env = _clean_env()
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
    server: PlatformServer, python: Path, data_dir: Path, runtime: str, scenario: str
) -> tuple[asyncio.subprocess.Process, float]:
    """The agent started for ``scenario`` (its folder seeded by the caller); returns it and the
    time from its start to its Connect at the platform."""
    platform = server.platform
    token = platform.issue_install_token() if scenario == "fresh" else platform.issue_connection_token()
    before = len(platform.connects)
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        str(python),
        "-m",
        "berth",
        "agent",
        env=_env(data_dir, token, runtime),
        cwd=data_dir,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await platform.wait_for(lambda: len(platform.connects) > before, within_s=30)
    return process, platform.connects[before].at - started


def _seeded(folder: Path, seed: Path, scenario: str) -> Path:
    """A data folder; for a restart, holding the node's key already."""
    folder.mkdir(parents=True)
    for item in seed.iterdir() if scenario == "restart" else ():
        shutil.copy2(item, folder / item.name)
    return folder


@dataclass(frozen=True)
class Idle:
    rss_mb: float
    pss_mb: float
    private_mb: float
    threads: int
    healthy: bool  # still running and connected; for a fresh install, its token swapped


async def _idle(
    python: Path, folder: Path, runtime: str, scenario: str, idle_s: float, sampled: asyncio.Barrier
) -> Idle:
    """One agent on its own platform, connected and idle for ``idle_s``; it is stopped once every
    agent measured side by side (``sampled``) was: an agent's exit would turn pages it shares with
    the others into their private ones."""
    try:
        async with PlatformServer() as server:
            platform = server.platform
            process, _ = await _start_agent(server, python, folder, runtime, scenario)
            try:
                await platform.wait_accepted(within_s=30)
                if scenario == "fresh":
                    await platform.wait_unary("TokenReplaced", within_s=30)
                await asyncio.sleep(idle_s)
                memory = _memory_mb(process.pid)
                threads = Footprint.of(process.pid).threads
                healthy = process.returncode is None and platform.connected
                await sampled.wait()
            finally:
                await stop_process(process, within_s=20)
    except BaseException:
        await sampled.abort()  # the others stop waiting for this one
        raise
    return Idle(memory["Rss"], memory["Pss"], memory["Private"], threads, healthy)


# -- the runs ----------------------------------------------------------------------------------------------


async def _bare_connect(server: PlatformServer, python: Path) -> float:
    """Process start -> Connect arrival for the bare gRPC client (the floor)."""
    platform = server.platform
    token = platform.issue_connection_token()
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    before = len(platform.connects)
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        str(python), "-c", BARE_CONNECT, platform.iss, token, claims["sub"], env=_clean_env()
    )
    try:
        await platform.wait_for(lambda: len(platform.connects) > before, within_s=30)
        return platform.connects[before].at - started
    finally:
        await stop_process(process, within_s=20)
        await platform.wait_for(lambda: not platform.connected, within_s=10)


async def _bare_python(python: Path) -> float:
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(str(python), "-c", "pass")
    await process.wait()
    return time.monotonic() - started


def _ms(values: list[float]) -> str:
    low, high = min(values) * 1000, max(values) * 1000
    return f"median {statistics.median(values) * 1000:.0f} ms (min {low:.0f}, max {high:.0f})"


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


async def _connect_times(
    python: Path, tmp: Path, seed: Path, runs: int, runtime: str
) -> dict[str, list[float]]:
    """Start -> Connect for each scenario and the two floors, interleaved, the order alternating:
    a load change hits all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in (*SCENARIOS, "bare", "python")}
    async with PlatformServer() as server:
        for index in range(runs):
            order = ("bare", *SCENARIOS) if index % 2 == 0 else (*reversed(SCENARIOS), "bare")
            for kind in order:
                if kind == "bare":
                    times["bare"].append(await _bare_connect(server, python))
                    continue
                folder = _seeded(tmp / f"{kind}{index}", seed, kind)
                process, seconds = await _start_agent(server, python, folder, runtime, kind)
                times[kind].append(seconds)
                await stop_process(process, within_s=20)
                await server.platform.wait_for(lambda: not server.platform.connected, within_s=10)
            times["python"].append(await _bare_python(python))
    return times


async def _idle_rounds(
    agents: dict[str, Path], tmp: Path, seed: Path, runtime: str, idle_s: float, rounds: int
) -> dict[tuple[str, str], list[Idle]]:
    """Every (agent, scenario) idle side by side, each on its own platform; ``rounds`` times."""
    results: dict[tuple[str, str], list[Idle]] = {(a, s): [] for a in agents for s in SCENARIOS}
    for index in range(rounds):
        keys = list(results)
        folders = [_seeded(tmp / f"idle{index}-{a}-{s}", seed, s) for a, s in keys]
        pairs = zip(keys, folders, strict=True)
        sampled = asyncio.Barrier(len(keys))
        measured = await asyncio.gather(
            *(_idle(agents[a], f, runtime, s, idle_s, sampled) for (a, s), f in pairs)
        )
        for key, idle in zip(keys, measured, strict=True):
            results[key].append(idle)
    return results


def _median_idle(values: list[Idle]) -> Idle:
    middle = sorted(values, key=lambda idle: idle.rss_mb)[(len(values) - 1) // 2]
    return Idle(
        statistics.median(v.rss_mb for v in values),
        middle.pss_mb,
        middle.private_mb,
        middle.threads,
        all(v.healthy for v in values),
    )


async def measure(runs: int, idle_s: float, idle_rounds: int, runtime: str, dev: bool) -> int:
    shipped = shipped_python()
    agents = {"shipped": shipped}
    if dev:
        compile_berth()
        agents["dev venv"] = Path(sys.executable)
    load_before = _load()
    with tempfile.TemporaryDirectory(prefix="berth-bench-") as tmp_name:
        tmp = Path(tmp_name)
        seed = tmp / "seed"
        AgentKey.load_or_create(FileCredentialStore(seed))
        times = await _connect_times(shipped, tmp, seed, runs, runtime)
        load_between = _load()
        idle = await _idle_rounds(agents, tmp, seed, runtime, idle_s, idle_rounds)
    load_after = _load()

    print(
        f"runtime: {runtime}; agent as shipped: {shipped.parent.parent} (the wheel built from this tree); "
        f"{runs} runs per scenario"
    )
    print(
        f"load average (1, 5, 15 min): before {load_before}; after the start-ups {load_between}; "
        f"after the idle rounds {load_after}"
    )
    restart = statistics.median(times["restart"])
    print(
        f"process start -> Connect at the platform: median {restart * 1000:.0f} ms "
        f"(min {min(times['restart']) * 1000:.0f}, max {max(times['restart']) * 1000:.0f}; restart, "
        f"key in place; target <= {CONNECT_TARGET_S * 1000:.0f} ms)"
    )
    print(f"first start (the key generated) -> Connect: {_ms(times['first'])}")
    print(f"fresh install (install token, the key generated) -> Connect: {_ms(times['fresh'])}")
    print(f"floor, bare gRPC client start -> Connect: {_ms(times['bare'])}")
    print(f"floor, python -c pass: {_ms(times['python'])}")
    print(f"Berth adds to the bare gRPC client: {(restart - statistics.median(times['bare'])) * 1000:.0f} ms")

    ok = restart <= CONNECT_TARGET_S
    for agent in agents:
        for scenario, label in SCENARIOS.items():
            values = idle[(agent, scenario)]
            figure = _median_idle(values)
            each = ", ".join(f"{v.rss_mb:.1f}" for v in values)
            prefix = "" if agent == "shipped" else "dev venv (not what users run), "
            print(
                f"{prefix}idle RSS after {idle_s:.0f} s connected: {figure.rss_mb:.1f} MB "
                f"({label}; {agent}; median of {len(values)}: {each}; target <= {RSS_TARGET_MB:.0f} MB; "
                f"PSS {figure.pss_mb:.1f} MB, private {figure.private_mb:.1f} MB; {figure.threads} threads); "
                f"still connected: {figure.healthy}"
            )
            if agent == "shipped":
                ok = ok and figure.rss_mb <= RSS_TARGET_MB and figure.healthy
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5, help="start -> Connect runs per scenario")
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--idle-rounds", type=int, default=1, help="idle measurements per scenario")
    parser.add_argument("--runtime", choices=("memory", "docker"), default="memory")
    parser.add_argument("--no-dev", action="store_true", help="skip the development venv's idle figures")
    args = parser.parse_args()
    return asyncio.run(measure(args.runs, args.idle_seconds, args.idle_rounds, args.runtime, not args.no_dev))


if __name__ == "__main__":
    sys.exit(main())
