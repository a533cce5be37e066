"""The one bridge from the event loop to blocking SDK calls.

One-shot calls run in the default thread pool (``asyncio.to_thread``). Long-lived blocking reads
(log follows, watches, event streams) carry no client timeout, so they get a dedicated pool of
``max_streams`` threads where they cannot starve the one-shot calls.

When every stream thread is taken, a new stream is **refused at once** with a
``TemporaryCommandError`` (retry after ``FULL_RETRY_AFTER_S``): it never waits in a queue behind
follows that may never end, which would look like a follow that silently shows nothing.

A slot is given back when the blocking function returns, not when its awaiting task is cancelled:
cancelling does not stop a thread, so the owner closes the stream it reads (the SDK's own close),
and only then is the thread, and its slot, free again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
from collections.abc import Callable
from typing import Final, ParamSpec, TypeVar

from berth.errors import TemporaryCommandError

FULL_RETRY_AFTER_S: Final = 5.0
P = ParamSpec("P")
T = TypeVar("T")


class ThreadBridge:
    """``name`` says whose threads these are (``docker``, ``kube``) in thread names and errors."""

    def __init__(self, name: str, max_streams: int) -> None:
        self._name = name
        self._max_streams = max_streams
        self._slots = threading.BoundedSemaphore(max_streams)
        self._lock = threading.Lock()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._closed = False

    @property
    def max_streams(self) -> int:
        return self._max_streams

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """A one-shot blocking call in the default thread pool."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def stream(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a long-lived blocking function on a stream thread and wait for its result."""
        return await asyncio.wrap_future(self.submit_stream(fn, *args, **kwargs))

    def submit_stream(
        self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        """Start a long-lived blocking function on a stream thread; refused when all are taken."""
        if not self._slots.acquire(blocking=False):
            raise TemporaryCommandError(
                f"too many open {self._name} log follows and watches (max {self._max_streams})",
                FULL_RETRY_AFTER_S,
            )
        try:
            future = self._stream_pool().submit(functools.partial(fn, *args, **kwargs))
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        return future

    def _stream_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._lock:
            if self._closed:
                raise TemporaryCommandError(f"the {self._name} runtime is closing")
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=self._max_streams, thread_name_prefix=f"berth-{self._name}-stream"
                )
            return self._pool

    def close(self) -> None:
        """Refuse new streams; threads still reading end when their owners close their streams
        (not waited for here: shutdown must stay quick)."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
