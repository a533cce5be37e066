"""Benchmark 2: state latency. An external stop of a container → the EXITED item from
DockerRuntime.watch, vs the same ``die`` event seen by a raw ``docker events`` subscriber running
at the same time. Target: p50 added latency ≤ 20 ms.

Run: eval "$(tools/testenv.sh env)"; .venv/bin/python bench/docker_state_latency.py
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import docker
import kitpath  # noqa: F401
from kits.benchkit import (
    IMAGE,
    PREFIX_LABEL,
    SERVE_FOREVER,
    Row,
    data_folder,
    engine,
    labels,
    median,
    new_prefix,
    print_rows,
    remove_prefix,
)

from berth.model import ContainerState, StateUpdate
from berth.runtimes.docker import DockerRuntime

TRIALS = 15


def raw_subscriber(
    client: docker.DockerClient, prefix: str, seen: dict[str, float], ready: threading.Event
) -> docker.types.daemon.CancellableStream[dict[str, object]]:
    stream = client.api.events(
        decode=True, filters={"type": "container", "event": "die", "label": f"{PREFIX_LABEL}={prefix}"}
    )

    def pump() -> None:
        ready.set()
        for event in stream:
            attributes = event.get("Actor", {}).get("Attributes", {})  # type: ignore[union-attr]
            seen.setdefault(str(attributes.get("name")), time.perf_counter())

    threading.Thread(target=pump, name="raw-docker-events", daemon=True).start()
    return stream


async def measure() -> list[Row]:
    client = engine()
    prefix = new_prefix("lat")
    raw_seen: dict[str, float] = {}
    berth_seen: dict[str, float] = {}
    running: dict[str, asyncio.Event] = {}
    berth_latency: list[float] = []
    raw_latency: list[float] = []
    added: list[float] = []
    with data_folder() as settings:
        runtime = DockerRuntime(settings)
        updates = runtime.watch(prefix)

        async def consume() -> None:
            update: StateUpdate
            async for update in updates:
                now = time.perf_counter()
                for item in update.items:
                    if item.state is ContainerState.EXITED:
                        berth_seen.setdefault(item.ref.key, now)
                    elif item.state is ContainerState.RUNNING and item.ref.key in running:
                        running[item.ref.key].set()

        ready = threading.Event()
        raw = raw_subscriber(client, prefix, raw_seen, ready)
        await asyncio.to_thread(ready.wait)
        first = await anext(updates)
        assert first.initial
        consumer = asyncio.create_task(consume(), name="bench-state-consumer")
        try:
            for trial in range(TRIALS):
                name = f"{prefix}-c{trial}"
                running[name] = asyncio.Event()

                def start(container_name: str = name) -> None:
                    created = client.api.create_container(
                        IMAGE, name=container_name, command=["sh", "-c", SERVE_FOREVER], labels=labels(prefix)
                    )
                    client.api.start(created["Id"])

                await asyncio.to_thread(start)
                await asyncio.wait_for(running[name].wait(), 10)
                stopped_at = time.perf_counter()
                await asyncio.to_thread(client.api.stop, name, timeout=5)
                for _ in range(500):
                    if name in raw_seen and name in berth_seen:
                        break
                    await asyncio.sleep(0.01)
                berth_latency.append(berth_seen[name] - stopped_at)
                raw_latency.append(raw_seen[name] - stopped_at)
                added.append(berth_seen[name] - raw_seen[name])
        finally:
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer
            await updates.aclose()
            raw.close()
            await runtime.aclose()
            await asyncio.to_thread(remove_prefix, client, prefix)
            client.close()
    berth_ms, raw_ms, added_ms = (
        median(berth_latency) * 1000,
        median(raw_latency) * 1000,
        median(added) * 1000,
    )
    return [
        ("stop -> EXITED p50 (ms)", berth_ms, raw_ms, berth_ms / raw_ms, "see added latency"),
        ("added latency p50 (ms, berth - raw events)", added_ms, 0.0, 0.0, "<= 20 ms"),
    ]


def run() -> list[Row]:
    return asyncio.run(measure())


if __name__ == "__main__":
    print_rows("Benchmark 2: state latency", run())
