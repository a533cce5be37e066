"""Curve: the embedded platform with N connected agents (quick 10, 30; full 10, 50, 100).

Per N, a fresh ``berth platform serve`` process and a fleet process running N in-process agents on
the memory runtime (one node each, joined with the node's install token):
* the platform's RSS with N nodes registered and no agent, then with all N connected: the
  difference divided by N is the cost of one connected agent;
* deployment fan-out: one single-instance deployment per node, all started at once, until every
  one is recorded successful;
* command round trip: containerInspect through the platform's REST API (platform -> agent ->
  platform), one at a time over the nodes in turn; p50 and p99 of 200.
Targets at 100 agents: below 2 MB RSS per connected agent, round trip p99 under 100 ms.

    .venv/bin/python bench/curve_platform.py [--full]
"""

from __future__ import annotations

import asyncio
import json
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import kitpath  # noqa: F401
from curve_kit import Curve, Panel, measure, parse_full
from kits.agent_process import Footprint
from kits.benchkit import Row, print_rows
from platform_scale import _platform

ROUND_TRIPS = 200
CONNECT_WITHIN_S = 180.0


# -- the fleet (child process) ----------------------------------------------------------------


async def fleet(specs: list[dict[str, str]]) -> int:
    from fakeplatform import agent_settings

    from berth.agent.app import Agent
    from berth.runtimes.memory import MemoryRuntime

    agents = [
        Agent(agent_settings(Path(spec["dir"]), spec["token"], backoff_max_s=2.0), runtime=MemoryRuntime())
        for spec in specs
    ]
    tasks = [asyncio.create_task(agent.run(), name=f"fleet-agent-{i}") for i, agent in enumerate(agents)]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print(f"fleet: {len(agents)} agents started", flush=True)
    await stop.wait()
    for agent in agents:
        agent.request_shutdown()
    await asyncio.wait(tasks, timeout=30)
    return 0


# -- the measurement --------------------------------------------------------------------------


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _all_connected(api: httpx.AsyncClient, node_ids: set[str]) -> None:
    async with asyncio.timeout(CONNECT_WITHIN_S):
        while True:
            nodes = (await api.get("/nodes")).json()
            if sum(1 for n in nodes if n["id"] in node_ids and n["status"] == "connected") == len(node_ids):
                return
            await asyncio.sleep(0.25)


async def _fan_out(api: httpx.AsyncClient, node_ids: list[str]) -> float:
    body = lambda node_id: {  # noqa: E731
        "nodeId": node_id,
        "prefix": "fan",
        "instances": [{"image": "busybox", "config": {"common": {"name": "w0"}}}],
    }
    created = await asyncio.gather(*(api.post("/deployments", json=body(n)) for n in node_ids))
    ids = {response.json()["id"] for response in created}
    started = time.monotonic()
    await asyncio.gather(*(api.post(f"/deployments/{d}/start") for d in ids))
    async with asyncio.timeout(120):
        while True:
            statuses = [d["status"] for d in (await api.get("/deployments")).json() if d["id"] in ids]
            if all(s in ("successful", "failed") for s in statuses):
                break
            await asyncio.sleep(0.05)
    took = time.monotonic() - started
    if any(s != "successful" for s in statuses):
        raise RuntimeError(f"fan-out: {statuses.count('failed')} deployments failed")
    return took


async def _round_trips(api: httpx.AsyncClient, node_ids: list[str]) -> list[float]:
    times: list[float] = []
    for i in range(ROUND_TRIPS):
        started = time.perf_counter()
        response = await api.get(f"/nodes/{node_ids[i % len(node_ids)]}/fan/containers/w0/inspect")
        times.append(time.perf_counter() - started)
        response.raise_for_status()
    return times


async def point(agents: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="berth-curve-fleet-") as tmp:
        folder = Path(tmp)
        platform, url, token = await _platform(folder)
        fleet_process: asyncio.subprocess.Process | None = None
        try:
            async with httpx.AsyncClient(
                base_url=f"{url}/api/default", headers={"authorization": f"Bearer {token}"}, timeout=60
            ) as api:
                specs = []
                node_ids: list[str] = []
                for i in range(agents):
                    node_id = (await api.post("/nodes", json={"name": f"fleet-{i}"})).json()["id"]
                    script = (await api.post(f"/nodes/{node_id}/script", json={"type": "docker"})).json()
                    node_ids.append(node_id)
                    specs.append({"token": script["installToken"], "dir": str(folder / f"a{i}")})
                await asyncio.sleep(1.0)
                rss_nodes = Footprint.of(platform.pid).rss_mb
                (folder / "fleet.json").write_text(json.dumps(specs))
                fleet_process = await asyncio.create_subprocess_exec(
                    sys.executable, __file__, "--fleet", str(folder / "fleet.json"),
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                )  # fmt: skip
                connecting = time.monotonic()
                await _all_connected(api, set(node_ids))
                connect_s = time.monotonic() - connecting
                await asyncio.sleep(2.0)
                rss_connected = Footprint.of(platform.pid).rss_mb
                fan_out_s = await _fan_out(api, node_ids)
                trips = await _round_trips(api, node_ids)
                rss_after = Footprint.of(platform.pid).rss_mb
        finally:
            for process in (fleet_process, platform):
                if process is not None and process.returncode is None:
                    process.send_signal(signal.SIGTERM)
                    try:
                        await asyncio.wait_for(process.wait(), 40)
                    except TimeoutError:
                        process.kill()
                        await process.wait()
    return {
        "size": agents,
        "platform_rss_nodes_mb": rss_nodes,
        "platform_rss_connected_mb": rss_connected,
        "platform_rss_after_mb": rss_after,
        "rss_per_agent_mb": (rss_connected - rss_nodes) / agents,
        "connect_all_s": connect_s,
        "fan_out_s": fan_out_s,
        "round_trip_p50_ms": statistics.median(trips) * 1000,
        "round_trip_p99_ms": quantile(trips, 0.99) * 1000,
    }


def new_curve() -> Curve:
    return Curve(
        name="curve_platform",
        title="Embedded platform with N connected agents (memory runtime)",
        x_label="connected agents",
        panels=[
            Panel(
                "platform RSS",
                "MB",
                [
                    ("platform_rss_nodes_mb", "N nodes, no agent"),
                    ("platform_rss_connected_mb", "N agents connected"),
                    ("platform_rss_after_mb", "after fan-out and inspects"),
                ],
                growth_of="platform_rss_connected_mb",
            ),
            Panel(
                "containerInspect round trip",
                "ms",
                [("round_trip_p50_ms", "p50"), ("round_trip_p99_ms", "p99")],
                growth_of="round_trip_p99_ms",
            ),
            Panel(
                "deployment fan-out to all nodes",
                "s",
                [("fan_out_s", "start -> all successful")],
                "fan_out_s",
            ),
        ],
    )


def run() -> list[Row]:
    last, size = measure(new_curve(), (10, 30), (10, 50, 100), point)
    return [
        (
            f"curve: platform RSS per connected agent at {size} (MB)",
            last["rss_per_agent_mb"],
            0.0,
            0.0,
            "< 2 MB",
        ),
        (f"curve: inspect round trip p50 at {size} agents (ms)", last["round_trip_p50_ms"], 0.0, 0.0, "-"),
        (
            f"curve: inspect round trip p99 at {size} agents (ms)",
            last["round_trip_p99_ms"],
            0.0,
            0.0,
            "< 100 ms",
        ),
        (f"curve: deployment fan-out to {size} nodes (s)", last["fan_out_s"], 0.0, 0.0, "informative"),
    ]


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--fleet":
        sys.exit(asyncio.run(fleet(json.loads(Path(sys.argv[2]).read_text()))))
    parse_full(sys.argv)
    print_rows("Curve: embedded platform and its agents", run())
