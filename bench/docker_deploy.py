"""Benchmark 1: deploy overhead. 20 workloads from a local image through DockerRuntime.deploy
(command → SUCCESSFUL at the runtime seam) vs the same create+start sequence done directly with
the docker SDK, alternating which goes first, median of 5 rounds (3 in the quick run) (the engine's start time
dominates and varies with the machine's load). Target: ratio ≤ 1.15.

Run: eval "$(tools/testenv.sh env)"; .venv/bin/python bench/docker_deploy.py
"""

from __future__ import annotations

import asyncio
import os
import time

import docker
import kitpath  # noqa: F401
from kits.benchkit import (
    IDLE_FOREVER,
    IMAGE,
    RUN_LABEL,
    TEST_LABEL,
    DiscardEvents,
    Row,
    data_folder,
    engine,
    labels,
    median,
    new_prefix,
    print_rows,
    remove_prefix,
    run_id,
)

from berth.model import DeploymentSpec, DockerOptions, WorkloadSpec, frozen_map
from berth.runtimes.docker import DockerRuntime

WORKLOADS = 20
ROUNDS = 5 if os.environ.get("BERTH_BENCH_FULL") == "1" else 3  # the quick run (make bench) takes 3


def workloads(prefix: str, count: int = WORKLOADS) -> tuple[WorkloadSpec, ...]:
    repository, tag = IMAGE.split(":")
    return tuple(
        WorkloadSpec(
            id=f"w{i}",
            prefix=prefix,
            name=f"w{i}",
            image_name=repository,
            tag=tag,
            commands=("sh", "-c"),
            args=(IDLE_FOREVER,),
            docker=DockerOptions(labels=frozen_map({TEST_LABEL: "1", RUN_LABEL: run_id()})),
        )
        for i in range(count)
    )


def floor_deploy(client: docker.DockerClient, prefix: str, count: int = WORKLOADS) -> float:
    """The engine's own cost: create + start each container, in order, with the same config."""
    started = time.perf_counter()
    for i in range(count):
        name = f"{prefix}-w{i}"
        host = client.api.create_host_config(
            restart_policy={"Name": "unless-stopped"}, extra_hosts=["host.docker.internal:host-gateway"]
        )
        created = client.api.create_container(
            IMAGE,
            name=name,
            hostname=name,
            entrypoint=["sh", "-c"],
            command=[IDLE_FOREVER],
            labels=labels(prefix),
            host_config=host,
        )
        client.api.start(created["Id"])
    return time.perf_counter() - started


async def berth_deploy(runtime: DockerRuntime, prefix: str, count: int = WORKLOADS) -> float:
    spec = DeploymentSpec(id="bench", prefix=prefix, workloads=workloads(prefix, count))
    started = time.perf_counter()
    await runtime.deploy(spec, DiscardEvents())
    return time.perf_counter() - started


async def measure() -> list[Row]:
    client = engine()
    berth_times: list[float] = []
    floor_times: list[float] = []
    with data_folder() as settings:
        runtime = DockerRuntime(settings)
        try:
            await runtime.preflight()  # the client exists before timing, as in a running agent
            for round_number in range(ROUNDS):
                for side in ("floor", "berth") if round_number % 2 == 0 else ("berth", "floor"):
                    prefix = new_prefix("dep")
                    try:
                        if side == "floor":
                            floor_times.append(await asyncio.to_thread(floor_deploy, client, prefix))
                        else:
                            berth_times.append(await berth_deploy(runtime, prefix))
                    finally:
                        await asyncio.to_thread(remove_prefix, client, prefix)
        finally:
            await runtime.aclose()
            client.close()
    berth, floor = median(berth_times), median(floor_times)
    return [(f"deploy {WORKLOADS} workloads (s)", berth, floor, berth / floor, "ratio <= 1.15")]


def run() -> list[Row]:
    return asyncio.run(measure())


if __name__ == "__main__":
    print_rows("Benchmark 1: deploy overhead", run())
