"""Long-lived answers: the ContainerState watch (§7) and the ContainerLogStream follow (§8).

Both run until the platform completes the call (its way of saying "stop"), the source ends, or
the dispatcher cancels them (a newer request for the same prefix/container, a reconnect,
shutdown). The call is half-closed exactly once on every path.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import structlog

from berth.agent.commands import ContainerLogs, WatchState
from berth.agent.ports import MAX_MESSAGE_BYTES, OutboundStream, PlatformLink
from berth.errors import BerthError
from berth.model import LogGap, StateUpdate
from berth.runtimes.base import Runtime

log = structlog.get_logger("berth.agent.streams")

T = TypeVar("T")
MAX_LINE_BYTES: Final = 64 * 1024


async def _wait_completed(stream: OutboundStream[T]) -> None:
    await stream.wait_completed()


async def close_iterator(iterator: AsyncIterator[object]) -> None:
    """Close an async generator now (not at garbage collection) so its SDK stream is released."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


def fit_line(line: str, limit: int = MAX_LINE_BYTES) -> str:
    """One log message stays far below the 4 MiB limit: an over-long line is cut and marked."""
    encoded = line.encode("utf-8")
    if len(encoded) <= limit:
        return line
    kept = encoded[: limit - 64].decode("utf-8", errors="ignore")
    return f"{kept} [berth: line truncated, {len(encoded)} bytes]\n"


async def _until_completed(stream: OutboundStream[T], work: Coroutine[Any, Any, None], name: str) -> str:
    """Run ``work`` until it ends or the platform completes the call; returns how it ended."""
    worker = asyncio.create_task(work, name=name)
    completed = asyncio.create_task(_wait_completed(stream), name=f"{name}:completion")
    try:
        done, _ = await asyncio.wait({worker, completed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (worker, completed):
            task.cancel()
        results = await asyncio.gather(worker, completed, return_exceptions=True)
    if worker in done:
        error = results[0]
        if isinstance(error, BaseException) and not isinstance(error, asyncio.CancelledError):
            raise error
        return "source_ended"
    return "completed_by_platform"


@dataclass(frozen=True)
class _StreamHandler:
    runtime: Runtime
    link: PlatformLink


class StateWatchHandler(_StreamHandler):
    async def handle(self, command: WatchState) -> str:
        stream = await self.link.open_container_state(command.prefix)
        try:
            if command.one_shot:
                await stream.send(await self.runtime.list_state(command.prefix or None))
                return "sent_once"
            return await _until_completed(stream, self._pump(command, stream), f"state-pump:{command.prefix}")
        finally:
            await stream.close()

    async def _pump(self, command: WatchState, stream: OutboundStream[StateUpdate]) -> None:
        updates = self.runtime.watch(command.prefix or None)
        try:
            async for update in updates:
                if not await stream.send(update):
                    return
        finally:
            await close_iterator(updates)


class LogStreamHandler(_StreamHandler):
    async def handle(self, command: ContainerLogs) -> str:
        stream = await self.link.open_log_stream(command.ref)
        try:
            return await _until_completed(stream, self._pump(command, stream), f"log-pump:{command.ref.key}")
        except BerthError as err:
            # Streaming failures get no CommandError (§8): log and half-close.
            log.warning("log_stream_failed", container=command.ref.key, error=str(err))
            return "failed"
        finally:
            await stream.close()

    async def _pump(self, command: ContainerLogs, stream: OutboundStream[str]) -> None:
        lines = self.runtime.logs(command.ref, follow=True, tail_lines=command.tail_lines)
        try:
            async for item in lines:
                if isinstance(item, LogGap):
                    text = f"[berth: {item.dropped_lines} log lines dropped, the viewer was too slow]\n"
                else:
                    text = fit_line(item)
                if not await stream.send(text):
                    return
        finally:
            await close_iterator(lines)


def fit_log_list(lines: list[str], limit: int = MAX_MESSAGE_BYTES) -> list[str]:
    """The newest lines that fit in one ContainerLog answer; a first line says what was cut."""
    kept: list[str] = []
    size = 0
    for line in reversed(lines):
        fitted = fit_line(line)
        cost = len(fitted.encode("utf-8")) + 6
        if size + cost > limit - 256:
            dropped = len(lines) - len(kept)
            kept.append(f"[berth: {dropped} older lines left out, the answer is limited to 4 MiB]\n")
            break
        kept.append(fitted)
        size += cost
    kept.reverse()
    return kept
