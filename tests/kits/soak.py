"""Long runs and bounds, on ``berth agent`` as a process with the real Docker runtime.

* soak: deploy / restart / inspect / log follow / delete cycles for ``--seconds``; the agent's RSS,
  open file descriptors and threads after the first cycle and at the end (targets: RSS growth
  under 10 MB, no fd or thread growth).
* flood: a container printing as fast as it can, followed by the platform for ``--flood-seconds``;
  the agent's RSS stays bounded and a containerInspect is answered within the platform's 5 s
  callback timeout during the flood.

Run it with bench/soak.py; tests/faults/test_fault_long_runs.py asserts its figures.
"""

from __future__ import annotations

import asyncio
import secrets
import time

from fakeplatform import FakePlatform
from waiting import wait_for

from berth.proto import common_pb2
from kits.agent_process import AgentProcess, CountingPlatform, agent_process
from kits.benchkit import Row
from kits.fault_kit import delete_prefix, deploy, inspect, logs, operate, workload

CHATTY = "trap 'exit 0' TERM; i=0; while true; do i=$((i+1)); echo soak line $i; sleep 0.05; done"
FLOOD = "trap 'exit 0' TERM; yes 'flood flood flood flood flood flood flood flood flood flood flood'"
RSS_GROWTH_TARGET_MB = 10.0
INSPECT_TARGET_S = 5.0
WARM_UP_CYCLES = 2
FLOOD_RSS_TARGET_MB = 80.0


async def _deployed(agent: AgentProcess, deployment_id: str) -> None:
    platform = agent.platform

    def ended() -> bool:
        return any(
            s.metadata.get("dyo-deployment-id") == deployment_id and s.done.is_set()
            for s in platform.streams_of("DeploymentStatus")
        )

    await platform.wait_for(ended, within_s=60)


async def _answered(agent: AgentProcess, method: str, count: int, within_s: float = 30) -> float:
    started = time.monotonic()
    await agent.platform.wait_for(lambda: len(agent.platform.calls(method)) >= count, within_s)
    return time.monotonic() - started


async def _cycle(agent: AgentProcess, prefix: str, index: int) -> None:
    platform = agent.platform
    deployment_id = f"soak-{index}"
    await platform.send(deploy(deployment_id, prefix, workload("web"), workload("chatty", args=CHATTY)))
    await _deployed(agent, deployment_id)
    await platform.send(logs(prefix, "chatty", streaming=True, tail=50))
    follow = await platform.wait_stream("ContainerLogStream", count=index + 1)
    await platform.wait_for(lambda: len(follow.messages) >= 10, within_s=20)
    follow.complete()
    await platform.send(operate(prefix, "web", common_pb2.RESTART_CONTAINER))
    inspections = len(platform.calls("ContainerInspect"))
    await platform.send(inspect(prefix, "web"))
    await _answered(agent, "ContainerInspect", inspections + 1)
    await platform.send(logs(prefix, "chatty", streaming=False, tail=100))
    await _answered(agent, "ContainerLog", index + 1)
    await platform.send(delete_prefix(prefix))
    await _answered(agent, "DeleteContainers", index + 1)
    # The fake platform keeps every record; a soak must not measure the benchmark's own memory.
    for record in platform.streams:
        record.messages.clear()


async def soak(seconds: float) -> list[Row]:
    prefix = f"benchsoak{secrets.token_hex(2)}"
    async with agent_process(FakePlatform(), prefix) as agent:
        # Warm-up: the agent builds its runtime with the first command, and the engine client's
        # connection pool reaches its working size over the first cycles.
        for warm_up in range(WARM_UP_CYCLES):
            await _cycle(agent, prefix, warm_up)
        first = agent.footprint()
        cycles = WARM_UP_CYCLES
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await _cycle(agent, prefix, cycles)
            cycles += 1
        await asyncio.sleep(1.0)  # measured after a quiet second, not in the middle of a cycle
        last = agent.footprint()
    growth = last.rss_mb - first.rss_mb
    print(f"soak: {cycles} cycles in {seconds:.0f} s")
    print(f"  after warm-up: RSS {first.rss_mb:.1f} MB, fds {first.fds}, threads {first.threads}")
    print(f"  at the end:    RSS {last.rss_mb:.1f} MB, fds {last.fds}, threads {last.threads}")
    return [
        (f"soak RSS growth over {cycles} cycles (MB)", growth, 0.0, 0.0, f"< {RSS_GROWTH_TARGET_MB:.0f} MB"),
        (
            "soak open fds (end vs after warm-up)",
            float(last.fds),
            float(first.fds),
            last.fds / first.fds,
            "<= +2 after warm-up",
        ),
        (
            "soak threads (end vs after warm-up)",
            float(last.threads),
            float(first.threads),
            last.threads / first.threads,
            "<= +2 after warm-up",
        ),
    ]


async def flood(seconds: float) -> list[Row]:
    prefix = f"benchflood{secrets.token_hex(2)}"
    platform = CountingPlatform()
    async with agent_process(platform, prefix) as agent:
        await platform.send(deploy("flood", prefix, workload("idle"), workload("flood", args=FLOOD)))
        await _deployed(agent, "flood")
        before = agent.footprint()
        await platform.send(logs(prefix, "flood", streaming=True, tail=10))
        await wait_for(lambda: platform.log_lines >= 1000, 30, "1000 flood lines at the platform")
        latencies: list[float] = []
        peak = before
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            count = len(platform.calls("ContainerInspect"))
            await platform.send(inspect(prefix, "idle"))
            latencies.append(await _answered(agent, "ContainerInspect", count + 1, within_s=30))
            current = agent.footprint()
            peak = current if current.rss_mb > peak.rss_mb else peak
            await asyncio.sleep(0.5)  # the sampling period of the measurement
        lines = platform.log_lines
    worst = max(latencies)
    rate = lines / seconds
    print(
        f"flood: {lines} lines delivered in about {seconds:.0f} s ({rate:.0f}/s); {len(latencies)} inspects"
    )
    print(
        f"  RSS before {before.rss_mb:.1f} MB, peak {peak.rss_mb:.1f} MB; worst inspect {worst * 1000:.0f} ms"
    )
    return [
        ("flood: worst containerInspect answer (s)", worst, 0.0, 0.0, f"< {INSPECT_TARGET_S:.0f} s"),
        (
            "flood: agent peak RSS (MB)",
            peak.rss_mb,
            before.rss_mb,
            peak.rss_mb / before.rss_mb,
            f"< {FLOOD_RSS_TARGET_MB:.0f} MB",
        ),
        ("flood: log lines delivered per second", rate, 0.0, 0.0, "informational"),
    ]


def run(seconds: float = 75.0, flood_seconds: float = 20.0) -> list[Row]:
    return asyncio.run(soak(seconds)) + asyncio.run(flood(flood_seconds))
