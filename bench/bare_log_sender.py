"""The transport's floor for the log-follow curve: a bare gRPC client process that does nothing but
send ``ContainerLogMessage``s, one a line as the protocol wants (§8), on K concurrent
``ContainerLogStream`` calls — what any Python agent pays to put those lines on the wire.

It connects, prints ``ready``, waits for a line on stdin, then sends K x ``--lines`` messages of the
agent's shape (an RFC 3339 nano timestamp, a number, a newline) with one ``write`` per message, the
way the agent does, and exits once every call is answered.

    python bench/bare_log_sender.py TARGET --streams K --lines N
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import grpc.aio

from berth.proto import agent_pb2_grpc, common_pb2

STAMP = "2026-12-05T00:00:00.000000000Z"


async def send(stub: agent_pb2_grpc.AgentStub, lines: int) -> None:
    call = stub.ContainerLogStream()
    for number in range(1, lines + 1):
        await call.write(common_pb2.ContainerLogMessage(log=f"{STAMP} {number}\n"))
    await call.done_writing()
    await call


async def main(target: str, streams: int, lines: int) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        await channel.channel_ready()
        stub = agent_pb2_grpc.AgentStub(channel)
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        await asyncio.gather(*(send(stub, lines) for _ in range(streams)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("target")
    parser.add_argument("--streams", type=int, required=True)
    parser.add_argument("--lines", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(main(args.target, args.streams, args.lines))
