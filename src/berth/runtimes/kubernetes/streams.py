"""The long-lived API streams (watches, log follows) of one owner, read in stream threads.

The owner's ``shutdown`` sets the stop flag and shuts every open response down, which unblocks
the reading threads at once (a watch or follow has no client timeout, §17 #41).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from berth.runtimes.kubernetes.api import KubeApi
from berth.runtimes.kubernetes.api_errors import Request


class OpenStreams:
    def __init__(self) -> None:
        self.stop = threading.Event()
        self._responses: set[Any] = set()

    @contextlib.contextmanager
    def open(
        self, api: KubeApi, request: Request, path: str, query: Sequence[tuple[str, str]]
    ) -> Iterator[Iterator[bytes]]:
        """Open a stream (its errors raise before the block) and give its lines until it ends or
        the owner stops; the response is released on the way out."""
        response = api.open_stream(request, path, list(query))
        self._responses.add(response)
        try:
            yield self._lines(response)
        finally:
            self._responses.discard(response)
            # Closed, not only released: a stream left unread (stopped, broken) must not go back to
            # the pool, or the next request on that connection reads the rest of the watch.
            with contextlib.suppress(OSError):
                response.close()
            response.release_conn()

    def _lines(self, response: Any) -> Iterator[bytes]:
        if self.stop.is_set():  # stopped while opening: ``shutdown`` missed this response
            return
        for line in response:
            if self.stop.is_set():
                return
            yield line

    def shutdown(self) -> None:
        self.stop.set()
        for response in list(self._responses):
            with contextlib.suppress(OSError):  # it may close itself meanwhile
                response.shutdown()
