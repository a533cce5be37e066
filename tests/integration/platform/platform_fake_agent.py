"""A minimal agent for the platform's tests: a real gRPC client on 127.0.0.1 speaking the protocol."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc
import pysequoia

from berth.proto import agent_pb2, agent_pb2_grpc, common_pb2


def make_key() -> pysequoia.Tsk:
    return pysequoia.Tsk.generate(
        "berth test <test@berth>",
        profile=pysequoia.Profile.RFC4880,
        cipher_suite=pysequoia.CipherSuite.Cv25519,
    )


class FakeAgent:
    def __init__(
        self,
        address: str,
        token: str,
        node_id: str,
        *,
        key: pysequoia.Tsk | None = None,
        ca_pem: bytes | None = None,
        version: str = "0.15.4-berth.test",
    ) -> None:
        if ca_pem is not None:
            self.channel = grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(ca_pem))
        else:
            self.channel = grpc.aio.insecure_channel(address)
        self.stub = agent_pb2_grpc.AgentStub(self.channel)
        self.token = token
        self.node_id = node_id
        self.key = key or make_key()
        self.public_key = str(self.key.extract_certificate())
        self.version = version
        self.call: grpc.aio.UnaryStreamCall[agent_pb2.AgentInfo, agent_pb2.AgentCommand] | None = None

    def metadata(self, **extra: str) -> list[tuple[str, str]]:
        pairs = [("dyo-node-token", self.token)]
        pairs.extend((k.replace("_", "-"), v) for k, v in extra.items())
        return pairs

    async def connect(self) -> None:
        info = agent_pb2.AgentInfo(
            id=self.node_id, version=self.version, publicKey=self.public_key, containerName="/fake"
        )
        self.call = self.stub.Connect(info, metadata=self.metadata())
        await self.call.wait_for_connection()

    async def next_command(self, wait_s: float = 5.0) -> agent_pb2.AgentCommand:
        assert self.call is not None
        message = await asyncio.wait_for(self.call.read(), wait_s)
        assert message is not grpc.aio.EOF, "the command stream ended"
        return message  # type: ignore[return-value]

    async def stream_ended(self, wait_s: float = 5.0) -> bool:
        assert self.call is not None
        message = await asyncio.wait_for(self.call.read(), wait_s)
        return message is grpc.aio.EOF

    async def refusal(self) -> grpc.StatusCode:
        """Connects and returns the status the platform refused with."""
        try:
            await self.connect()
            assert self.call is not None
            await asyncio.wait_for(self.call.read(), 5.0)
        except grpc.aio.AioRpcError as err:
            return err.code()
        raise AssertionError("the platform accepted the connection")

    async def install(self) -> str:
        """Runs the install handshake and switches to the connection token; returns it."""
        await self.connect()
        command = await self.next_command()
        assert command.WhichOneof("command") == "replaceToken"
        new_token = command.replaceToken.token
        await self.stub.TokenReplaced(common_pb2.Empty(), metadata=self.metadata())
        self.token = new_token
        return new_token

    def decrypt(self, armored: str) -> str:
        return bytes(pysequoia.decrypt(armored.encode(), self.key.decryptor()).bytes).decode()

    async def stream_until_completed(
        self, call: Any, first: list[Any], more: asyncio.Queue[Any] | None
    ) -> None:
        """Writes ``first``, then whatever ``more`` yields, until the platform completes the call
        (or half-closes after ``first`` when ``more`` is None)."""
        for message in first:
            await call.write(message)
        if more is None:
            await call.done_writing()
            await call
            return
        completed = asyncio.ensure_future(call)
        try:
            while not completed.done():
                getter = asyncio.ensure_future(more.get())
                try:
                    await asyncio.wait([getter, completed], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if not getter.done():
                        getter.cancel()
                        await asyncio.gather(getter, return_exceptions=True)
                if not getter.cancelled() and not completed.done():
                    await call.write(getter.result())
        finally:
            if not completed.done():
                call.cancel()
            await asyncio.gather(completed, return_exceptions=True)

    async def send_deploy_status(
        self, deployment_id: str, messages: Iterable[common_pb2.DeploymentStatusMessage]
    ) -> None:
        async def stream() -> AsyncIterator[common_pb2.DeploymentStatusMessage]:
            for message in messages:
                yield message

        await self.stub.DeploymentStatus(stream(), metadata=self.metadata(dyo_deployment_id=deployment_id))

    async def close(self) -> None:
        if self.call is not None:
            self.call.cancel()
        await self.channel.close()

    async def __aenter__(self) -> FakeAgent:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()


def state_item(prefix: str, name: str, state: int = common_pb2.RUNNING) -> common_pb2.ContainerStateItem:
    return common_pb2.ContainerStateItem(
        id=common_pb2.ContainerIdentifier(prefix=prefix, name=name),
        state=state,
        reason="running" if state == common_pb2.RUNNING else "exited",
        imageName="127.0.0.1:5000/berth/busybox",
        imageTag="1",
    )
