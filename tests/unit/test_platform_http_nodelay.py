"""The platform's HTTP socket: connections accepted on it have Nagle off. With Nagle on, every
answer on a kept-alive connection waited for the client's delayed ACK (about 40 ms a request)."""

from __future__ import annotations

import asyncio
import socket

from berth.platform.app import _bind_http


async def test_connections_accepted_on_the_http_socket_have_nagle_off() -> None:
    listening = _bind_http("127.0.0.1:0")
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    server = await asyncio.get_running_loop().create_server(Probe, sock=listening)
    try:
        port = listening.getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(accepted, 5) != 0
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
