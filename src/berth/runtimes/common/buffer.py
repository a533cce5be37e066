"""The one bounded buffer between reader threads and the event loop, for log lines.

It holds at most ``capacity`` items. When it is full, a reader waits a moment (``backpressure_s``,
absorbing a short stall of the consumer); what still does not fit is dropped and counted, and the
consumer finds a ``LogGap`` with the count exactly where the items were lost. A flood so keeps the
view current instead of lagging without bound, and says what it left out.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Sequence
from typing import Final, Generic, TypeVar

from berth.model import LogGap

T = TypeVar("T")

BACKPRESSURE_S: Final = 0.05


class _Gap:
    __slots__ = ("dropped",)

    def __init__(self) -> None:
        self.dropped = 0


class BoundedBuffer(Generic[T]):
    """Any number of producer threads ``push``; one consumer in the loop takes ``next_batch``.
    ``close`` (by the last producer) ends the consumer's batches once the buffer is empty."""

    def __init__(
        self, capacity: int, loop: asyncio.AbstractEventLoop, *, backpressure_s: float = BACKPRESSURE_S
    ) -> None:
        self._capacity = capacity
        self._loop = loop
        self._backpressure_s = backpressure_s
        self._items: deque[T | _Gap] = deque()
        self._held = 0
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)
        self._closed = False
        self._waiting = False
        self._wakeup = asyncio.Event()
        self.dropped_total = 0

    # -- producer side (any thread) -----------------------------------------------------------

    def push(self, items: Sequence[T]) -> None:
        with self._lock:
            room = self._capacity - self._held
            if len(items) > room and not self._closed and self._backpressure_s > 0:
                self._drained.wait(self._backpressure_s)
                room = self._capacity - self._held
            kept = max(0, min(room, len(items)))
            self._items.extend(items[:kept])
            self._held += kept
            if kept < len(items):
                self._count_dropped(len(items) - kept)
            wake = self._waiting and bool(self._items)
            if wake:
                self._waiting = False
        if wake:
            self._loop.call_soon_threadsafe(self._wakeup.set)

    def _count_dropped(self, dropped: int) -> None:
        gap = self._items[-1] if self._items else None
        if not isinstance(gap, _Gap):  # a new gap where the loss starts; later losses join it
            gap = _Gap()
            self._items.append(gap)
        gap.dropped += dropped
        self.dropped_total += dropped

    def close(self) -> None:
        with self._lock:
            self._closed = True
            wake, self._waiting = self._waiting, False
            self._drained.notify_all()
        if wake:
            self._loop.call_soon_threadsafe(self._wakeup.set)

    # -- consumer side (the event loop) -------------------------------------------------------

    async def next_batch(self) -> list[T | LogGap] | None:
        """What arrived since the last call (waiting for something); ``None`` once closed and
        empty. Cancelling the wait loses nothing."""
        while True:
            with self._lock:
                batch = list(self._items)
                self._items.clear()
                self._held = 0
                self._drained.notify_all()
                closed = self._closed
                if not batch and not closed:
                    self._waiting = True
                    self._wakeup.clear()
            if batch:
                return [LogGap(item.dropped) if isinstance(item, _Gap) else item for item in batch]
            if closed:
                return None
            await self._wakeup.wait()
