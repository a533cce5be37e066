"""A byte forwarder between a TCP address and a Unix socket, for tools/small-engine.sh: the small
engine runs in its own network namespace (so it can never touch the host's docker0) and reaches
the test registry on the host's 127.0.0.1 through a Unix socket on the shared filesystem.

  unix_tcp_forward.py listen-tcp HOST PORT SOCKET    accept TCP, connect to SOCKET
  unix_tcp_forward.py listen-unix SOCKET HOST PORT   accept on SOCKET, connect to TCP
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def main(argv: list[str]) -> None:
    mode = argv[0]
    if mode == "listen-tcp":
        host, port, socket_path = argv[1], int(argv[2]), argv[3]

        async def to_unix(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_unix_connection(socket_path)
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        server = await asyncio.start_server(to_unix, host, port)
    elif mode == "listen-unix":
        socket_path, host, port = argv[1], argv[2], int(argv[3])
        with contextlib.suppress(FileNotFoundError):
            os.unlink(socket_path)

        async def to_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_connection(host, port)
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        server = await asyncio.start_unix_server(to_tcp, socket_path)
    else:
        raise SystemExit(__doc__)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
