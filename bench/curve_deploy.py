"""Curve: one deployment of N workloads from a local image (quick 5, 20; full 10, 100, 500).

Per size: DockerRuntime.deploy (command -> SUCCESSFUL at the runtime seam) vs the same create +
start done directly with the Docker SDK (bench/docker_deploy.py's floor), the two sides
alternating which goes first; rounds: 3 up to 10 workloads, 2 above (the engine's start time
dominates and varies with the machine's load). Target: 500 workloads <= 1.15x the SDK.
Both sides create and start one workload after the other (§6.2: a deployment's workloads are
deployed in order); each round prints its time, its cleanup's time and the load average.

    eval "$(tools/testenv.sh env)"; .venv/bin/python bench/curve_deploy.py [--full | --size N]

``--size N`` measures one size only and writes no files (the README's figures come from --full).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

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
                        cleanup_started = time.perf_counter()
                        await asyncio.to_thread(remove_prefix, client, prefix)
                        cleanup_s = time.perf_counter() - cleanup_started
                    taken = (floor if side == "floor" else berth)[-1]
                    print(
                        f"  {count} workloads, {side}: {taken:.1f} s; cleanup {cleanup_s:.1f} s; "
                        f"load {load_text()}",
                        file=sys.stderr,
                        flush=True,
                    )
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
        "load_1min_end": round(os.getloadavg()[0], 2),
    }


def load_text() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


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


def one_size(count: int) -> None:
    print(f"deploy {count} workloads; load {load_text()} at start", flush=True)
    measured = asyncio.run(point(count))
    print(f"curve_deploy: {measured}", flush=True)
    print_rows(
        "Curve: deployment size (one size, no files written)",
        [
            (
                f"deploy {count} workloads (s) vs SDK",
                measured["berth_s"],
                measured["sdk_s"],
                measured["ratio"],
                "",
            )
        ],
    )


if __name__ == "__main__":
    if "--size" in sys.argv:
        one_size(int(sys.argv[sys.argv.index("--size") + 1]))
    else:
        parse_full(sys.argv)
        print_rows("Curve: deployment size", run())
