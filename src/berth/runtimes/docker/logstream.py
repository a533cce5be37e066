"""containerLog on Docker (§8): history then follow with timestamps, reopened after the container
restarts (or is replaced), through a bounded buffer that counts what a flood forces it to drop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any, Final

import structlog
from docker.types.daemon import CancellableStream

from berth.errors import NotFound, RuntimeFailure
from berth.model import ContainerRef, LogItem
from berth.runtimes.common.buffer import BoundedBuffer
from berth.runtimes.docker.engine import Engine
from berth.runtimes.docker.logwire import open_log_stream
from berth.runtimes.docker.lookup import find_container

log = structlog.get_logger(__name__)

RESTART_POLL_S: Final = 0.5


def split_lines(data: bytes) -> tuple[list[str], bytes]:
    """Complete lines of ``data`` (newline kept, decoded once) and the incomplete rest."""
    cut = data.rfind(b"\n")
    if cut < 0:
        return [], data
    text = data[: cut + 1].decode("utf-8", "replace")
    parts = text.split("\n")
    parts.pop()  # the empty string after the last newline
    return [part + "\n" for part in parts], data[cut + 1 :]


def pump_lines(stream: Iterable[bytes], buffer: BoundedBuffer[str]) -> None:
    """Blocking: split the engine's chunks into lines until the stream ends."""
    pending = b""
    try:
        for chunk in stream:
            if not chunk:
                continue
            lines, pending = split_lines(pending + chunk if pending else chunk)
            if lines:
                buffer.push(lines)
    except Exception as err:  # a broken connection ends this follow; the caller reopens
        log.debug("docker_log_read_failed", error=str(err))
    finally:
        if pending:
            buffer.push([pending.decode("utf-8", "replace") + "\n"])
        buffer.close()


def since_after(line: str) -> str | None:
    """Docker's ``since`` (unix seconds with nanoseconds) just after a line's RFC 3339 nano
    timestamp, so a reopened follow neither repeats nor skips lines."""
    stamp = line.split(" ", 1)[0]
    if not stamp.endswith("Z") or "T" not in stamp:
        return None
    base, _, fraction = stamp[:-1].partition(".")
    try:
        seconds = int(datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp())
    except ValueError:
        return None
    nanos = int((fraction + "000000000")[:9]) + 1
    if nanos >= 1_000_000_000:
        seconds, nanos = seconds + 1, nanos - 1_000_000_000
    return f"{seconds}.{nanos:09d}"


class LogFollower:
    def __init__(self, engine: Engine, buffer_lines: int) -> None:
        self._engine = engine
        self._buffer_lines = buffer_lines

    async def _find(self, ref: ContainerRef) -> dict[str, Any] | None:
        return await self._engine.call(f"find {ref}", lambda c: find_container(c, ref))

    async def lines(self, ref: ContainerRef, *, follow: bool, tail_lines: int) -> AsyncIterator[LogItem]:
        attrs = await self._find(ref)
        if attrs is None:
            raise NotFound(f"container not found: {ref}")
        cid = str(attrs["Id"])
        if not follow:
            data: bytes = await self._engine.call(
                f"logs of {ref}",
                lambda c: c.api.logs(cid, stdout=True, stderr=True, timestamps=True, tail=max(0, tail_lines)),
            )
            lines, rest = split_lines(data)
            for line in lines:
                yield line
            if rest:
                yield rest.decode("utf-8", "replace") + "\n"
            return
        since: str | None = None
        while True:
            last: str | None = None
            stream, buffer, pumping = await self._open(attrs, ref, tail_lines, since)
            try:
                while (batch := await buffer.next_batch()) is not None:
                    for item in batch:
                        yield item
                    last = next((i for i in reversed(batch) if isinstance(i, str)), last)
            finally:
                self._engine.untrack(stream)
                await asyncio.gather(pumping, return_exceptions=True)
            if last is not None:
                since = since_after(last) or since
            elif since is None:
                since = f"{datetime.now(UTC).timestamp():.9f}"
            attrs = await self._wait_running(ref)

    async def _open(
        self, attrs: dict[str, Any], ref: ContainerRef, tail_lines: int, since: str | None
    ) -> tuple[CancellableStream[bytes], BoundedBuffer[str], asyncio.Future[None]]:
        """One follow request, read by a thread of the stream pool into a bounded buffer."""
        cid = str(attrs["Id"])
        tty = bool((attrs.get("Config") or {}).get("Tty"))
        params: dict[str, Any] = {"stdout": 1, "stderr": 1, "follow": 1, "timestamps": 1}
        if since is None:
            params["tail"] = str(max(0, tail_lines))
        else:
            params["tail"] = "all"
            params["since"] = since
        stream = await self._engine.call(
            f"follow logs of {ref}", lambda c: open_log_stream(c, cid, tty=tty, params=params)
        )
        self._engine.track(stream)
        buffer: BoundedBuffer[str] = BoundedBuffer(self._buffer_lines, asyncio.get_running_loop())
        try:
            pumping = asyncio.wrap_future(self._engine.submit_stream(lambda: pump_lines(stream, buffer)))
        except BaseException:
            self._engine.untrack(stream)
            raise
        return stream, buffer, pumping

    async def _wait_running(self, ref: ContainerRef) -> dict[str, Any]:
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
                return attrs
