"""Waiting on an asyncio queue or event with a deadline, in a way that never loses a cancel."""

from __future__ import annotations

import asyncio
from typing import TypeVar

T = TypeVar("T")


async def next_item(queue: asyncio.Queue[T], timeout_s: float) -> T | None:
    """The next queued item, or ``None`` once ``timeout_s`` has passed. ``asyncio.timeout``, not
    ``wait_for``: on Python 3.11 a cancel that lands as an item arrives is swallowed by
    ``wait_for``, and a watch loop then ran on, its engine stream open, after its consumer stopped."""
    try:
        async with asyncio.timeout(timeout_s):
            return await queue.get()
    except TimeoutError:
        return None


async def event_set(event: asyncio.Event, timeout_s: float) -> bool:
    """Whether ``event`` is set within ``timeout_s``; the same cancel-safe wait as ``next_item``."""
    try:
        async with asyncio.timeout(timeout_s):
            return await event.wait()
    except TimeoutError:
        return False
