"""Logs of a workload's pods (§15.9 with §17 #50): history with ``tailLines`` per pod, then with
``follow`` one stream per pod, re-opened when a pod is replaced or its container restarts. Lines
keep the API server's timestamp prefix; the pod name follows it when the workload has several
pods. A bounded buffer drops lines under pressure and says so with ``LogGap``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Final

import structlog

from berth.errors import InvalidSpec, NotFound, RuntimeFailure
from berth.model import ContainerRef, LogGap, LogItem
from berth.runtimes.common.bridge import ThreadBridge
from berth.runtimes.common.buffer import BoundedBuffer
from berth.runtimes.kubernetes import resources
from berth.runtimes.kubernetes.api import KubeApi
from berth.runtimes.kubernetes.api_errors import Request
from berth.runtimes.kubernetes.manifests import APP_LABEL
from berth.runtimes.kubernetes.streams import OpenStreams

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
    def __init__(self, api: KubeApi, bridge: ThreadBridge, buffer_lines: int = BUFFER_LINES) -> None:
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
        buffer: BoundedBuffer[tuple[str, str]] = BoundedBuffer(self._buffer_lines, loop)
        initial = frozenset(p["metadata"]["name"] for p in pods)
        follow = _PodFollows(self._api, self._bridge, ref, tail_lines, buffer, initial)
        try:
            while True:
                several = follow.update(await self._pods(ref))
                deadline = loop.time() + POD_POLL_S
                while (remaining := deadline - loop.time()) > 0:
                    try:
                        async with asyncio.timeout(remaining):  # not wait_for: it can lose a cancel
                            batch = await follow.buffer.next_batch()
                    except TimeoutError:
                        break
                    for item in batch or ():
                        yield follow.shown(item, several=several)
        finally:
            await follow.aclose()


@dataclass
class _PodFollows:
    """One follow stream per started pod of a workload, all read into one bounded buffer."""

    api: KubeApi
    bridge: ThreadBridge
    ref: ContainerRef
    tail_lines: int
    buffer: BoundedBuffer[tuple[str, str]]
    initial: frozenset[str]  # the pods when the follow began: they start at ``tail_lines``
    streams: OpenStreams = field(default_factory=OpenStreams)
    followed: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    last_stamp: dict[str, str] = field(default_factory=dict)

    def update(self, current: list[Obj]) -> bool:
        """Follow new pods and restarted containers, forget ended follows of vanished pods;
        whether the workload has several pods. A follow that could not start (every stream
        thread taken) ends the whole stream with its error."""
        for follow in self.followed.values():
            if follow.done() and not follow.cancelled() and (refused := follow.exception()) is not None:
                raise refused
        for pod in current:
            name = pod["metadata"]["name"]
            task = self.followed.get(name)
            count = _started(pod, self.ref.name)
            if count is None or (task is not None and not task.done()):
                continue
            if task is None or self.restarts.get(name) != count:  # new pod, or a restarted container
                self.restarts[name] = count
                self._start(name)
        names = {p["metadata"]["name"] for p in current}
        for name in list(self.followed):
            if name not in names and self.followed[name].done():
                del self.followed[name]
        return len(names) > 1

    def shown(self, item: tuple[str, str] | LogGap, *, several: bool) -> LogItem:
        if isinstance(item, LogGap):
            return item
        pod, line = item
        self.last_stamp[pod] = line.partition(" ")[0]
        return with_pod(line, pod) if several else line

    def _start(self, pod: str) -> None:
        query = [("container", self.ref.name), ("follow", "true"), ("timestamps", "true")]
        if pod in self.last_stamp:
            query.append(("sinceTime", self.last_stamp[pod]))
        elif pod in self.initial:
            query.append(("tailLines", str(max(self.tail_lines, 0))))
        self.followed[pod] = asyncio.create_task(
            self.bridge.stream(self._read, pod, query), name=f"kube-log-{self.ref.prefix}-{pod}"
        )

    def _read(self, pod: str, query: list[tuple[str, str]]) -> None:
        """Blocking, in a stream thread: one pod's follow into the buffer."""
        ns = self.ref.prefix
        request = Request("get", resources.POD, ns, f"{pod}/log")
        try:
            with self.streams.open(self.api, request, resources.POD.path(ns, pod, "log"), query) as lines:
                for raw in lines:
                    self.buffer.push([(pod, raw.decode("utf-8", "replace"))])
        except RuntimeFailure as err:
            log.info("kube_log_follow_refused", pod=pod, error=str(err))
        except Exception as err:  # closed on cancel, or a broken connection
            if not self.streams.stop.is_set():
                log.info("kube_log_follow_ended", pod=pod, error=type(err).__name__)

    async def aclose(self) -> None:
        self.streams.shutdown()
        self.buffer.close()
        for task in self.followed.values():
            task.cancel()
        await asyncio.gather(*self.followed.values(), return_exceptions=True)
