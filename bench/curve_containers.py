"""Curve: containers on a node (quick 100, 300; full 100, 300, 1,000).

Per size, on the real engine:
* the initial state list (DockerRuntime.list_state on the prefix) vs ``docker ps -a`` listing the
  same containers, and vs the bare Engine API list call; median of 5, taken alternately;
* the CPU time (this process, all threads) of one steady resync: the full list compared with what
  was last reported, nothing changed; median of 5;
* ``berth agent`` (Docker runtime, a process) watching the prefix: its RSS once the platform has
  the full initial list, and the time from the containerState command to that list.
Targets: 1,000-container list <= 1.5x ``docker ps -a``; resync CPU no worse than linear.

    eval "$(tools/testenv.sh env)"; .venv/bin/python bench/curve_containers.py [--full]
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import kitpath  # noqa: F401
from curve_kit import Curve, Panel, measure, parse_full
from fakeplatform import FakePlatform
from kits.agent_process import agent_process
from kits.benchkit import (
    IMAGE,
    PREFIX_LABEL,
    Row,
    data_folder,
    engine,
    labels,
    median,
    new_prefix,
    print_rows,
    remove_prefix,
)
from kits.fault_kit import watch

from berth.runtimes.docker import DockerRuntime
from berth.runtimes.docker.engine import Engine
from berth.runtimes.docker.watcher import StateWatcher

ROUNDS = 5


def create(prefix: str, count: int) -> None:
    client = engine()
    tags = labels(prefix)

    def one(index: int) -> None:
        client.api.create_container(IMAGE, name=f"{prefix}-c{index}", command=["true"], labels=tags)

    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, range(count)))
    finally:
        client.close()


def docker_ps(label: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["docker", "ps", "-a", "--filter", f"label={label}"], stdout=subprocess.DEVNULL, check=True
    )
    return time.perf_counter() - started


async def list_times(prefix: str, count: int) -> tuple[float, float, float]:
    label = f"{PREFIX_LABEL}={prefix}"
    client = engine()
    berth: list[float] = []
    cli: list[float] = []
    api: list[float] = []
    with data_folder() as settings:
        runtime = DockerRuntime(settings)
        try:
            await runtime.preflight()
            for _ in range(ROUNDS):
                started = time.perf_counter()
                listed = await runtime.list_state(prefix)
                berth.append(time.perf_counter() - started)
                if len(listed.items) != count:
                    raise RuntimeError(f"listed {len(listed.items)} of {count} containers")
                cli.append(await asyncio.to_thread(docker_ps, label))
                started = time.perf_counter()
                await asyncio.to_thread(client.api.containers, all=True, filters={"label": label})
                api.append(time.perf_counter() - started)
        finally:
            await runtime.aclose()
            client.close()
    return median(berth), median(cli), median(api)


async def resync_cpu(prefix: str) -> float:
    """CPU seconds of one resync that finds nothing changed (the steady state of a node)."""
    bridge = Engine()
    watcher = StateWatcher(bridge, prefix, resync_interval_s=3600.0)
    try:
        await watcher._resync()  # first: everything is new; what follows is the steady state
        spent: list[float] = []
        for _ in range(ROUNDS):
            before = time.process_time()
            changes = await watcher._resync()
            spent.append(time.process_time() - before)
            if changes:
                raise RuntimeError(f"a steady resync reported {len(changes)} changes")
        return median(spent)
    finally:
        await bridge.aclose()


async def agent_figures(prefix: str, count: int) -> tuple[float, float, float]:
    """(idle RSS MB, RSS MB with the list sent, command -> full initial list s) of an agent process."""
    platform = FakePlatform()
    async with agent_process(platform, prefix) as agent:
        await asyncio.sleep(1.0)
        idle = agent.footprint().rss_mb
        started = time.perf_counter()
        await platform.send(watch(prefix))
        stream = await platform.wait_stream("ContainerState", within_s=60)

        def items() -> int:
            return sum(len(message.data) for message in stream.messages)

        await platform.wait_for(lambda: items() >= count, within_s=120)
        took = time.perf_counter() - started
        await asyncio.sleep(0.5)
        return idle, agent.footprint().rss_mb, took


async def point(count: int) -> dict[str, float]:
    prefix = new_prefix("cc")
    client = engine()
    try:
        await asyncio.to_thread(create, prefix, count)
        berth, cli, api = await list_times(prefix, count)
        cpu = await resync_cpu(prefix)
        idle, rss, took = await agent_figures(prefix, count)
    finally:
        await asyncio.to_thread(remove_prefix, client, prefix)
        client.close()
    return {
        "size": count,
        "list_ms": berth * 1000,
        "docker_ps_ms": cli * 1000,
        "api_ms": api * 1000,
        "ratio_ps": berth / cli,
        "resync_cpu_ms": cpu * 1000,
        "agent_idle_rss_mb": idle,
        "agent_rss_mb": rss,
        "agent_list_ms": took * 1000,
    }


def new_curve() -> Curve:
    return Curve(
        name="curve_containers",
        title="Containers on a node: initial state list, resync CPU, agent RSS",
        x_label="containers on the node",
        panels=[
            Panel(
                "initial state list (median of 5)",
                "ms",
                [
                    ("list_ms", "Berth list_state"),
                    ("docker_ps_ms", "docker ps -a"),
                    ("api_ms", "bare API call"),
                ],
                growth_of="list_ms",
            ),
            Panel("one steady resync: CPU", "CPU ms", [("resync_cpu_ms", "Berth resync")], "resync_cpu_ms"),
            Panel(
                "agent process watching them",
                "RSS MB",
                [("agent_rss_mb", "initial list sent"), ("agent_idle_rss_mb", "before the watch")],
                growth_of="agent_rss_mb",
            ),
        ],
    )


def run() -> list[Row]:
    curve = new_curve()
    last, size = measure(curve, (100, 300), (100, 300, 1000), point)
    reading = curve.growths()["resync_cpu_ms"]
    return [
        (
            f"curve: state list of {size} (ms) vs docker ps -a",
            last["list_ms"],
            last["docker_ps_ms"],
            last["ratio_ps"],
            "ratio <= 1.5",
        ),
        (
            f"curve: resync CPU at {size} (ms), growth k={reading['exponent']}",
            last["resync_cpu_ms"],
            0.0,
            0.0,
            f"no worse than linear: {reading['reading']}",
        ),
        (f"curve: agent RSS watching {size} containers (MB)", last["agent_rss_mb"], 0.0, 0.0, "informative"),
    ]


if __name__ == "__main__":
    parse_full(sys.argv)
    print_rows("Curve: containers on a node", run())
