"""containerLog on the real engine: tail, timestamps, follow across restarts, bounded buffer."""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace

import docker
import pytest
from docker_support import RecordingEvents, workload
from waiting import wait_event, wait_for

from berth.errors import NotFound, TemporaryCommandError
from berth.model import ContainerRef, DeploymentSpec, LogGap, LogItem
from berth.runtimes.docker import DockerRuntime
from berth.settings import DockerSettings

pytestmark = pytest.mark.docker

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z ")


async def deploy_script(runtime: DockerRuntime, prefix: str, script: str) -> ContainerRef:
    spec = workload(prefix, "app", args=(script,))
    await runtime.deploy(DeploymentSpec(id="d", prefix=prefix, workloads=(spec,)), RecordingEvents())
    return spec.ref


async def collect(items: object, predicate: object, timeout_s: float = 10.0) -> list[LogItem]:
    got: list[LogItem] = []

    async def run() -> None:
        async for item in items:  # type: ignore[attr-defined]
            got.append(item)
            if predicate(got):  # type: ignore[operator]
                return

    try:
        await wait_event(run(), timeout_s, "the follow to deliver the expected lines")
    except AssertionError as err:
        raise AssertionError(f"{err}; got {len(got)} items, the last {got[-3:]!r}") from None
    return got


async def logged_last(client: docker.DockerClient, ref: ContainerRef, line: str) -> bool:
    """Whether the engine's log of the container ends with ``line``."""
    data = await asyncio.to_thread(client.api.logs, ref.key, stdout=True, stderr=True, tail=1)
    return bool(data == line.encode())


async def test_tail_with_timestamps(
    runtime: DockerRuntime, prefix: str, docker_client: docker.DockerClient
) -> None:
    ref = await deploy_script(
        runtime, prefix, "for i in 1 2 3 4 5; do echo line$i; done; " + "exec sleep 1000"
    )
    await wait_for(
        lambda: logged_last(docker_client, ref, "line5\n"),
        10,
        "the container to log its five lines",
    )
    lines = [item async for item in runtime.logs(ref, follow=False, tail_lines=3)]
    assert [line.split(" ", 1)[1] for line in lines if isinstance(line, str)] == [
        "line3\n",
        "line4\n",
        "line5\n",
    ]
    assert all(isinstance(line, str) and STAMP.match(line) for line in lines)
    assert [item async for item in runtime.logs(ref, follow=False, tail_lines=0)] == []


async def test_missing_container_is_not_found(runtime: DockerRuntime, prefix: str) -> None:
    with pytest.raises(NotFound):
        async for _ in runtime.logs(ContainerRef(prefix, "nope"), follow=True, tail_lines=10):
            pass


async def test_follow_survives_a_restart_without_repeating_lines(
    runtime: DockerRuntime, prefix: str, docker_client: docker.DockerClient
) -> None:
    ref = await deploy_script(
        runtime, prefix, "echo started; trap 'exit 0' TERM; while true; do sleep 0.1; done"
    )
    follow = runtime.logs(ref, follow=True, tail_lines=100)
    try:
        first = await collect(follow, lambda got: any("started" in str(i) for i in got))
        assert len(first) == 1
        await asyncio.to_thread(docker_client.api.restart, ref.key, timeout=2)
        second = await collect(follow, lambda got: any("started" in str(i) for i in got), timeout_s=15)
        assert [str(i).split(" ", 1)[1] for i in second] == ["started\n"]
        assert second[0] != first[0]
    finally:
        await follow.aclose()


async def test_a_flood_is_bounded_and_the_gap_reported(
    settings: DockerSettings, prefix: str, docker_client: docker.DockerClient
) -> None:
    """A consumer that stalls while the container floods its log gets at most the buffer's worth
    of lines, then a gap counting the rest; nothing is lost without being counted."""
    capacity, total = 100, 30_000
    rt = DockerRuntime(replace(settings, log_buffer_lines=capacity))
    try:
        ref = await deploy_script(
            rt, prefix, f"seq 1 {total}; trap 'exit 0' TERM; while true; do sleep 0.1; done"
        )
        follow = rt.logs(ref, follow=True, tail_lines=total)
        try:
            first = await anext(follow)
            assert isinstance(first, str)
            # the consumer stalls until the whole flood was written: the reader thread meanwhile
            # fills the buffer and must drop (and count) the rest
            await wait_for(
                lambda: logged_last(docker_client, ref, f"{total}\n"),
                30,
                "the container to write its whole flood",
            )
            counted = [1]  # lines and dropped lines so far

            def done(got: list[LogItem]) -> bool:
                item = got[-1]
                counted[0] += item.dropped_lines if isinstance(item, LogGap) else 1
                return counted[0] >= total

            rest = await collect(follow, done, timeout_s=30)
        finally:
            await follow.aclose()
    finally:
        await rt.aclose()
    gaps = [i for i in rest if isinstance(i, LogGap)]
    lines = [i for i in rest if isinstance(i, str)]
    assert gaps, "lines were dropped but no gap was reported"
    assert 1 + len(lines) + sum(g.dropped_lines for g in gaps) == total
    # The buffer drops only when it holds ``capacity`` lines, and the consumer takes all it holds
    # at once: so a gap ends what the consumer took, and at least ``capacity`` lines were taken
    # since the previous gap (or the start). A consumer that keeps up for a while gets any number
    # of lines between gaps: the bound itself is checked exactly in tests/unit/test_line_buffer.py.
    since_gap = 1
    for item in rest:
        if isinstance(item, LogGap):
            assert since_gap >= capacity, f"a gap after {since_gap} lines: dropped before the buffer was full"
            since_gap = 0
        else:
            since_gap += 1
    numbers = [int(first.split(" ", 1)[1])] + [int(line.split(" ", 1)[1]) for line in lines]
    assert numbers == sorted(numbers) and numbers[0] == 1, "lines were reordered or repeated"


async def test_a_follow_without_a_free_stream_thread_is_refused_at_once(
    settings: DockerSettings, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One stream thread, held by a first follow: a second follow is refused with a retryable
    error instead of waiting silently behind a follow that may never end."""
    monkeypatch.setattr("berth.runtimes.docker.engine.STREAM_THREADS", 1)
    runtime = DockerRuntime(settings)
    try:
        ref = await deploy_script(runtime, prefix, "echo hello; exec sleep 1000")
        first = runtime.logs(ref, follow=True, tail_lines=1)
        await collect(first, lambda got: len(got) >= 1)
        second = runtime.logs(ref, follow=True, tail_lines=1)
        with pytest.raises(
            TemporaryCommandError, match=r"too many open docker log follows and watches \(max 1\)"
        ):
            await wait_event(anext(second), 10, "the second follow to be refused")
        await second.aclose()
        await first.aclose()
        third = runtime.logs(ref, follow=True, tail_lines=1)  # the first one's thread is free again
        assert [item.split(" ", 1)[1] for item in await collect(third, lambda got: len(got) >= 1)] == [
            "hello\n"
        ]
        await third.aclose()
    finally:
        await runtime.aclose()
