"""Logs through the real API server's pods/log, proxied to a fake kubelet: tail, follow, and
re-following when the pod is replaced."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from kits.kube_node import start_on_node
from waiting import within

from berth.model import ContainerRef, DeploymentSpec, WorkloadSpec
from berth.runtimes.kubernetes import resources
from berth.runtimes.kubernetes.api import KubeApi
from berth.runtimes.kubernetes.api_errors import Request

pytestmark = pytest.mark.kube


async def collect(stream: AsyncIterator, count: int) -> list:
    items = []
    async with within(20, f"{count} log items"):
        async for item in stream:
            items.append(item)
            if len(items) == count:
                return items
    return items


async def test_tail_follow_and_pod_replacement(runtime, admin, prefix, events, kubelet, node) -> None:
    await runtime.deploy(
        DeploymentSpec(
            id="d1",
            prefix=prefix,
            workloads=(WorkloadSpec(id="l", prefix=prefix, name="logger", image_name="busybox"),),
        ),
        events,
    )
    first = await asyncio.to_thread(start_on_node, admin, prefix, "logger", node)
    kubelet.write(first, "one")
    kubelet.write(first, "two")
    ref = ContainerRef(prefix, "logger")

    tail = [line async for line in runtime.logs(ref, follow=False, tail_lines=1)]
    assert len(tail) == 1 and tail[0].endswith(" two\n") and tail[0].startswith("20")
    pod, query = kubelet.requests[-1]
    assert pod == first and query["tailLines"] == ["1"] and query["timestamps"] == ["true"]

    stream = runtime.logs(ref, follow=True, tail_lines=1)
    try:
        assert (await collect(stream, 1))[0].endswith(" two\n")
        kubelet.write(first, "three")
        assert (await collect(stream, 1))[0].endswith(" three\n")

        # the pod is replaced: the follow moves on to the new pod
        kubelet.end(first)
        await asyncio.to_thread(
            admin.call,
            Request("delete", resources.POD, prefix, first),
            "DELETE",
            resources.POD.path(prefix, first),
            query=[("gracePeriodSeconds", "0")],
        )
        second = await asyncio.to_thread(start_on_node, admin, prefix, "logger", node, skip={first})
        kubelet.write(second, "four")
        assert (await collect(stream, 1))[0].endswith(" four\n")

        # several pods: each line names its pod, after the timestamp
        await asyncio.to_thread(
            admin.merge_patch, resources.DEPLOYMENT, prefix, "logger", {"spec": {"replicas": 2}}
        )
        third = await asyncio.to_thread(start_on_node, admin, prefix, "logger", node, skip={first, second})
        kubelet.write(third, "five")
        line = (await collect(stream, 1))[0]
        assert line.startswith("20") and line.endswith(f" [{third}] five\n")
    finally:
        await stream.aclose()


async def test_follow_buffer_is_bounded_and_reports_the_gap(
    settings, admin, prefix, events, kubelet, node, runtime
) -> None:
    from berth.model import LogGap
    from berth.runtimes.common.bridge import ThreadBridge
    from berth.runtimes.kubernetes.logs import LogReader

    await runtime.deploy(
        DeploymentSpec(
            id="d1",
            prefix=prefix,
            workloads=(WorkloadSpec(id="f", prefix=prefix, name="flood", image_name="busybox"),),
        ),
        events,
    )
    pod = await asyncio.to_thread(start_on_node, admin, prefix, "flood", node)
    kubelet.write(pod, "start")
    api, bridge = KubeApi(settings), ThreadBridge("kube", 32)
    stream = LogReader(api, bridge, buffer_lines=3).logs(
        ContainerRef(prefix, "flood"), follow=True, tail_lines=1
    )
    try:
        assert (await collect(stream, 1))[0].endswith(" start\n")
        for n in range(10):
            kubelet.write(pod, f"line {n}")
        await asyncio.sleep(1.0)  # the consumer is slow: the buffer keeps 3 lines and counts the rest
        items = await collect(stream, 4)
        kubelet.write(pod, "after")
        items += await collect(stream, 1)
        assert [i.rsplit(" ", 2)[-2:] for i in items[:3]] == [
            ["line", "0\n"],
            ["line", "1\n"],
            ["line", "2\n"],
        ]
        assert items[3] == LogGap(7)  # lines 3..9 were dropped, and the stream says so where they were
        assert items[4].endswith(" after\n")
    finally:
        await stream.aclose()
        following = [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("kube-log-")]
        bridge.close()
        api.close()
    assert not following, "closing the stream must end its follows at once"


async def test_a_follow_without_a_free_stream_thread_ends_the_stream_with_a_retryable_error(
    settings, admin, prefix, events, kubelet, node, runtime
) -> None:
    """Every stream thread is taken: the follow is refused at once and says so, it never waits
    silently for a thread that may never come free."""
    import threading

    from berth.errors import TemporaryCommandError
    from berth.runtimes.common.bridge import ThreadBridge
    from berth.runtimes.kubernetes.logs import LogReader

    await runtime.deploy(
        DeploymentSpec(
            id="d1",
            prefix=prefix,
            workloads=(WorkloadSpec(id="b", prefix=prefix, name="busy", image_name="busybox"),),
        ),
        events,
    )
    await asyncio.to_thread(start_on_node, admin, prefix, "busy", node)
    api, bridge = KubeApi(settings), ThreadBridge("kube", 1)
    release = threading.Event()
    taken = asyncio.create_task(bridge.stream(release.wait, 30), name="test-the-only-stream-thread")
    stream = LogReader(api, bridge).logs(ContainerRef(prefix, "busy"), follow=True, tail_lines=1)
    try:
        with pytest.raises(
            TemporaryCommandError, match=r"too many open kube log follows and watches \(max 1\)"
        ):
            await collect(stream, 1)
    finally:
        await stream.aclose()
        release.set()
        await taken
        bridge.close()
        api.close()
