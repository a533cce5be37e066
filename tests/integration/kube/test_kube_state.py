"""State on a real kube-apiserver: list-then-watch of Deployments and Pods, RUNNING from a
patched Pod status, scale to 0, REMOVED on delete, ports from the Service, and recovery from a
forced 410 Gone; closing the stream ends its watches."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator

import pytest
import structlog.testing
from kits.kube_cluster import BASE, ROOT
from kits.kube_node import patch_pod_status, running_pod, wait_pods
from waiting import wait_for_blocking, within

from berth.model import (
    ContainerRef,
    ContainerState,
    DeploymentSpec,
    Port,
    PortMapping,
    StateUpdate,
    WorkloadSpec,
)
from berth.runtimes.kubernetes.api import KubeApi
from berth.runtimes.kubernetes.watcher import Snapshot, StateWatcher

pytestmark = pytest.mark.kube


async def next_matching(
    updates: AsyncIterator[StateUpdate], ref: ContainerRef, state: ContainerState
) -> StateUpdate:
    async with within(20, f"the watch to report {ref} {state.name}"):
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
        pods = await asyncio.to_thread(wait_pods, admin, prefix, "web")
        if item.state != ContainerState.WAITING:
            await next_matching(updates, ref, ContainerState.WAITING)

        await asyncio.to_thread(patch_pod_status, admin, running_pod(pods[0], "web"))
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


class _ExpiredWatch:
    """What the API server answers a watch whose resourceVersion has left its watch cache: 200,
    then one ERROR event carrying a 410 Status, then the end of the stream."""

    def __init__(self, version: str) -> None:
        status = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": f"too old resource version: {version} (4000)",
            "reason": "Expired",
            "code": 410,
        }
        self._lines = [json.dumps({"type": "ERROR", "object": status}).encode() + b"\n"]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._lines)

    def shutdown(self) -> None:
        pass

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass


async def test_watch_survives_a_forced_410_gone(runtime, prefix, events, monkeypatch) -> None:
    """A watch whose resourceVersion expired is told so with 410; the watcher re-lists and goes on.

    The 410 is injected at our client boundary: a real API server answers watches from its watch
    cache, which keeps at least 75 s of history and, on a young server, everything since it
    started, so no resourceVersion is reliably "too old" (compacting etcd does not change that;
    this was the cause of the test failing at random on fresh machines). The re-list and every
    watch after it run against the real server; the API server restart test below meets a real
    410 from a freshly started watch cache."""
    web = WorkloadSpec(id="w", prefix=prefix, name="web", image_name="busybox")
    await runtime.deploy(DeploymentSpec(id="d1", prefix=prefix, workloads=(web,)), events)
    expired = "expired-in-test"
    snapshots = 0
    real_snapshot = StateWatcher.snapshot
    real_open_stream = KubeApi.open_stream

    async def first_snapshot_expires(self: StateWatcher) -> Snapshot:
        nonlocal snapshots
        snapshots += 1
        snap = await real_snapshot(self)
        if snapshots == 1:
            snap.versions = dict.fromkeys(snap.versions, expired)
        return snap

    def open_stream(self: KubeApi, request, path, query):  # type: ignore[no-untyped-def]
        query = list(query)
        if ("resourceVersion", expired) in query:
            return _ExpiredWatch(expired)
        return real_open_stream(self, request, path, query)

    monkeypatch.setattr(StateWatcher, "snapshot", first_snapshot_expires)
    monkeypatch.setattr(KubeApi, "open_stream", open_stream)
    updates = runtime.watch(prefix)
    try:
        with structlog.testing.capture_logs() as logs:
            first = await anext(updates)
            assert first.initial and [i.ref.name for i in first.items] == ["web"]
            later = WorkloadSpec(id="l", prefix=prefix, name="later", image_name="busybox")
            await runtime.deploy(DeploymentSpec(id="d2", prefix=prefix, workloads=(later,)), events)
            update = await next_matching(updates, ContainerRef(prefix, "later"), ContainerState.WAITING)
        assert snapshots == 2, "the 410 did not lead to exactly one re-list"
        assert not update.initial, "a re-list after 410 sends only what changed"
        assert [e["reason"] for e in logs if e["event"] == "kube_watch_relist"] == ["410 Gone"]
        await runtime.delete(ContainerRef(prefix, "web"))  # the watches after the re-list are real
        await next_matching(updates, ContainerRef(prefix, "web"), ContainerState.REMOVED)
    finally:
        await updates.aclose()
    assert not [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("kube-watch-")]


async def test_a_watch_without_a_free_stream_thread_ends_the_cycle_and_lists_again(
    settings, runtime, prefix, events
) -> None:
    """Three kinds are watched but only two stream threads are free: the refused watch ends the
    cycle as an error (said in the log), and the watcher lists again in full after its backoff."""
    from berth.runtimes.common.bridge import ThreadBridge

    web = WorkloadSpec(id="w", prefix=prefix, name="web", image_name="busybox")
    await runtime.deploy(DeploymentSpec(id="d1", prefix=prefix, workloads=(web,)), events)
    api, bridge = KubeApi(settings), ThreadBridge("kube", 2)
    updates = StateWatcher(api, bridge, prefix, settings.resync_interval_s).updates()
    try:
        with structlog.testing.capture_logs() as logs:
            async with within(20, "a full list, the refused watch and the list after it"):
                first = await anext(updates)
                second = await anext(updates)
        assert first.initial and second.initial, "after an error cycle the full list is sent again"
        assert [i.ref.name for i in second.items] == ["web"]
        refused = [e for e in logs if e["event"] == "kube_watch_not_started"]
        assert refused and "(max 2)" in refused[0]["error"]
    finally:
        await updates.aclose()
        bridge.close()
        api.close()
    assert not [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("kube-watch-")]


def _stop_process(name: str, sig: signal.Signals) -> None:
    pid = int((BASE / "run" / f"{name}.pid").read_text())
    os.kill(pid, sig)

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    try:
        wait_for_blocking(gone, 15, f"{name} to exit on {sig.name}")
    except AssertionError:
        os.kill(pid, signal.SIGKILL)  # as a crash would: the restart goes on


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


@pytest.mark.engine_restart
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
        async with within(30, "the watch to report 'later' after the restart"):
            seen = await anext(updates)
            while ContainerRef(prefix, "later") not in {i.ref for i in seen.items}:
                seen = await anext(updates)
        await runtime.delete(ContainerRef(prefix, "web"))
        await next_matching(updates, ContainerRef(prefix, "web"), ContainerState.REMOVED)
    finally:
        await updates.aclose()
