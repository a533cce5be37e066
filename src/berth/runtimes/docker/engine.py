"""The one way into the Docker SDK: a lazily created client, blocking calls through the runtimes'
thread bridge (long follows and watches in its bounded stream pool), the open streams that closing
must unblock, and SDK errors translated into ``berth.errors``."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final, Protocol, TypeVar

import docker
import docker.errors
import requests.exceptions
import structlog

from berth.errors import NotFound, PermanentCommandError, RuntimeFailure, TemporaryCommandError
from berth.runtimes.common.bridge import ThreadBridge

log = structlog.get_logger(__name__)

T = TypeVar("T")


class Closeable(Protocol):
    def close(self) -> None: ...


STREAM_THREADS: Final = 64  # log follows, state and health event streams, helper container waits
CONNECTION_POOL: Final = STREAM_THREADS + 16
REQUEST_TIMEOUT_S: Final = 120


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Translate docker SDK / transport errors raised inside into ``berth.errors``."""
    try:
        yield
    except RuntimeFailure:
        raise
    except docker.errors.NotFound as err:
        raise NotFound(f"{what}: {explanation(err)}") from err
    except docker.errors.APIError as err:
        raise PermanentCommandError(f"{what}: {explanation(err)}") from err
    except (requests.exceptions.ConnectionError, ConnectionError, docker.errors.DockerException) as err:
        raise TemporaryCommandError(f"{what}: the container engine is not reachable ({err})") from err
    except requests.exceptions.RequestException as err:
        raise TemporaryCommandError(f"{what}: {err}") from err


def explanation(err: docker.errors.APIError) -> str:
    """The engine's own message (``explanation``), not the SDK's URL-laden text."""
    text = err.explanation
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return str(text or err)


def status_code(err: BaseException) -> int | None:
    cause = err.__cause__ if isinstance(err, RuntimeFailure) else err
    if isinstance(cause, docker.errors.APIError):
        return cause.status_code
    return None


class Engine:
    """Owns the SDK client, the thread bridge and the open streams. Safe to create at import time
    of the agent: nothing connects until the first call. ``api_version`` ``"auto"`` asks the
    engine; a fixed one skips that probe."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_version: str = "auto",
        timeout_s: int = REQUEST_TIMEOUT_S,
    ) -> None:
        self._base_url = base_url
        self._api_version = api_version
        self._timeout_s = timeout_s
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()
        self.threads = ThreadBridge("docker", STREAM_THREADS)
        self._closed = False
        self._open_streams: set[Closeable] = set()

    # -- the client ---------------------------------------------------------------------------

    def client(self) -> docker.DockerClient:
        """Blocking (negotiates the API version on first use): call from a thread."""
        with self._lock:
            if self._closed:
                raise TemporaryCommandError("the Docker runtime is closed")
            if self._client is None:
                with translated("connect to the container engine"):
                    if self._base_url:
                        self._client = docker.DockerClient(
                            base_url=self._base_url,
                            version=self._api_version,
                            timeout=self._timeout_s,
                            max_pool_size=CONNECTION_POOL,
                        )
                    else:
                        self._client = docker.from_env(
                            version=self._api_version, timeout=self._timeout_s, max_pool_size=CONNECTION_POOL
                        )
            return self._client

    # -- calls --------------------------------------------------------------------------------

    async def call(self, what: str, fn: Callable[[docker.DockerClient], T]) -> T:
        """A one-shot blocking SDK call in a thread, errors translated."""
        return await self.threads.call(self.run, what, fn)

    def run(self, what: str, fn: Callable[[docker.DockerClient], T]) -> T:
        """The same, blocking: for code that already runs in a thread."""
        client = self.client()
        with translated(what):
            return fn(client)

    async def in_stream_pool(self, fn: Callable[[], T]) -> T:
        """A long-running blocking function (a follow, a watch) on a stream thread."""
        return await self.threads.stream(fn)

    def submit_stream(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        return self.threads.submit_stream(fn)

    def track(self, stream: Closeable) -> None:
        """Remember an open SDK stream so ``aclose`` can unblock its thread."""
        with self._lock:
            if self._closed:
                close_quietly(stream)
                raise TemporaryCommandError("the Docker runtime is closed")
            self._open_streams.add(stream)

    def untrack(self, stream: Closeable) -> None:
        with self._lock:
            self._open_streams.discard(stream)
        close_quietly(stream)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Blocking (closes the client's sessions)."""
        with self._lock:
            self._closed = True
            streams, self._open_streams = list(self._open_streams), set()
            client, self._client = self._client, None
        for stream in streams:
            close_quietly(stream)
        # Tracked streams are closed above, so their threads end at once; a helper container's
        # wait (bounded by its own timeout) is not waited for: shutdown must stay quick.
        self.threads.close()
        if client is not None:
            client.close()


def close_quietly(stream: Closeable) -> None:
    """``CancellableStream.close()`` shuts the socket down, which unblocks the reading thread;
    closing an already closed or broken stream is not an error."""
    try:
        stream.close()
    except Exception as err:
        log.debug("stream_close_failed", error=str(err))
