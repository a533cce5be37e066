"""Reconnect after a platform outage: how long after the platform is back does the agent's
``Connect`` arrive, and how often does it try while the platform is away?

Real ``berth agent`` processes (memory runtime), each against its own fake platform on 127.0.0.1
(the test suite's, tests/fakeplatform.py). Outages of each length run side by side, so the run
lasts about as long as the longest outage: the platform stops (open streams end, as when its
process dies), a plain TCP listener stands on its port counting every connection attempt and
closing it (as a proxy in front of a stopped platform does), then the platform starts again on
the same port. An outage repeats, a few seconds after the agent is back, until the run's window
is spent: outages that come close together, the case where a backoff that keeps growing shows.

    .venv/bin/python bench/reconnect.py            # 3, 10, 30 and 60 s outages, about 80 s
    .venv/bin/python bench/reconnect.py --full     # adds 5 min, more agents, about 6 min
    .venv/bin/python bench/reconnect.py --agent-env BERTH_BACKOFF_MAX=60s   # another policy

Targets (issue 15): reconnect after the platform returns p50 <= 2 s and p95 <= 5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent / "tests")]  # the benchmarks, and the suite's kits

from fakeplatform import PlatformServer  # noqa: E402
from kits.agent_process import agent_env, stop_process  # noqa: E402

P50_TARGET_S = 2.0
P95_TARGET_S = 5.0
QUICK_OUTAGES_S = (3.0, 10.0, 30.0, 60.0)
FULL_OUTAGES_S = (*QUICK_OUTAGES_S, 300.0)
HOLD_S = 3.0  # up this long between two outages: close together, below any healthy period
RECONNECT_WAIT_S = 60.0  # a reconnect slower than this counts as this (and fails the target)

Row = tuple[str, float, float, float, str]


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (q in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def peak_per_second(times: Sequence[float]) -> int:
    """The most events in any one-second window."""
    ordered = sorted(times)
    best = start = 0
    for end, at in enumerate(ordered):
        while at - ordered[start] >= 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


class CountingListener:
    """Stands where the platform was: accepts each connection, notes when, and closes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.accepted: list[float] = []
        self._server: asyncio.Server | None = None

    async def _accept(self, _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted.append(time.monotonic())
        writer.close()

    async def __aenter__(self) -> CountingListener:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


@dataclass
class Outcome:
    outage_s: float
    delays_s: list[float] = field(default_factory=list)
    attempts_per_s: list[float] = field(default_factory=list)
    peak_attempts: list[int] = field(default_factory=list)


@contextlib.asynccontextmanager
async def agent_on_own_platform(
    data_dir: Path, extra_env: dict[str, str]
) -> AsyncIterator[tuple[PlatformServer, asyncio.subprocess.Process]]:
    async with PlatformServer() as server:
        env = agent_env(data_dir, server.platform.issue_connection_token())
        env.update({"BERTH_RUNTIME": "memory", **extra_env})
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "berth",
            "agent",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            yield server, process
        finally:
            await stop_process(process, within_s=20)


async def outage_cycles(server: PlatformServer, outcome: Outcome, deadline: float) -> None:
    """Outages of ``outcome.outage_s`` until the next one would end after ``deadline``."""
    platform = server.platform
    accepted = 1
    while time.monotonic() + outcome.outage_s <= deadline or not outcome.delays_s:
        await server.stop()
        async with CountingListener(server.port) as listener:
            await asyncio.sleep(outcome.outage_s)
        await server.start()
        back = time.monotonic()
        accepted += 1
        try:
            record = await platform.wait_accepted(count=accepted, within_s=RECONNECT_WAIT_S)
            delay = max(0.0, record.at - back)
        except AssertionError:
            delay = RECONNECT_WAIT_S
            accepted = sum(1 for c in platform.connects if c.status.name == "OK")
        outcome.delays_s.append(delay)
        outcome.attempts_per_s.append(len(listener.accepted) / outcome.outage_s)
        outcome.peak_attempts.append(peak_per_second(listener.accepted))
        await asyncio.sleep(HOLD_S)


async def measure(outages_s: Sequence[float], agents: int, extra_env: dict[str, str]) -> list[Outcome]:
    outcomes = [Outcome(length) for length in outages_s]
    async with contextlib.AsyncExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="berth-reconnect-")))
        servers: list[tuple[Outcome, PlatformServer]] = []
        for outcome in outcomes:
            for index in range(agents):
                data = folder / f"{outcome.outage_s:g}-{index}"
                server, _ = await stack.enter_async_context(agent_on_own_platform(data, extra_env))
                servers.append((outcome, server))
        for _, server in servers:
            await server.platform.wait_accepted(within_s=60)
        # The window is the longest outage plus a little, so that one runs exactly once.
        deadline = time.monotonic() + max(outages_s) + 1.0
        async with asyncio.TaskGroup() as group:
            for index, (outcome, server) in enumerate(servers):
                group.create_task(outage_cycles(server, outcome, deadline), name=f"outages-{index}")
    return outcomes


def report(outcomes: Sequence[Outcome]) -> list[Row]:
    rows: list[Row] = []
    for outcome in outcomes:
        delays = outcome.delays_s
        p50, p95 = percentile(delays, 50), percentile(delays, 95)
        mean_rate = statistics.fmean(outcome.attempts_per_s)
        print(
            f"outage {outcome.outage_s:5.0f} s: reconnect after the platform is back "
            f"p50 {p50:.2f} s, p95 {p95:.2f} s, max {max(delays):.2f} s ({len(delays)} outages); "
            f"attempts while away {mean_rate:.2f}/s per agent, peak {max(outcome.peak_attempts)} in 1 s"
        )
        label = f"reconnect after a {outcome.outage_s:.0f} s outage"
        rows.append((f"{label}, p50 (s)", p50, 0.0, 0.0, f"<= {P50_TARGET_S:g} s"))
        rows.append((f"{label}, p95 (s)", p95, 0.0, 0.0, f"<= {P95_TARGET_S:g} s"))
    every_delay = [d for outcome in outcomes for d in outcome.delays_s]
    rate = max(max(o.peak_attempts) for o in outcomes)
    print(
        f"all outages: p50 {percentile(every_delay, 50):.2f} s, p95 {percentile(every_delay, 95):.2f} s "
        f"({len(every_delay)} outages); most attempts by one agent in 1 s: {rate}"
    )
    rows.append(("reconnect: most attempts by one agent in 1 s", float(rate), 0.0, 0.0, "bounded"))
    return rows


def run(full: bool = False, extra_env: dict[str, str] | None = None) -> list[Row]:
    """For bench/run_all.py: the quick run's rows."""
    outages = FULL_OUTAGES_S if full else QUICK_OUTAGES_S
    agents = 6 if full else 4
    outcomes = asyncio.run(measure(outages, agents, extra_env or {}))
    return report(outcomes)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--full", action="store_true", help="add the 5 min outage; 6 agents per length")
    parser.add_argument(
        "--agent-env", action="append", default=[], metavar="NAME=VALUE", help="extra agent setting"
    )
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.agent_env)
    started = time.monotonic()
    rows = run(args.full, extra)
    print(f"({time.monotonic() - started:.0f} s)")
    worst_p50 = max(berth for figure, berth, *_ in rows if figure.endswith("p50 (s)"))
    worst_p95 = max(berth for figure, berth, *_ in rows if figure.endswith("p95 (s)"))
    return 0 if worst_p50 <= P50_TARGET_S and worst_p95 <= P95_TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
