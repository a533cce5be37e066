"""Benchmark 4: the initial state list with 300 containers (DockerRuntime.list_state on their
prefix) vs ``docker ps -a`` listing the same containers; also vs the bare Engine API list call.
Median of 7. Target: ratio ≤ 1.5 (against ``docker ps -a``).

Run: eval "$(tools/testenv.sh env)"; .venv/bin/python bench/docker_state_list.py
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import kitpath  # noqa: F401
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

from berth.runtimes.docker import DockerRuntime

CONTAINERS = 300
ROUNDS = 7


async def measure() -> list[Row]:
    client = engine()
    prefix = new_prefix("lst")
    label = f"{PREFIX_LABEL}={prefix}"
    berth_times: list[float] = []
    cli_times: list[float] = []
    api_times: list[float] = []

    def create(index: int) -> None:
        client.api.create_container(IMAGE, name=f"{prefix}-c{index}", command=["true"], labels=labels(prefix))

    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(create, range(CONTAINERS)))
        with data_folder() as settings:
            runtime = DockerRuntime(settings)
            try:
                await runtime.preflight()
                for _ in range(ROUNDS):
                    started = time.perf_counter()
                    listed = await runtime.list_state(prefix)
                    berth_times.append(time.perf_counter() - started)
                    assert len(listed.items) == CONTAINERS

                    started = time.perf_counter()
                    await asyncio.to_thread(
                        subprocess.run,
                        ["docker", "ps", "-a", "--filter", f"label={label}"],
                        stdout=subprocess.DEVNULL,
                        check=True,
                    )
                    cli_times.append(time.perf_counter() - started)

                    started = time.perf_counter()
                    await asyncio.to_thread(client.api.containers, all=True, filters={"label": label})
                    api_times.append(time.perf_counter() - started)
            finally:
                await runtime.aclose()
    finally:
        await asyncio.to_thread(remove_prefix, client, prefix)
        client.close()
    berth, cli, api = (median(v) * 1000 for v in (berth_times, cli_times, api_times))
    return [
        (f"state list of {CONTAINERS} (ms) vs docker ps -a", berth, cli, berth / cli, "ratio <= 1.5"),
        (f"state list of {CONTAINERS} (ms) vs bare API call", berth, api, berth / api, "(informative)"),
    ]


def run() -> list[Row]:
    return asyncio.run(measure())


if __name__ == "__main__":
    print_rows("Benchmark 4: initial state list", run())
