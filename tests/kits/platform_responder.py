"""Answers the platform's commands the way an agent would, from a fixed set of containers."""

from __future__ import annotations

import asyncio
import json

from berth.proto import agent_pb2, common_pb2
from kits.platform_fake_agent import FakeAgent, state_item


class Responder:
    """Runs next to a connected ``FakeAgent``; records what it saw."""

    def __init__(self, agent: FakeAgent, prefix: str, names: list[str]) -> None:
        self.agent = agent
        self.prefix = prefix
        self.names = names
        self.seen: list[agent_pb2.AgentCommand] = []
        self.state_messages: asyncio.Queue[common_pb2.ContainerStateListMessage] = asyncio.Queue()
        self.log_lines: asyncio.Queue[common_pb2.ContainerLogMessage] = asyncio.Queue()
        self.stream_done = asyncio.Event()
        self.deploys: asyncio.Queue[agent_pb2.DeployRequest] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Responder:
        self._loop = asyncio.create_task(self._run(), name="fake-agent-responder")
        return self

    async def __aexit__(self, *exc: object) -> None:
        tasks = [t for t in (self._loop, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, coro: object, name: str) -> None:
        task = asyncio.create_task(coro, name=name)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self) -> None:
        while True:
            command = await self.agent.next_command(wait_s=3600)
            self.seen.append(command)
            kind = command.WhichOneof("command")
            if kind == "containerState":
                self._spawn(self._states(command.containerState), "fake-states")
            elif kind == "containerInspect":
                self._spawn(self._inspect(command.containerInspect.container), "fake-inspect")
            elif kind == "containerLog":
                self._spawn(self._log(command.containerLog), "fake-log")
            elif kind == "deleteContainers":
                self._spawn(self._delete(command.deleteContainers.target), "fake-delete")
            elif kind == "deploy":
                self.deploys.put_nowait(command.deploy)

    def _meta(self, prefix: str, name: str) -> list[tuple[str, str]]:
        return self.agent.metadata(dyo_container_prefix=prefix, dyo_container_name=name)

    async def _states(self, request: agent_pb2.ContainerStateRequest) -> None:
        initial = common_pb2.ContainerStateListMessage(
            prefix=request.prefix, data=[state_item(request.prefix, n) for n in self.names]
        )
        call = self.agent.stub.ContainerState(metadata=self.agent.metadata(dyo_filter_prefix=request.prefix))
        updates: asyncio.Queue[common_pb2.ContainerStateListMessage] | None = None
        if not request.oneShot:
            updates = self.state_messages
        await self.agent.stream_until_completed(call, [initial], updates)
        self.stream_done.set()

    async def _inspect(self, container: common_pb2.ContainerIdentifier) -> None:
        meta = self._meta(container.prefix, container.name)
        if container.name == "slow":
            return
        if container.name not in self.names:
            error = agent_pb2.AgentError(status=5, error="container not found")
            await self.agent.stub.CommandError(
                agent_pb2.AgentCommandError(containerInspect=error), metadata=meta
            )
            return
        data = json.dumps({"Name": f"/{container.prefix}-{container.name}", "State": {"Running": True}})
        await self.agent.stub.ContainerInspect(common_pb2.ContainerInspectResponse(data=data), metadata=meta)

    async def _log(self, request: agent_pb2.ContainerLogRequest) -> None:
        meta = self._meta(request.container.prefix, request.container.name)
        if not request.streaming:
            lines = [f"line {i}\n" for i in range(request.tail)]
            await self.agent.stub.ContainerLog(common_pb2.ContainerLogListResponse(logs=lines), metadata=meta)
            return

        call = self.agent.stub.ContainerLogStream(metadata=meta)
        await self.agent.stream_until_completed(call, [], self.log_lines)
        self.stream_done.set()

    async def _delete(self, target: common_pb2.ContainerOrPrefix) -> None:
        if target.WhichOneof("target") == "prefix":
            meta = self._meta(target.prefix, "")
        else:
            meta = self._meta(target.container.prefix, target.container.name)
            if target.container.name == "broken":
                error = agent_pb2.AgentError(status=13, error="engine said no")
                await self.agent.stub.CommandError(
                    agent_pb2.AgentCommandError(deleteContainers=error), metadata=meta
                )
                return
        await self.agent.stub.DeleteContainers(common_pb2.Empty(), metadata=meta)
