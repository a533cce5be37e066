"""Logs of a workload's pods (§15.9 with §17 #50): history with ``tailLines`` per pod, then with
``follow`` one stream per pod, re-opened when a pod is replaced or its container restarts. Lines
keep the API server's timestamp prefix; the pod name follows it when the workload has several
pods. A bounded buffer drops lines under pressure and says so with ``LogGap``."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Final

import structlog

from berth.errors import InvalidSpec, NotFound, RuntimeFailure
from berth.model import ContainerRef, LogGap, LogItem
from berth.runtimes.kubernetes import resources
from berth.runtimes.kubernetes.api import KubeApi
from berth.runtimes.kubernetes.api_errors import Request
from berth.runtimes.kubernetes.bridge import Bridge
from berth.runtimes.kubernetes.manifests import APP_LABEL

log = structlog.get_logger(__name__)
Obj = dict[str, Any]
BUFFER_LINES: Final = 10_000
POD_POLL_S: Final = 2.0


def _started(pod: Obj, container: str) -> int | None:
    """The container's restart count once it has started (running or terminated), else None."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == container:
            state = status.get("state") or {}
            if "running" in state or "terminated" in state:
                return int(status.get("restartCount") or 0)
    return None


def with_pod(line: str, pod: str) -> str:
    """``<timestamp> [pod] message``: the timestamp stays first."""
    stamp, sep, rest = line.partition(" ")
    return f"{stamp} [{pod}] {rest}" if sep else f"[{pod}] {line}"


class LogReader:
    def __init__(self, api: KubeApi, bridge: Bridge, buffer_lines: int = BUFFER_LINES) -> None:
        self._api = api
        self._bridge = bridge
        self._buffer_lines = buffer_lines

    async def _pods(self, ref: ContainerRef) -> list[Obj]:
        listed = await self._bridge.call(
            self._api.list, resources.POD, ref.prefix, label_selector=f"{APP_LABEL}={ref.name}"
        )
        pods = list(listed.get("items") or [])
        pods.sort(key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]))
        return pods

    def _history(self, ns: str, pod: str, container: str, tail_lines: int) -> list[str]:
        query = [("container", container), ("timestamps", "true"), ("tailLines", str(tail_lines))]
        request = Request("get", resources.POD, ns, f"{pod}/log")
        try:
            response = self._api.open_stream(request, resources.POD.path(ns, pod, "log"), query)
        except (InvalidSpec, NotFound):  # container not started yet, or the pod just went away
            return []
        try:
            data: bytes = response.data
        finally:
            response.release_conn()
        return [line + "\n" for line in data.decode("utf-8", "replace").splitlines()]

    async def logs(self, ref: ContainerRef, *, follow: bool, tail_lines: int) -> AsyncIterator[LogItem]:
        pods = await self._pods(ref)
        if not pods:
            raise NotFound(f"no pods of workload {ref.prefix}/{ref.name}")
        several = len(pods) > 1
        if not follow:
            if tail_lines <= 0:
                return
            for pod in pods:
                name = pod["metadata"]["name"]
                for line in await self._bridge.call(self._history, ref.prefix, name, ref.name, tail_lines):
                    yield with_pod(line, name) if several else line
            return
        async with contextlib.aclosing(self._follow(ref, pods, tail_lines)) as following:
            async for item in following:  # closed with this iterator: the follow threads stop
                yield item

    async def _follow(self, ref: ContainerRef, pods: list[Obj], tail_lines: int) -> AsyncGenerator[LogItem]:
        loop = asyncio.get_running_loop()
        buffer: deque[tuple[str, str | LogGap]] = deque()
        dropped = 0
        wakeup = asyncio.Event()
        stop = threading.Event()
        responses: set[Any] = set()
        followed: dict[str, asyncio.Task[None]] = {}
        restarts: dict[str, int] = {}
        last_stamp: dict[str, str] = {}
        initial = {p["metadata"]["name"] for p in pods}

        def offer(pod: str, line: str) -> None:  # runs in the loop
            nonlocal dropped
            if len(buffer) >= self._buffer_lines:
                dropped += 1
            else:
                if dropped:  # the gap sits where the lines were lost
                    buffer.append((pod, LogGap(dropped)))
                    dropped = 0
                buffer.append((pod, line))
            wakeup.set()

        def stream_blocking(pod: str, query: list[tuple[str, str]]) -> None:
            request = Request("get", resources.POD, ref.prefix, f"{pod}/log")
            try:
                response = self._api.open_stream(request, resources.POD.path(ref.prefix, pod, "log"), query)
            except RuntimeFailure as err:
                log.info("kube_log_follow_refused", pod=pod, error=str(err))
                return
            responses.add(response)
            try:
                if stop.is_set():  # stopped while opening: the owner's shutdown() missed it
                    return
                for raw in response:
                    if stop.is_set():
                        return
                    loop.call_soon_threadsafe(offer, pod, raw.decode("utf-8", "replace"))
            except Exception as err:  # closed on cancel, or a broken connection
                if not stop.is_set():
                    log.info("kube_log_follow_ended", pod=pod, error=type(err).__name__)
            finally:
                responses.discard(response)
                response.release_conn()

        def start(pod: Obj) -> None:
            name = pod["metadata"]["name"]
            query = [("container", ref.name), ("follow", "true"), ("timestamps", "true")]
            if name in last_stamp:
                query.append(("sinceTime", last_stamp[name]))
            elif name in initial:
                query.append(("tailLines", str(max(tail_lines, 0))))
            followed[name] = asyncio.create_task(
                self._bridge.stream(stream_blocking, name, query), name=f"kube-log-{ref.prefix}-{name}"
            )

        try:
            while True:
                current = await self._pods(ref)
                names = {p["metadata"]["name"] for p in current}
                for pod in current:
                    name = pod["metadata"]["name"]
                    task = followed.get(name)
                    count = _started(pod, ref.name)
                    if count is None or (task is not None and not task.done()):
                        continue
                    if task is None or restarts.get(name) != count:  # new pod, or a restarted container
                        restarts[name] = count
                        start(pod)
                for name in list(followed):
                    if name not in names and followed[name].done():
                        del followed[name]
                several = len(names) > 1
                deadline = loop.time() + POD_POLL_S
                while (remaining := deadline - loop.time()) > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wakeup.wait(), remaining)
                    wakeup.clear()
                    while buffer:
                        pod_name, entry = buffer.popleft()
                        if isinstance(entry, LogGap):
                            yield entry
                            continue
                        last_stamp[pod_name] = entry.partition(" ")[0]
                        yield with_pod(entry, pod_name) if several else entry
                    if dropped:
                        gap, dropped = dropped, 0
                        yield LogGap(gap)
        finally:
            stop.set()
            for response in list(responses):
                with contextlib.suppress(OSError):  # it may close itself meanwhile
                    response.shutdown()
            for task in followed.values():
                task.cancel()
            await asyncio.gather(*followed.values(), return_exceptions=True)
