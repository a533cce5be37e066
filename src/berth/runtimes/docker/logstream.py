"""containerLog on Docker (§8): history then follow with timestamps, reopened after the container
restarts (or is replaced), through a bounded buffer that counts what a flood forces it to drop."""

from __future__ import annotations

import asyncio
import math
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any, Final, Literal

import structlog

from berth.errors import NotFound, RuntimeFailure
from berth.model import ContainerRef, LogGap, LogItem
from berth.runtimes.docker.bridge import EngineBridge
from berth.runtimes.docker.lookup import find_container

log = structlog.get_logger(__name__)

RESTART_POLL_S: Final = 0.5


class _Gap:
    __slots__ = ("dropped",)

    def __init__(self) -> None:
        self.dropped = 0


class LineBuffer:
    """Lines from a reader thread to the event loop. Holds at most ``capacity`` lines; a line
    that does not fit is dropped and counted, and the consumer sees a ``LogGap`` where it was."""

    def __init__(self, capacity: int, loop: asyncio.AbstractEventLoop) -> None:
        self._capacity = capacity
        self._loop = loop
        self._items: deque[str | _Gap] = deque()
        self._lines = 0
        self._lock = threading.Lock()
        self._closed = False
        self._waiting = False
        self._wakeup = asyncio.Event()
        self.dropped_total = 0

    # producer side (thread)
    def push(self, lines: Iterable[str]) -> None:
        wake = False
        with self._lock:
            for line in lines:
                if self._lines < self._capacity:
                    self._items.append(line)
                    self._lines += 1
                else:
                    gap = self._items[-1] if self._items else None
                    if not isinstance(gap, _Gap):
                        gap = _Gap()
                        self._items.append(gap)
                    gap.dropped += 1
                    self.dropped_total += 1
            if self._waiting and self._items:
                self._waiting = False
                wake = True
        if wake:
            self._loop.call_soon_threadsafe(self._wakeup.set)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            wake, self._waiting = self._waiting, False
        if wake:
            self._loop.call_soon_threadsafe(self._wakeup.set)

    # consumer side (event loop)
    async def items(self) -> AsyncIterator[LogItem]:
        while True:
            with self._lock:
                batch = list(self._items)
                self._items.clear()
                self._lines = 0
                closed = self._closed
                if not batch and not closed:
                    self._waiting = True
                    self._wakeup.clear()
            if batch:
                for item in batch:
                    yield LogGap(item.dropped) if isinstance(item, _Gap) else item
            elif closed:
                return
            else:
                await self._wakeup.wait()


def pump_lines(stream: Iterable[bytes], buffer: LineBuffer) -> None:
    """Blocking: split the engine's chunks into lines (newline kept) until the stream ends."""
    pending = b""
    try:
        for chunk in stream:
            if not chunk:
                continue
            data = pending + chunk if pending else chunk
            parts = data.split(b"\n")
            pending = parts.pop()
            if parts:
                buffer.push([part.decode("utf-8", "replace") + "\n" for part in parts])
    except Exception as err:  # a broken connection ends this follow; the caller reopens
        log.debug("docker_log_read_failed", error=str(err))
    finally:
        if pending:
            buffer.push([pending.decode("utf-8", "replace") + "\n"])
        buffer.close()


def since_after(line: str) -> float | None:
    """Docker's ``since`` (unix seconds) just after a line's RFC 3339 nano timestamp, so a
    reopened follow does not repeat it (the SDK takes a float: sub-microsecond precision is lost,
    so the value is nudged up by one unit in the last place)."""
    stamp = line.split(" ", 1)[0]
    if not stamp.endswith("Z") or "T" not in stamp:
        return None
    base, _, fraction = stamp[:-1].partition(".")
    try:
        seconds = int(datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp())
    except ValueError:
        return None
    nanos = int((fraction + "000000000")[:9]) + 1
    after: float = math.nextafter(seconds + nanos / 1_000_000_000, math.inf)
    return after


class LogFollower:
    def __init__(self, bridge: EngineBridge, buffer_lines: int) -> None:
        self._bridge = bridge
        self._buffer_lines = buffer_lines

    async def _find(self, ref: ContainerRef) -> dict[str, Any] | None:
        return await self._bridge.call(f"find {ref}", lambda c: find_container(c, ref))

    async def lines(self, ref: ContainerRef, *, follow: bool, tail_lines: int) -> AsyncIterator[LogItem]:
        attrs = await self._find(ref)
        if attrs is None:
            raise NotFound(f"container not found: {ref}")
        cid = str(attrs["Id"])
        if not follow:
            data: bytes = await self._bridge.call(
                f"logs of {ref}",
                lambda c: c.api.logs(cid, stdout=True, stderr=True, timestamps=True, tail=max(0, tail_lines)),
            )
            for part in data.decode("utf-8", "replace").splitlines(keepends=True):
                yield part if part.endswith("\n") else part + "\n"
            return
        since: float | None = None
        while True:
            last: str | None = None
            async for item in self._follow_once(cid, ref, tail_lines, since):
                if isinstance(item, str):
                    last = item
                yield item
            if last is not None:
                since = since_after(last) or since
            elif since is None:
                since = datetime.now(UTC).timestamp()
            cid = await self._wait_running(ref)

    async def _follow_once(
        self, cid: str, ref: ContainerRef, tail_lines: int, since: float | None
    ) -> AsyncIterator[LogItem]:
        tail: int | Literal["all"] = max(0, tail_lines) if since is None else "all"
        stream = await self._bridge.call(
            f"follow logs of {ref}",
            lambda c: c.api.logs(
                cid,
                stdout=True,
                stderr=True,
                stream=True,
                follow=True,
                timestamps=True,
                tail=tail,
                since=since,
            ),
        )
        self._bridge.track(stream)
        buffer = LineBuffer(self._buffer_lines, asyncio.get_running_loop())
        pumping = asyncio.wrap_future(self._bridge.submit_stream(lambda: pump_lines(stream, buffer)))
        try:
            async for item in buffer.items():
                yield item
        finally:
            self._bridge.untrack(stream)
            await asyncio.gather(pumping, return_exceptions=True)

    async def _wait_running(self, ref: ContainerRef) -> str:
        """The follow ended: the container stopped (or was replaced). Wait until a container of
        that name runs again; the iterator ends only when the consumer closes it."""
        while True:
            await asyncio.sleep(RESTART_POLL_S)
            try:
                attrs = await self._find(ref)
            except RuntimeFailure as err:  # the engine may be restarting
                log.debug("log_follow_wait_failed", container=str(ref), error=str(err))
                continue
            if attrs is not None and attrs["State"]["Status"] == "running":
                return str(attrs["Id"])
