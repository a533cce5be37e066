"""Curve: concurrent log follows (quick 1, 10; full 1, 10, 50).

K exited containers share 200,000 lines (50,000 in the quick run), split evenly. Per K, one after the other:
* floor: K ``docker logs -f`` processes at once, into /dev/null: total lines / wall time;
* runtime: K DockerRuntime.logs follows at once in this process (history from the start, the
  bounded buffer in the path), as bench/docker_log_throughput.py does for one;
* agent: ``berth agent`` as a process, K containerLog follows from the platform (gRPC, one
  message a line): lines counted at the platform / wall time, and the agent's peak RSS;
* transport: a bare gRPC client process (bench/bare_log_sender.py) sending as many messages on K
  calls to the same platform, nothing else: what one message a line costs any Python agent.
Targets: 50 follows >= 0.7x the engine's combined rate, the agent's RSS bounded.

    eval "$(tools/testenv.sh env)"; .venv/bin/python bench/curve_logs.py [--full]
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import kitpath  # noqa: F401
from curve_kit import Curve, Panel, full_mode, measure, parse_full
from docker_log_throughput import count_follow
from kits.agent_process import AgentProcess, CountingPlatform, agent_process
from kits.benchkit import IMAGE, Row, data_folder, engine, labels, new_prefix, print_rows, remove_prefix
from kits.fault_kit import TunedPlatformServer, logs

from berth.runtimes.docker import DockerRuntime

QUIET_S = 3.0  # the agent's count stops growing this long: what was delivered is all there is
SENDER = Path(__file__).resolve().parent / "bare_log_sender.py"


def total_lines() -> int:
    return 200_000 if full_mode() else 50_000


def create(prefix: str, follows: int, lines: int) -> list[str]:
    client = engine()
    names = [f"{prefix}-l{i}" for i in range(follows)]
    try:
        ids = []
        for name in names:
            created = client.api.create_container(
                IMAGE,
                name=name,
                command=["sh", "-c", f"seq 1 {lines}"],
                labels=labels(prefix),
            )
            client.api.start(created["Id"])
            ids.append(created["Id"])
        for cid in ids:
            client.api.wait(cid, timeout=120)
    finally:
        client.close()
    return names


async def floor_rate(names: list[str], lines: int) -> float:
    started = time.perf_counter()
    processes = [
        await asyncio.create_subprocess_exec(
            "docker", "logs", "-f", name, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for name in names
    ]
    codes = await asyncio.gather(*(process.wait() for process in processes))
    if any(codes):
        raise RuntimeError(f"docker logs -f exited with {codes}")
    return len(names) * lines / (time.perf_counter() - started)


async def runtime_rate(names: list[str], lines: int) -> tuple[float, int]:
    """(delivered lines/s, dropped lines) of K follows through DockerRuntime.logs at once."""
    with data_folder() as settings:
        runtime = DockerRuntime(settings)
        try:
            await runtime.preflight()
            started = time.perf_counter()
            counts = await asyncio.gather(*(count_follow(runtime, name, lines) for name in names))
            took = time.perf_counter() - started
        finally:
            await runtime.aclose()
    return sum(c[0] for c in counts) / took, sum(c[1] for c in counts)


async def agent_rate(prefix: str, names: list[str], lines: int) -> tuple[float, float, float, int]:
    """(lines/s at the platform, idle RSS MB, peak RSS MB, lines not delivered) through an agent."""
    platform = CountingPlatform()
    agent: AgentProcess
    async with agent_process(platform, prefix) as agent:
        await asyncio.sleep(1.0)
        idle = peak = agent.footprint().rss_mb
        expected = len(names) * lines
        started = time.perf_counter()
        for name in names:
            await platform.send(logs(prefix, name.removeprefix(f"{prefix}-"), streaming=True, tail=lines))
        last_count, last_change = 0, time.perf_counter()
        finished = started
        while platform.log_lines < expected and time.perf_counter() - last_change < QUIET_S:
            await asyncio.sleep(0.05)
            peak = max(peak, agent.footprint().rss_mb)
            if platform.log_lines != last_count:
                last_count, last_change = platform.log_lines, time.perf_counter()
                finished = last_change
        delivered = platform.log_lines
    if delivered == 0:
        raise RuntimeError("the agent delivered no log line")
    return delivered / (finished - started), idle, peak, expected - delivered


async def transport_rate(follows: int, lines: int) -> float:
    """Lines/s at the platform from a bare gRPC client sending ``follows`` x ``lines`` messages."""
    platform = CountingPlatform()
    async with TunedPlatformServer(platform) as server:
        sender = await asyncio.create_subprocess_exec(
            sys.executable,
            str(SENDER),
            server.iss,
            "--streams",
            str(follows),
            "--lines",
            str(lines),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert sender.stdin is not None and sender.stdout is not None
        try:
            async with asyncio.timeout(30):
                if (await sender.stdout.readline()).strip() != b"ready":
                    raise RuntimeError("the bare sender did not connect")
            started = time.perf_counter()
            sender.stdin.write(b"go\n")
            await sender.stdin.drain()
            async with asyncio.timeout(600):
                code = await sender.wait()  # after every call was answered: all lines counted
            took = time.perf_counter() - started
            expected = follows * lines
            if code or platform.log_lines != expected:
                raise RuntimeError(
                    f"the bare sender exited with {code}, {platform.log_lines}/{expected} lines"
                )
        finally:
            if sender.returncode is None:
                sender.kill()
                await sender.wait()
    return expected / took


async def point(follows: int) -> dict[str, float]:
    prefix = new_prefix("lg")
    lines = total_lines() // follows
    client = engine()
    try:
        names = await asyncio.to_thread(create, prefix, follows, lines)
        floor = await floor_rate(names, lines)
        runtime, dropped = await runtime_rate(names, lines)
        agent, idle, peak, missing = await agent_rate(prefix, names, lines)
        transport = await transport_rate(follows, lines)
    finally:
        await asyncio.to_thread(remove_prefix, client, prefix)
        client.close()
    return {
        "size": follows,
        "floor_lines_s": floor,
        "runtime_lines_s": runtime,
        "agent_lines_s": agent,
        "transport_lines_s": transport,
        "runtime_ratio": runtime / floor,
        "agent_ratio": agent / floor,
        "transport_ratio": transport / floor,
        "agent_to_transport": agent / transport,
        "runtime_dropped": dropped,
        "agent_missing": missing,
        "agent_idle_rss_mb": idle,
        "agent_peak_rss_mb": peak,
    }


def new_curve() -> Curve:
    return Curve(
        name="curve_logs",
        title=f"Concurrent log follows ({total_lines():,} lines shared by K exited containers)",
        x_label="concurrent follows (K)",
        panels=[
            Panel(
                "total lines/s delivered",
                "lines/s",
                [
                    ("floor_lines_s", "K x docker logs -f"),
                    ("runtime_lines_s", "K x DockerRuntime.logs"),
                    ("agent_lines_s", "agent -> platform (gRPC)"),
                    ("transport_lines_s", "bare gRPC client -> platform"),
                ],
            ),
            Panel(
                "ratio to docker logs -f",
                "ratio",
                [
                    ("runtime_ratio", "runtime"),
                    ("agent_ratio", "agent"),
                    ("transport_ratio", "bare gRPC client"),
                    ("agent_to_transport", "agent / bare gRPC client"),
                ],
            ),
            Panel(
                "agent process RSS",
                "MB",
                [("agent_peak_rss_mb", "peak during the follows"), ("agent_idle_rss_mb", "before")],
                growth_of="agent_peak_rss_mb",
            ),
        ],
    )


def run() -> list[Row]:
    last, size = measure(new_curve(), (1, 10), (1, 10, 50), point)
    return [
        (
            f"curve: {size} follows, runtime lines/s vs docker logs -f",
            last["runtime_lines_s"],
            last["floor_lines_s"],
            last["runtime_ratio"],
            "ratio >= 0.7",
        ),
        (
            f"curve: {size} follows, agent->platform lines/s",
            last["agent_lines_s"],
            last["floor_lines_s"],
            last["agent_ratio"],
            "ratio >= 0.7",
        ),
        (
            f"curve: {size} follows, agent peak RSS (MB)",
            last["agent_peak_rss_mb"],
            last["agent_idle_rss_mb"],
            last["agent_peak_rss_mb"] / last["agent_idle_rss_mb"],
            "bounded",
        ),
    ]


if __name__ == "__main__":
    parse_full(sys.argv)
    print_rows("Curve: concurrent log follows", run())
