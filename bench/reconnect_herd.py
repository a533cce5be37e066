"""A fleet reconnecting after a platform restart: 200 agents, one platform that goes away for a
few seconds and comes back. Is there a herd at the platform, and how far apart do the agents
arrive?

Each simulated agent is the agent's real ``Session`` (its reconnect loop, backoff policy and gRPC
channel, configured by the real settings loader), all in this one process. 200 ``berth agent``
processes would need about 10 GB and would spend the 2 cores on start-up rather than on
reconnecting; what is measured here, the timing of the reconnect loop and the attempts it makes,
is the same code either way. The platform is a real gRPC server in a child process (so it has the
other core) that accepts any node, holds each ``Connect`` open and notes when each arrives; while
it is away, a plain TCP listener on its port notes every connection attempt.

    .venv/bin/python bench/reconnect_herd.py [--agents 200] [--outage 5] [--png herd.png]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # not gRPC's note on every connection the stop ends

import grpc.aio
import structlog

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "tests"))

from fakeplatform import mint_token  # noqa: E402
from reconnect import CountingListener, Row, peak_per_second, percentile  # noqa: E402

from berth.agent.credentials import parse_token  # noqa: E402
from berth.agent.health import HealthState  # noqa: E402
from berth.agent.session import AgentIdentity, Session  # noqa: E402
from berth.agent.tokens import TokenKeeper  # noqa: E402
from berth.proto import agent_pb2, agent_pb2_grpc  # noqa: E402
from berth.settings import ConnectionSettings, load_agent_settings  # noqa: E402

SETTLE_S = 2.0  # everyone connected this long before the platform goes away
REJOIN_WAIT_S = 60.0


# -- the platform (child process) ------------------------------------------------------------------


class HerdPlatform(agent_pb2_grpc.AgentServicer):
    """Accepts every node and holds its ``Connect`` open; notes each arrival."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[str, float]] = []
        self.open: set[str] = set()
        self.changed = asyncio.Event()

    async def Connect(self, request: agent_pb2.AgentInfo, context: Any) -> Any:  # type: ignore[override]
        self.arrivals.append((request.id, time.monotonic()))
        self.open.add(request.id)
        self.changed.set()
        try:
            await asyncio.Event().wait()  # held until the platform stops
        finally:
            self.open.discard(request.id)
        yield agent_pb2.AgentCommand()  # never reached: makes this a stream handler


async def _start(platform: HerdPlatform, port: int) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    agent_pb2_grpc.add_AgentServicer_to_server(platform, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, bound


async def _until(platform: HerdPlatform, predicate: Any, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while not predicate():
        platform.changed.clear()
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(platform.changed.wait(), left)
    return True


async def serve(agents: int, outage_s: float) -> None:
    """The child: up until every agent is connected, away for ``outage_s``, up again until every
    agent is back; the record as one JSON line on stdout."""
    platform = HerdPlatform()
    server, port = await _start(platform, 0)
    print(f"port {port}", flush=True)
    if not await _until(platform, lambda: len(platform.open) >= agents, REJOIN_WAIT_S):
        raise SystemExit(f"only {len(platform.open)} of {agents} agents connected")
    await asyncio.sleep(SETTLE_S)
    down = time.monotonic()
    await server.stop(None)
    async with CountingListener(port) as listener:
        await asyncio.sleep(outage_s)
    server, _ = await _start(platform, port)
    back = time.monotonic()
    rejoined = lambda: len({node for node, at in platform.arrivals if at >= back}) >= agents  # noqa: E731
    await _until(platform, rejoined, REJOIN_WAIT_S)
    after = [(node, at) for node, at in platform.arrivals if at >= back]
    print(json.dumps({"down": down, "back": back, "away": listener.accepted, "after": after}), flush=True)
    await server.stop(None)


# -- the fleet (this process) ----------------------------------------------------------------------


class MemoryStore:
    """Credential store of a simulated agent: nothing persists."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def read(self, key: str) -> str | None:
        return self.values.get(key) or None

    def write(self, key: str, value: str) -> None:
        self.values[key] = value

    def delete(self, key: str) -> None:
        self.values.pop(key, None)


def connection_settings(extra_env: dict[str, str], folder: Path) -> ConnectionSettings:
    """What ``berth agent`` would load from this environment (the policy included)."""
    environ = {"DEBUG": "true", "INTERNAL_MOUNT_PATH": str(folder), "BERTH_RUNTIME": "memory", **extra_env}
    return load_agent_settings(environ).connection


async def _ignore(_: object) -> None:
    return None


@contextlib.asynccontextmanager
async def fleet(settings: ConnectionSettings, iss: str, agents: int) -> AsyncIterator[list[Session]]:
    sessions: list[Session] = []
    tasks: list[asyncio.Task[int]] = []
    for index in range(agents):
        raw = mint_token(iss=iss, sub=str(uuid.uuid4()), token_type="connection")
        keeper = TokenKeeper(MemoryStore(), parse_token(raw))
        session = Session(settings, keeper, AgentIdentity(settings.version, "bench-key"), HealthState())
        sessions.append(session)
        tasks.append(asyncio.create_task(session.run(_ignore, lambda: None), name=f"herd-agent-{index}"))
    try:
        yield sessions
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(s.channel.aclose() for s in sessions), return_exceptions=True)


@dataclass
class HerdResult:
    agents: int
    outage_s: float
    reconnect_s: list[float]
    attempts_away: list[float]  # seconds since the platform went away
    attempts_back: list[float]  # seconds since it came back


async def measure(agents: int, outage_s: float, extra_env: dict[str, str]) -> HerdResult:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(BENCH / "reconnect_herd.py"),
        "--serve",
        "--agents",
        str(agents),
        "--outage",
        str(outage_s),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,  # grpc's notes on the calls cancelled by the stop
    )
    assert child.stdout is not None
    try:
        first = (await asyncio.wait_for(child.stdout.readline(), 30)).decode().split()
        iss = f"127.0.0.1:{first[1]}"
        with tempfile.TemporaryDirectory(prefix="berth-herd-") as folder:
            settings = connection_settings(extra_env, Path(folder))
            async with fleet(settings, iss, agents):
                budget = REJOIN_WAIT_S * 2 + SETTLE_S + outage_s + 30
                line = await asyncio.wait_for(child.stdout.readline(), budget)
        record = json.loads(line)
    finally:
        if child.returncode is None:
            child.kill()
        await child.wait()
    down, back = record["down"], record["back"]
    first_back: dict[str, float] = {}
    for node, at in record["after"]:
        first_back.setdefault(node, at - back)
    missing = agents - len(first_back)
    reconnect = sorted(first_back.values()) + [REJOIN_WAIT_S] * missing
    return HerdResult(
        agents,
        outage_s,
        reconnect,
        [at - down for at in record["away"]],
        [at - back for _, at in record["after"]],
    )


def plot(result: HerdResult, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.hist(result.reconnect_s, bins=40, color="#3b7dd8")
    left.set_xlabel("reconnect after the platform is back (s)")
    left.set_ylabel("agents")
    left.set_title(f"{result.agents} agents, {result.outage_s:g} s platform restart")
    timeline = [t for t in result.attempts_away] + [result.outage_s + t for t in result.attempts_back]
    right.hist(timeline, bins=[x * 0.5 for x in range(int((max(timeline) + 1) * 2) + 1)], color="#d87b3b")
    right.axvline(result.outage_s, color="black", linestyle="--", label="platform back")
    right.set_xlabel("seconds since the platform went away")
    right.set_ylabel("connection attempts per 0.5 s")
    right.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    return True


def report(result: HerdResult, png: Path | None) -> list[Row]:
    times = result.reconnect_s
    p50, p95, worst = percentile(times, 50), percentile(times, 95), max(times)
    spread = percentile(times, 95) - percentile(times, 5)
    away_peak = peak_per_second(result.attempts_away)
    back_peak = peak_per_second(result.attempts_back)
    per_agent = len(result.attempts_away) / result.agents / result.outage_s
    print(
        f"{result.agents} agents, platform away {result.outage_s:g} s: reconnect after it is back "
        f"p50 {p50:.2f} s, p95 {p95:.2f} s, max {worst:.2f} s; spread (p5..p95) {spread:.2f} s"
    )
    print(
        f"attempts at the platform: peak {away_peak}/s while away "
        f"({per_agent:.2f}/s per agent on average), peak {back_peak}/s once back"
    )
    if png is not None:
        print(f"histogram: {png}" if plot(result, png) else "histogram: matplotlib is not installed")
    label = f"herd of {result.agents}, {result.outage_s:g} s restart"
    return [
        (f"{label}: reconnect p50 (s)", p50, 0.0, 0.0, "<= 2 s"),
        (f"{label}: reconnect p95 (s)", p95, 0.0, 0.0, "<= 5 s"),
        (f"{label}: reconnect max (s)", worst, 0.0, 0.0, "bounded"),
        (f"{label}: peak attempts/s at the platform", float(max(away_peak, back_peak)), 0.0, 0.0, "bounded"),
    ]


def run(agents: int = 200, outage_s: float = 5.0, png: Path | None = None) -> list[Row]:
    """For bench/run_all.py."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    return report(asyncio.run(measure(agents, outage_s, {})), png)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--outage", type=float, default=5.0, help="seconds the platform is away")
    parser.add_argument("--png", type=Path, default=BENCH / "results" / "reconnect_herd.png")
    parser.add_argument(
        "--agent-env", action="append", default=[], metavar="NAME=VALUE", help="extra agent setting"
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.agents, args.outage))
        return 0
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    extra = dict(item.split("=", 1) for item in args.agent_env)
    result = asyncio.run(measure(args.agents, args.outage, extra))
    report(result, args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
