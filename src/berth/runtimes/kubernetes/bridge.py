"""The one bridge from the event loop to the blocking client: short calls go to the default
thread pool (``asyncio.to_thread``); long-lived streams (watches, log follows) go to a dedicated,
bounded pool so they cannot starve one-shot calls (§17 #41: they carry no client timeout)."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, ParamSpec, TypeVar

from berth.errors import TemporaryCommandError

P = ParamSpec("P")
T = TypeVar("T")
MAX_STREAMS: Final = 32


class Bridge:
    def __init__(self, max_streams: int = MAX_STREAMS) -> None:
        self._max_streams = max_streams
        self._streams: ThreadPoolExecutor | None = None
        self._slots = threading.BoundedSemaphore(max_streams)
        self._closed = False

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def stream(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a long-lived blocking function in the stream pool; refuse when it is full."""
        if self._closed:
            raise TemporaryCommandError("the Kubernetes runtime is closing")
        if not self._slots.acquire(blocking=False):
            raise TemporaryCommandError(
                f"too many open watches and log follows (max {self._max_streams})", 5.0
            )
        if self._streams is None:
            self._streams = ThreadPoolExecutor(self._max_streams, thread_name_prefix="berth-kube-stream")
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._streams, functools.partial(fn, *args))
        finally:
            self._slots.release()

    def close(self) -> None:
        self._closed = True
        if self._streams is not None:
            self._streams.shutdown(wait=False, cancel_futures=True)
