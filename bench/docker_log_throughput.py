"""Benchmark 3: log throughput. A container prints 200,000 lines; lines/s delivered through
DockerRuntime.logs (follow, history from the start, timestamps on, the bounded buffer in the
path) vs ``docker logs -f`` into /dev/null. Median of 3. Target: ratio ≥ 0.7.

Run: eval "$(tools/testenv.sh env)"; .venv/bin/python bench/docker_log_throughput.py
"""

from __future__ import annotations

import asyncio
import subprocess
import time

import kitpath  # noqa: F401
from kits.benchkit import (
    IMAGE,
    Row,
    data_folder,
    engine,
    labels,
    median,
    new_prefix,
    print_rows,
    remove_prefix,
)

from berth.model import ContainerRef, LogGap
from berth.runtimes.docker import DockerRuntime

LINES = 200_000
ROUNDS = 3


def floor_rate(name: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["docker", "logs", "-f", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True
    )
    return LINES / (time.perf_counter() - started)


async def count_follow(runtime: DockerRuntime, name: str, lines: int) -> tuple[int, int]:
    """(delivered, dropped) lines of one follow of ``name``, read until ``lines`` are accounted for."""
    delivered = dropped = 0
    follow = runtime.logs(ContainerRef("", name), follow=True, tail_lines=lines)
    try:
        async for item in follow:
            if isinstance(item, LogGap):
                dropped += item.dropped_lines
            else:
                delivered += 1
            if delivered + dropped >= lines:
                break
    finally:
        await follow.aclose()
    return delivered, dropped


async def berth_rate(runtime: DockerRuntime, name: str) -> tuple[float, int]:
    started = time.perf_counter()
    delivered, dropped = await count_follow(runtime, name, LINES)
    return delivered / (time.perf_counter() - started), dropped


async def measure() -> list[Row]:
    client = engine()
    prefix = new_prefix("log")
    name = f"{prefix}-flood"
    berth_rates: list[float] = []
    floor_rates: list[float] = []
    dropped_total = 0
    try:
        created = client.api.create_container(
            IMAGE, name=name, command=["sh", "-c", f"seq 1 {LINES}"], labels=labels(prefix)
        )
        client.api.start(created["Id"])
        client.api.wait(created["Id"], timeout=60)
        with data_folder() as settings:
            runtime = DockerRuntime(settings)
            try:
                await runtime.preflight()
                for _ in range(ROUNDS):
                    floor_rates.append(await asyncio.to_thread(floor_rate, name))
                    rate, dropped = await berth_rate(runtime, name)
                    berth_rates.append(rate)
                    dropped_total += dropped
            finally:
                await runtime.aclose()
    finally:
        await asyncio.to_thread(remove_prefix, client, prefix)
        client.close()
    berth, floor = median(berth_rates), median(floor_rates)
    return [
        (
            f"log lines/s ({LINES} lines, dropped {dropped_total})",
            berth,
            floor,
            berth / floor,
            "ratio >= 0.7",
        ),
    ]


def run() -> list[Row]:
    return asyncio.run(measure())


if __name__ == "__main__":
    print_rows("Benchmark 3: log throughput", run())
