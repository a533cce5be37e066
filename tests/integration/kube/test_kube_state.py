"""State on a real kube-apiserver: list-then-watch of Deployments and Pods, RUNNING from a
patched Pod status, scale to 0, REMOVED on delete, ports from the Service, and recovery from a
forced 410 Gone (etcd compacted, stale resourceVersion)."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import structlog.testing

from berth.model import (
    ContainerRef,
    ContainerState,
    DeploymentSpec,
    Port,
    PortMapping,
    StateUpdate,
    WorkloadSpec,
)
from berth.runtimes.kubernetes.watcher import StateWatcher

from .conftest import BASE, ROOT
from .test_kube_deploy import _patch_pod_status, _wait_pods, running_pod

pytestmark = pytest.mark.kube
ETCD = f"http://127.0.0.1:{os.environ.get('K8S_DEB_ETCD_PORT', '12379')}"


async def next_matching(
    updates: AsyncIterator[StateUpdate], ref: ContainerRef, state: ContainerState
) -> StateUpdate:
    async with asyncio.timeout(20):
        async for update in updates:
            if any(i.ref == ref and i.state == state for i in update.items):
                return update
    raise AssertionError("watch ended")


async def test_watch_reports_create_running_scale_and_remove(runtime, admin, prefix, events) -> None:
    web = WorkloadSpec(id="w", prefix=prefix, name="web", image_name="busybox", tag="1", ports=(Port(8080),))
    await runtime.deploy(DeploymentSpec(id="d1", prefix=prefix, workloads=(web,)), events)
    ref = ContainerRef(prefix, "web")
    updates = runtime.watch(prefix)
    try:
        first = await anext(updates)
        assert first.initial
        (item,) = first.items
        assert item.ref == ref and item.image_name == "docker.io/library/busybox" and item.image_tag == "1"
        assert item.ports == (PortMapping(internal=8080, external=8080),)
        assert item.labels["io.berth.managed"] == "true" and item.created_at is not None

        # the controllers create a Pending pod: WAITING with the pod's own reason (§17 #39)
        pods = await asyncio.to_thread(_wait_pods, admin, prefix, "web")
        if item.state != ContainerState.WAITING:
            await next_matching(updates, ref, ContainerState.WAITING)

        await asyncio.to_thread(_patch_pod_status, admin, running_pod(pods[0], "web"))
        running = await next_matching(updates, ref, ContainerState.RUNNING)
        assert [i.reason for i in running.items if i.ref == ref] == ["Started"]

        await runtime.stop(ref)  # scale to 0: the pod goes away → EXITED
        await next_matching(updates, ref, ContainerState.EXITED)

        other = WorkloadSpec(id="o", prefix=prefix, name="other", image_name="busybox")
        await runtime.deploy(DeploymentSpec(id="d2", prefix=prefix, workloads=(other,)), events)
        created = await next_matching(updates, ContainerRef(prefix, "other"), ContainerState.WAITING)
        assert all(i.ref.prefix == prefix for i in created.items)

        await runtime.delete(ref)
        await next_matching(updates, ref, ContainerState.REMOVED)
    finally:
        await updates.aclose()

    listed = await runtime.list_state(prefix)
    assert [i.ref for i in listed.items] == [ContainerRef(prefix, "other")]


def _compact_etcd() -> int:
    key = base64.b64encode(b"/registry").decode()
    with httpx.Client(base_url=ETCD, timeout=10) as client:
        revision = int(client.post("/v3/kv/range", json={"key": key}).json()["header"]["revision"])
        answer = client.post("/v3/kv/compaction", json={"revision": revision, "physical": True})
        answer.raise_for_status()
    return revision


async def test_watch_survives_a_forced_410_gone(
    settings, runtime, admin, prefix, events, monkeypatch
) -> None:
    web = WorkloadSpec(id="w", prefix=prefix, name="web", image_name="busybox")
    await runtime.deploy(DeploymentSpec(id="d1", prefix=prefix, workloads=(web,)), events)
    snapshots = 0
    real_snapshot = StateWatcher.snapshot

    async def stale_first_snapshot(self: StateWatcher):  # type: ignore[no-untyped-def]
        nonlocal snapshots
        snapshots += 1
        snap = await real_snapshot(self)
        if snapshots == 1:  # resume the watches from a version etcd has compacted away
            await asyncio.to_thread(_compact_etcd)
            snap.versions = dict.fromkeys(snap.versions, "2")
        return snap

    monkeypatch.setattr(StateWatcher, "snapshot", stale_first_snapshot)
    updates = runtime.watch(prefix)
    with structlog.testing.capture_logs() as logs:
        first = await anext(updates)
        assert first.initial and [i.ref.name for i in first.items] == ["web"]
        later = WorkloadSpec(id="l", prefix=prefix, name="later", image_name="busybox")
        await runtime.deploy(DeploymentSpec(id="d2", prefix=prefix, workloads=(later,)), events)
        await next_matching(updates, ContainerRef(prefix, "later"), ContainerState.WAITING)
        assert snapshots >= 2, "the 410 did not lead to a re-list"
        assert [e["reason"] for e in logs if e["event"] == "kube_watch_relist"] == ["410 Gone"]
        await updates.aclose()


def _stop_process(name: str, sig: signal.Signals) -> None:
    pid = int((BASE / "run" / f"{name}.pid").read_text())
    os.kill(pid, sig)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def _restart_api_server() -> None:
    """Kill the API server (as a crash would) and start the control plane again with the project's
    script; the controller manager is restarted too (it does not recover well from a vanished
    API server, and the later tests need its controllers)."""
    _stop_process("kube-apiserver", signal.SIGKILL)
    _stop_process("kube-controller-manager", signal.SIGTERM)
    env = {**os.environ, "K8S_DEB_BASE": str(BASE)}
    subprocess.run(
        [str(ROOT / "tools/kube-apiserver.sh"), "start"],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )


async def test_watch_survives_an_api_server_restart(runtime, prefix, events) -> None:
    if not (BASE / "run" / "kube-apiserver.pid").is_file():
        pytest.skip("the API server was not started by tools/kube-apiserver.sh")
    web = WorkloadSpec(id="w", prefix=prefix, name="web", image_name="busybox")
    await runtime.deploy(DeploymentSpec(id="d1", prefix=prefix, workloads=(web,)), events)
    updates = runtime.watch(prefix)
    try:
        first = await anext(updates)
        assert first.initial
        await asyncio.to_thread(_restart_api_server)
        # the watches end with the server, resume, get 410 from the new server's cache, re-list
        later = WorkloadSpec(id="l", prefix=prefix, name="later", image_name="busybox")
        await runtime.deploy(DeploymentSpec(id="d2", prefix=prefix, workloads=(later,)), events)
        # the controller manager reconnects slowly: "later" may still have no pod (EXITED)
        async with asyncio.timeout(30):
            seen = await anext(updates)
            while ContainerRef(prefix, "later") not in {i.ref for i in seen.items}:
                seen = await anext(updates)
        await runtime.delete(ContainerRef(prefix, "web"))
        await next_matching(updates, ContainerRef(prefix, "web"), ContainerState.REMOVED)
    finally:
        await updates.aclose()
