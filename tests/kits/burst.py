"""200 commands in one burst across 50 containers, to ``berth agent`` as a process on the Docker
runtime: for every container stop, inspect, start, inspect, all queued at once. Every inspect is
answered, and per container the first answer shows the container exited and the second running
(per-container order kept). The floor is the same 200 operations straight on the engine with the
Docker SDK, containers in parallel (8 threads), each container's operations in order.

Run it with bench/burst.py; tests/faults/test_fault_long_runs.py asserts its figures.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from concurrent.futures import ThreadPoolExecutor

import docker
from fakeplatform import FakePlatform

from berth.proto import common_pb2
from kits.agent_process import AgentProcess, agent_process
from kits.benchkit import IMAGE, SERVE_FOREVER, Row, engine, labels
from kits.fault_kit import inspect, operate

CONTAINERS = 50


def create_containers(client: docker.DockerClient, prefix: str, names: list[str]) -> None:
    def create(name: str) -> None:
        created = client.api.create_container(
            IMAGE, ["sh", "-c", SERVE_FOREVER], name=f"{prefix}-{name}", labels=labels(prefix)
        )
        client.api.start(created["Id"])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, names))


def floor_burst(client: docker.DockerClient, prefix: str, names: list[str]) -> float:
    def sequence(name: str) -> None:
        full = f"{prefix}-{name}"
        client.api.stop(full, timeout=1)
        client.api.inspect_container(full)
        client.api.start(full)
        client.api.inspect_container(full)

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(sequence, names))
    return time.monotonic() - started


async def berth_burst(agent: AgentProcess, prefix: str, names: list[str]) -> tuple[float, int, bool]:
    platform = agent.platform
    commands = []
    for name in names:
        commands += [
            operate(prefix, name, common_pb2.STOP_CONTAINER),
            inspect(prefix, name),
            operate(prefix, name, common_pb2.START_CONTAINER),
            inspect(prefix, name),
        ]
    started = time.monotonic()
    for command in commands:
        await platform.send(command)
    expected = 2 * len(names)
    await platform.wait_for(lambda: len(platform.calls("ContainerInspect")) >= expected, within_s=120)
    elapsed = time.monotonic() - started
    seen: dict[str, list[str]] = {}
    for call in platform.calls("ContainerInspect"):
        status = json.loads(call.message.data)["State"]["Status"]
        seen.setdefault(call.metadata["dyo-container-name"], []).append(status)
    in_order = all(seen.get(n, []) == ["exited", "running"] for n in names)
    errors = len(platform.calls("CommandError"))
    return elapsed, len(platform.calls("ContainerInspect")), in_order and errors == 0


async def measure() -> list[Row]:
    prefix = f"benchburst{secrets.token_hex(2)}"
    names = [f"c{i}" for i in range(CONTAINERS)]
    client = engine()
    try:
        async with agent_process(FakePlatform(), prefix) as agent:
            await asyncio.to_thread(create_containers, client, prefix, names)
            berth_s, answered, in_order = await berth_burst(agent, prefix, names)
            floor_s = await asyncio.to_thread(floor_burst, client, prefix, names)
    finally:
        client.close()
    commands = 4 * CONTAINERS
    print(f"burst: {commands} commands, {answered} inspect answers, per-container order kept: {in_order}")
    return [
        (
            f"burst {commands} cmds / {CONTAINERS} containers (s)",
            berth_s,
            floor_s,
            berth_s / floor_s,
            "all answered",
        ),
        (
            "burst inspects answered in order",
            float(answered if in_order else 0),
            float(2 * CONTAINERS),
            1.0,
            "100/100",
        ),
    ]


def run() -> list[Row]:
    return asyncio.run(measure())
