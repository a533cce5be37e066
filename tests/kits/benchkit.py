"""Shared pieces of the Docker benchmarks: the engine client, labelled throw-away containers and
the row format ``(figure, berth, floor, ratio, target)`` that bench/run_all.py collects."""

from __future__ import annotations

import contextlib
import os
import secrets
import statistics
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import docker.errors

from berth.model import ContainerState, LogLevel
from berth.settings import DockerSettings

Row = tuple[str, float, float, float, str]
TEST_LABEL = "io.berth.test"
PREFIX_LABEL = "org.dyrectorio.container.prefix"
# Every container a benchmark creates carries its run's id (bench/run_all.py sets it), so the
# containers of a job stopped at its time limit can be removed without touching anyone else's.
RUN_LABEL = "io.berth.bench.run"
RUN_ENV = "BERTH_BENCH_RUN"
IMAGE = "local/busybox:1"
SERVE_FOREVER = "trap 'exit 0' TERM; while true; do sleep 0.1; done"
# Idle without a fork every 0.1 s: 500 SERVE_FOREVER loops fork 5,000 times a second and load a
# 2-core machine more than the deployment being measured.
IDLE_FOREVER = "trap 'exit 0' TERM; sleep 2147483647 & wait"


class DiscardEvents:
    """DeployEvents that only counts (a benchmark measures the runtime, not a transport)."""

    def __init__(self) -> None:
        self.messages = 0

    async def log(self, level: LogLevel, *lines: str) -> None:
        self.messages += 1

    async def instance(
        self, workload_id: str, state: ContainerState, reason: str, level: LogLevel = LogLevel.INFO
    ) -> None:
        self.messages += 1

    async def progress(self, workload_id: str, status: str, fraction: float) -> None:
        self.messages += 1


def new_prefix(kind: str) -> str:
    return f"bench{kind}{secrets.token_hex(2)}"


def engine() -> docker.DockerClient:
    return docker.from_env(version="auto", max_pool_size=32)


@contextlib.contextmanager
def data_folder() -> Iterator[DockerSettings]:
    with tempfile.TemporaryDirectory(prefix="berth-bench-") as folder:
        yield DockerSettings(data_mount_path=Path(folder), internal_mount_path=Path(folder))


# Forced removals at a time. Eight at once wedged Docker 20.10 on the 2-core test machine once
# (500 running containers: `docker info` hung until dockerd restarted); with four, 500 containers
# went in 34-51 s at load 4-10 there (bench/curve_deploy.py prints each cleanup's time).
REMOVE_THREADS = 4


def remove_prefix(client: docker.DockerClient, prefix: str) -> None:
    summaries = client.api.containers(all=True, filters={"label": f"{PREFIX_LABEL}={prefix}"})

    def remove(cid: str) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            client.api.remove_container(cid, force=True)

    with ThreadPoolExecutor(REMOVE_THREADS) as pool:
        list(pool.map(remove, [s["Id"] for s in summaries]))


def run_id() -> str:
    return os.environ.get(RUN_ENV, "by-hand")


def labels(prefix: str) -> dict[str, str]:
    return {TEST_LABEL: "1", PREFIX_LABEL: prefix, RUN_LABEL: run_id()}


def remove_run(run: str) -> int:
    """Remove every container of benchmark run ``run``; how many there were."""
    client = engine()
    try:
        summaries = client.api.containers(all=True, filters={"label": f"{RUN_LABEL}={run}"})
        for summary in summaries:
            with contextlib.suppress(docker.errors.NotFound):
                client.api.remove_container(summary["Id"], force=True)
        return len(summaries)
    finally:
        client.close()


def median(values: list[float]) -> float:
    return statistics.median(values)


def print_rows(title: str, rows: list[Row]) -> None:
    print(title)
    print(f"  {'figure':<44} {'berth':>10} {'floor':>10} {'ratio':>7}  target")
    for figure, berth, floor, ratio, target in rows:
        print(f"  {figure:<44} {berth:>10.3f} {floor:>10.3f} {ratio:>7.3f}  {target}")
