"""Curve: one deployment of N workloads from a local image (quick 5, 20; full 10, 100, 500).

Per size: DockerRuntime.deploy (command -> SUCCESSFUL at the runtime seam) vs the same create +
start done directly with the Docker SDK (bench/docker_deploy.py's floor), the two sides
alternating which goes first; rounds: 3 up to 10 workloads, 2 above (the engine's start time
dominates and varies with the machine's load). Target: 500 workloads <= 1.15x the SDK.

    eval "$(tools/testenv.sh env)"; .venv/bin/python bench/curve_deploy.py [--full]
"""

from __future__ import annotations

import asyncio
import sys

import kitpath  # noqa: F401
from curve_kit import Curve, Panel, measure, parse_full
from docker_deploy import berth_deploy, floor_deploy
from kits.benchkit import Row, data_folder, engine, median, new_prefix, print_rows, remove_prefix

from berth.runtimes.docker import DockerRuntime


def rounds_for(count: int) -> int:
    return 3 if count <= 10 else 2


async def point(count: int) -> dict[str, float]:
    client = engine()
    berth: list[float] = []
    floor: list[float] = []
    with data_folder() as settings:
        runtime = DockerRuntime(settings)
        try:
            await runtime.preflight()
            for round_number in range(rounds_for(count)):
                for side in ("floor", "berth") if round_number % 2 == 0 else ("berth", "floor"):
                    prefix = new_prefix("cd")
                    try:
                        if side == "floor":
                            floor.append(await asyncio.to_thread(floor_deploy, client, prefix, count))
                        else:
                            berth.append(await berth_deploy(runtime, prefix, count))
                    finally:
                        await asyncio.to_thread(remove_prefix, client, prefix)
        finally:
            await runtime.aclose()
            client.close()
    b, f = median(berth), median(floor)
    return {
        "size": count,
        "berth_s": b,
        "sdk_s": f,
        "ratio": b / f,
        "berth_per_workload_ms": b / count * 1000,
    }


def new_curve() -> Curve:
    return Curve(
        name="curve_deploy",
        title="One deployment of N workloads (local image): command -> SUCCESSFUL",
        x_label="workloads in the deployment",
        panels=[
            Panel(
                "deploy time",
                "s",
                [("berth_s", "Berth DockerRuntime.deploy"), ("sdk_s", "SDK create+start")],
                growth_of="berth_s",
            ),
            Panel("ratio to the SDK", "ratio", [("ratio", "Berth / SDK")]),
            Panel("per workload", "ms", [("berth_per_workload_ms", "Berth")]),
        ],
    )


def run() -> list[Row]:
    last, size = measure(new_curve(), (5, 20), (10, 100, 500), point)
    return [
        (
            f"curve: deploy {size} workloads (s) vs SDK",
            last["berth_s"],
            last["sdk_s"],
            last["ratio"],
            "ratio <= 1.15",
        )
    ]


if __name__ == "__main__":
    parse_full(sys.argv)
    print_rows("Curve: deployment size", run())
