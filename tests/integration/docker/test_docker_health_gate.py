"""Health-gated deploys on the real engine: SUCCESSFUL only once healthy, the previous container
restored when the new one turns unhealthy, health on the state stream, and the time the gate adds
over the health check's own time."""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import datetime

import docker
import pytest
from docker_support import REGISTRY, SERVE_FOREVER, RecordingEvents, next_item, workload
from pushed_images import build_and_push, remove_local
from waiting import wait_for

from berth.errors import PermanentCommandError
from berth.model import ContainerRef, ContainerState, DeploymentSpec, LogLevel, Port, WorkloadSpec
from berth.runtimes.docker import DockerRuntime
from berth.settings import DockerSettings, ResilienceSettings

pytestmark = pytest.mark.docker

START_PERIOD_S = 3
HEALTHY_AFTER_S = 1.5
# Healthy once /tmp/healthy exists; failures count only after the start period.
DOCKERFILE = (
    "FROM local/busybox:1\n"
    'LABEL io.berth.test="1"\n'
    f"HEALTHCHECK --interval=200ms --timeout=2s --start-period={START_PERIOD_S}s --retries=3 "
    "CMD test -f /tmp/healthy || (echo not ready: /tmp/healthy is missing; exit 1)\n"
)
# httpd in the background: the shell as PID 1 ends at once on SIGTERM (a quick set-aside)
SERVE = f"httpd -p 80 -h /www; {SERVE_FOREVER}"


@pytest.fixture(scope="module")
def health_image() -> Iterator[str]:
    repository = f"berth/health-{secrets.token_hex(4)}"
    build_and_push(f"{REGISTRY}/{repository}:1", DOCKERFILE)
    yield repository
    remove_local(f"{REGISTRY}/{repository}:1")


@pytest.fixture
async def gated(settings: DockerSettings) -> AsyncIterator[DockerRuntime]:
    rt = DockerRuntime(replace(settings, resilience=ResilienceSettings(health_slack_s=2.0)))
    yield rt
    await rt.aclose()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def web(prefix: str, image: str, script: str, port: int) -> WorkloadSpec:
    spec = workload(prefix, "web", image_name=image, tag="1", args=(script,))
    return replace(spec, ports=(Port(internal=80, external=port),))


def deployment(*workloads: WorkloadSpec) -> DeploymentSpec:
    return DeploymentSpec(id="dep", prefix=workloads[0].prefix, workloads=workloads)


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=2) as answer:
        data: bytes = answer.read()
    return data


def _engine_time(stamp: str) -> float:
    """An engine timestamp (nanoseconds, Z) as epoch seconds."""
    head, _, rest = stamp.rstrip("Z").partition(".")
    fraction = (rest + "000000")[:6]
    return datetime.fromisoformat(f"{head}.{fraction}+00:00").timestamp()


async def test_healthy_late_within_the_bound_succeeds_and_the_gate_adds_little(
    gated: DockerRuntime, prefix: str, health_image: str, docker_client: docker.DockerClient
) -> None:
    port = free_port()
    spec = web(prefix, health_image, f"sleep {HEALTHY_AFTER_S}; touch /tmp/healthy; {SERVE}", port)
    updates = gated.watch(prefix)
    events = RecordingEvents()
    try:
        await anext(updates)
        started = time.monotonic()
        await gated.deploy(deployment(spec), events)
        returned_at = time.time()
        took = time.monotonic() - started
        healthy = await next_item(updates, lambda i: i.reason == "running (healthy)")
        assert healthy.ref == ContainerRef(prefix, "web") and healthy.state is ContainerState.RUNNING
    finally:
        await updates.aclose()
    attrs = await asyncio.to_thread(docker_client.api.inspect_container, f"{prefix}-web")
    assert attrs["State"]["Health"]["Status"] == "healthy"
    reasons = [reason for wid, _, reason, _ in events.instances if wid == spec.id]
    assert reasons[-2:] == ["running (starting)", "running (healthy)"]
    assert "Waiting up to" in events.text and "is healthy after" in events.text
    assert took >= HEALTHY_AFTER_S
    # The gate's own cost: from the probe that passed (the engine's clock) to the deploy's return.
    passed = next(p for p in reversed(attrs["State"]["Health"]["Log"]) if p["ExitCode"] == 0)
    added_s = returned_at - _engine_time(passed["End"])
    print(f"\nhealth gate: added {added_s * 1000:.0f} ms after the passing probe (deploy {took:.2f} s)")
    assert added_s < 1.0


async def test_unhealthy_redeploy_fails_and_the_previous_container_serves_again(
    gated: DockerRuntime, prefix: str, health_image: str, docker_client: docker.DockerClient
) -> None:
    port = free_port()
    good = web(prefix, health_image, f"touch /tmp/healthy; {SERVE}", port)
    await gated.deploy(deployment(good), RecordingEvents())
    before = (await asyncio.to_thread(docker_client.api.inspect_container, f"{prefix}-web"))["Id"]

    never_healthy = replace(good, args=(SERVE,))
    events = RecordingEvents()
    with pytest.raises(PermanentCommandError, match="turned unhealthy"):
        await gated.deploy(deployment(never_healthy), events)

    after = await asyncio.to_thread(docker_client.api.inspect_container, f"{prefix}-web")
    assert after["Id"] == before and after["State"]["Running"]
    assert "Restored the previous container" in events.text
    errors = [line for level, lines in events.logs if level is LogLevel.ERROR for line in lines]
    assert any("not ready: /tmp/healthy is missing" in line for line in errors)
    assert (good.id, ContainerState.RUNNING, "running (unhealthy)", LogLevel.ERROR) in events.instances
    body = await wait_for(  # httpd of the restored container binds a moment after its start
        lambda: asyncio.to_thread(_fetch, f"http://127.0.0.1:{port}/"),
        10,
        f"httpd to answer on host port {port}",
        interval_s=0.1,
        ignoring=(OSError,),
    )
    assert b"berth demo" in body


async def test_exiting_before_healthy_fails_at_once(
    gated: DockerRuntime, prefix: str, health_image: str, docker_client: docker.DockerClient
) -> None:
    spec = web(prefix, health_image, "sleep 0.5; exit 7", free_port())
    started = time.monotonic()
    with pytest.raises(PermanentCommandError, match="exited with code 7 before it was healthy"):
        await gated.deploy(deployment(spec), RecordingEvents())
    assert time.monotonic() - started < START_PERIOD_S  # not held until the bound
    assert (
        await asyncio.to_thread(docker_client.api.containers, all=True, filters={"name": f"^/{prefix}-web$"})
    ) == []


async def test_the_gate_can_be_switched_off(settings: DockerSettings, prefix: str, health_image: str) -> None:
    rt = DockerRuntime(replace(settings, resilience=ResilienceSettings(health_gate=False)))
    try:
        events = RecordingEvents()
        await rt.deploy(deployment(web(prefix, health_image, SERVE, free_port())), events)
    finally:
        await rt.aclose()
    assert "Waiting up to" not in events.text
