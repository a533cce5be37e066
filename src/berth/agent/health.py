"""Health: whether the platform has accepted the session, served on the dagent-compatible unix
socket (``{"connected": bool}``, §14.8) and on a loopback HTTP endpoint (/livez, /readyz, /metrics)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import structlog

from berth.agent.metrics import AgentMetrics
from berth.errors import ConfigError

log = structlog.get_logger("berth.agent.health")


class HealthState:
    """``accepted`` becomes true only after the platform has accepted the session (the stream stayed
    open without error for a while, or the first command arrived), never merely on dialling."""

    def __init__(self, metrics: AgentMetrics | None = None) -> None:
        self._metrics = metrics
        self.stream_open = False
        self.accepted = False
        self.changed = asyncio.Event()

    def _publish(self) -> None:
        if self._metrics is not None:
            self._metrics.session_open = self.stream_open
            self._metrics.session_accepted = self.accepted
        self.changed.set()
        self.changed = asyncio.Event()

    def dialling(self) -> None:
        self.stream_open = True
        self.accepted = False
        self._publish()

    def mark_accepted(self) -> None:
        if not self.accepted:
            self.accepted = True
            self._publish()

    def disconnected(self) -> None:
        if self.stream_open or self.accepted:
            self.stream_open = False
            self.accepted = False
            self._publish()

    async def wait_accepted(self) -> None:
        while not self.accepted:
            await self.changed.wait()


@contextlib.asynccontextmanager
async def _closing(writer: asyncio.StreamWriter) -> AsyncIterator[None]:
    """Answer, then close the connection; a client that already left is no error."""
    try:
        yield
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def _stop(server: asyncio.Server | None) -> None:
    if server is not None:
        server.close()
        await server.wait_closed()


class HealthSocket:
    """Each connection receives ``{"connected":true|false}`` and is closed (dagent format)."""

    def __init__(self, path: Path, state: HealthState) -> None:
        self.path = path
        self._state = state
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = await asyncio.start_unix_server(self._answer, path=str(self.path))
        os.chmod(self.path, 0o660)

    async def _answer(self, _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with _closing(writer):
            writer.write(json.dumps({"connected": self._state.accepted}).encode())
            await writer.drain()

    async def close(self) -> None:
        await _stop(self._server)
        self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def read_health_socket(path: Path, timeout_s: float = 5.0) -> bool:
    """What ``berth health`` asks (blocking; the CLI has no event loop)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout_s)
        client.connect(str(path))
        chunks = []
        while chunk := client.recv(4096):
            chunks.append(chunk)
    answer = json.loads(b"".join(chunks) or b"{}")
    return isinstance(answer, dict) and answer.get("connected") is True


def loopback_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        is_loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        is_loopback = False
    if not is_loopback:
        raise ConfigError("BERTH_METRICS_ADDRESS", "must be a loopback address (127.0.0.1, ::1 or localhost)")
    return host, int(port)


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class HttpEndpoint:
    """A minimal HTTP/1.1 server for /livez, /readyz and /metrics (no web framework in the agent)."""

    def __init__(self, address: str, state: HealthState, metrics: AgentMetrics) -> None:
        self.host, self.port = loopback_address(address)
        self._state = state
        self._metrics = metrics
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, host=self.host, port=self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    def _route(self, path: str) -> tuple[int, str, bytes]:
        if path == "/livez":
            return 200, "text/plain", b"ok\n"
        if path == "/readyz":
            if self._state.accepted:
                return 200, "text/plain", b"ready\n"
            return 503, "text/plain", b"not connected to the platform\n"
        if path == "/metrics":
            return 200, "text/plain; version=0.0.4; charset=utf-8", self._metrics.render()
        return 404, "text/plain", b"not found\n"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A slow, malformed or vanished client gets nothing more; the endpoint keeps serving.
        quiet = (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError)
        async with _closing(writer):
            with contextlib.suppress(*quiet):
                async with asyncio.timeout(5):
                    request = await reader.readuntil(b"\r\n\r\n")
                parts = request.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
                method, path = (parts[0], parts[1].split("?", 1)[0]) if len(parts) >= 2 else ("", "")
                if method not in ("GET", "HEAD"):
                    status, content_type, body = 405, "text/plain", b"method not allowed\n"
                else:
                    status, content_type, body = self._route(path)
                reason = _REASONS[status]
                head = (
                    f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                ).encode("latin-1")
                writer.write(head + (b"" if method == "HEAD" else body))
                await writer.drain()

    async def close(self) -> None:
        await _stop(self._server)
        self._server = None
