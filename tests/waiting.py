"""How tests wait: one scale for every timeout, one way to wait for a condition.

``BERTH_TEST_TIMEOUT_SCALE`` (default 1) multiplies every timeout a test waits with, so a slow or
busy machine gets longer waits from one setting instead of scattered constants. A wait that runs
out fails with a message saying what did not happen and the last value seen; it never ends quietly.
Prefer awaiting an event; poll only what nothing notifies about.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Final, TypeVar

T = TypeVar("T")
SCALE_ENV: Final = "BERTH_TEST_TIMEOUT_SCALE"


def _scale_from_env() -> float:
    raw = os.environ.get(SCALE_ENV, "1")
    try:
        scale = float(raw)
    except ValueError:
        raise ValueError(f"{SCALE_ENV} must be a number, got {raw!r}") from None
    if scale <= 0:
        raise ValueError(f"{SCALE_ENV} must be positive, got {raw!r}")
    return scale


TIMEOUT_SCALE: Final = _scale_from_env()


def scaled(timeout_s: float) -> float:
    """A test's timeout on this machine."""
    return timeout_s * TIMEOUT_SCALE


async def wait_for(
    condition: Callable[[], T | Awaitable[T]],
    timeout_s: float,
    message: str,
    *,
    interval_s: float = 0.05,
    ignoring: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll ``condition`` (plain or async) until it returns something truthy, and return that.

    Exceptions of the ``ignoring`` types count as "not yet" (a port not bound yet, a pod replaced
    meanwhile). After ``scaled(timeout_s)`` it fails with ``message`` and the last outcome."""
    deadline = time.monotonic() + scaled(timeout_s)
    last: object = None
    while True:
        try:
            value = condition()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value  # type: ignore[return-value]
            last = value
        except ignoring as err:
            last = err
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message} (not within {scaled(timeout_s):g} s; last: {last!r})")
        await asyncio.sleep(interval_s)


def wait_for_blocking(
    condition: Callable[[], T],
    timeout_s: float,
    message: str,
    *,
    interval_s: float = 0.1,
    ignoring: tuple[type[BaseException], ...] = (),
) -> T:
    """``wait_for`` for code running in a thread (never on the event loop: it sleeps)."""
    deadline = time.monotonic() + scaled(timeout_s)
    last: object = None
    while True:
        try:
            value = condition()
            if value:
                return value
            last = value
        except ignoring as err:
            last = err
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message} (not within {scaled(timeout_s):g} s; last: {last!r})")
        time.sleep(interval_s)


@asynccontextmanager
async def within(timeout_s: float, message: str) -> AsyncIterator[None]:
    """Await something that notifies (an event, the next stream item) under a scaled deadline;
    running out fails with ``message`` instead of a bare ``TimeoutError``."""
    try:
        async with asyncio.timeout(scaled(timeout_s)):
            yield
    except TimeoutError:
        raise AssertionError(f"{message} (not within {scaled(timeout_s):g} s)") from None


async def wait_event(awaitable: Awaitable[T], timeout_s: float, message: str) -> T:
    """``await`` one thing under a scaled deadline (``asyncio.wait_for`` with a message)."""
    async with within(timeout_s, message):
        return await awaitable
