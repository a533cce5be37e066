"""A fast reader for the engine's log endpoint. The SDK demultiplexes one frame per call (two
reads and a generator step per line), which caps a follow near 150k lines/s; this reads whatever
the socket has (up to 64 KiB), strips the 8-byte stream headers in one pass and hands over
batches. Closing works like the SDK's own streams (``CancellableStream``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

import docker
from docker.types.daemon import CancellableStream

READ_SIZE: Final = 65536
HEADER: Final = 8


def demultiplex(buffer: bytes) -> tuple[bytes, bytes]:
    """``(payloads, rest)``: the concatenated payloads of the complete frames in ``buffer`` and
    the bytes of an incomplete trailing frame."""
    parts: list[bytes] = []
    pos, end = 0, len(buffer)
    while end - pos >= HEADER:
        size = int.from_bytes(buffer[pos + 4 : pos + HEADER], "big")
        if end - pos - HEADER < size:
            break
        parts.append(buffer[pos + HEADER : pos + HEADER + size])
        pos += HEADER + size
    return b"".join(parts), buffer[pos:]


def dechunk(buffer: bytes) -> tuple[bytes, bytes, bool]:
    """``(data, rest, ended)``: the data of the complete HTTP/1.1 chunks in ``buffer``, the bytes
    of an incomplete trailing chunk, and whether the last (empty) chunk was seen."""
    parts: list[bytes] = []
    pos, end = 0, len(buffer)
    while True:
        eol = buffer.find(b"\r\n", pos)
        if eol < 0:
            break
        size = int(buffer[pos:eol].split(b";", 1)[0], 16)
        if size == 0:
            return b"".join(parts), b"", True
        if end < eol + 2 + size + 2:
            break
        parts.append(buffer[eol + 2 : eol + 2 + size])
        pos = eol + 2 + size + 2
    return b"".join(parts), buffer[pos:], False


def _body(response: Any) -> Iterator[bytes]:
    """The response body in the largest pieces the socket offers. ``http.client`` hands out one
    HTTP chunk per read (one log line each): the chunked encoding is undone here instead."""
    http_response = response.raw._fp
    if not http_response.chunked:
        while data := http_response.read1(READ_SIZE):
            yield data
        return
    socket_file = http_response.fp
    rest = b""
    while data := socket_file.read1(READ_SIZE):
        body, rest, ended = dechunk(rest + data if rest else data)
        if body:
            yield body
        if ended:
            return


def _read(response: Any, multiplexed: bool) -> Iterator[bytes]:
    rest = b""
    try:
        for data in _body(response):
            if not multiplexed:
                yield data
                continue
            payload, rest = demultiplex(rest + data if rest else data)
            if payload:
                yield payload
    finally:
        response.close()


def open_log_stream(
    client: docker.DockerClient, container_id: str, *, tty: bool, params: dict[str, Any]
) -> CancellableStream[bytes]:
    """``GET /containers/{id}/logs`` with ``params``; blocking until the headers arrive."""
    api: Any = client.api  # the SDK's own request helpers (typed stubs leave them out)
    response = api._get(api._url("/containers/{0}/logs", container_id), params=params, stream=True)
    api._raise_for_status(response)
    return CancellableStream(_read(response, multiplexed=not tty), response)
