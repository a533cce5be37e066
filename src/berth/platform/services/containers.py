"""A node's containers, through its agent: states (one-shot list or live feed), logs (a tail or a
live feed), start / stop / restart, delete one or a whole prefix, inspect, secret keys."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any, Final, Literal

from berth.platform.problems import AgentTimedOut, InvalidInput
from berth.platform.services.connections import (
    AgentConnection,
    LogFeed,
    StateFeed,
    Viewer,
    container_key,
    prefix_key,
)
from berth.platform.services.sessions import AgentSessions
from berth.proto import agent_pb2, common_pb2

# Docker's own rule for container names; a prefix is the same or empty.
_CONTAINER_PART: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
MAX_TAIL: Final = 10_000
Operation = Literal["start", "stop", "restart"]
OPERATIONS: Final = {
    "start": common_pb2.START_CONTAINER,
    "stop": common_pb2.STOP_CONTAINER,
    "restart": common_pb2.RESTART_CONTAINER,
}


def check_target(prefix: str, name: str | None = None) -> None:
    if prefix and not _CONTAINER_PART.match(prefix):
        raise InvalidInput("prefix", "must be 1-128 of [A-Za-z0-9_.-], starting with a letter or digit")
    if name is not None and not _CONTAINER_PART.match(name):
        raise InvalidInput("name", "must be 1-128 of [A-Za-z0-9_.-], starting with a letter or digit")


def _identifier(prefix: str, name: str) -> common_pb2.ContainerIdentifier:
    return common_pb2.ContainerIdentifier(prefix=prefix, name=name)


class ContainerService:
    def __init__(self, sessions: AgentSessions, callback_timeout_s: float) -> None:
        self._sessions = sessions
        self._timeout_s = callback_timeout_s

    async def _wait(self, event: asyncio.Event, message: str) -> None:
        try:
            await asyncio.wait_for(event.wait(), self._timeout_s)
        except TimeoutError:
            raise AgentTimedOut(message) from None

    @staticmethod
    def _request_states(connection: AgentConnection, prefix: str, *, one_shot: bool) -> StateFeed:
        feed = StateFeed(prefix, one_shot=one_shot)
        connection.state_feeds[prefix] = feed
        connection.send(
            agent_pb2.AgentCommand(
                containerState=agent_pb2.ContainerStateRequest(prefix=prefix, oneShot=one_shot)
            )
        )
        return feed

    async def list_states(self, node_id: str, prefix: str) -> list[dict[str, Any]]:
        check_target(prefix)
        connection = await self._sessions.ready_connection(node_id)
        feed = connection.state_feeds.get(prefix)
        if feed is not None and not feed.one_shot:
            await self._wait(feed.first_list, "Agent did not send the container list")
            return feed.snapshot()
        if feed is None:
            feed = self._request_states(connection, prefix, one_shot=True)
        deadline = time.monotonic() + self._timeout_s
        try:
            while not feed.ended.is_set() and not feed.items:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                feed.changed.clear()
                try:
                    async with asyncio.timeout(remaining):  # not wait_for: it can lose a cancel
                        await feed.changed.wait()
                except TimeoutError:
                    break
        finally:
            if not feed.attached.is_set() and connection.state_feeds.get(prefix) is feed:
                del connection.state_feeds[prefix]
        if not feed.first_list.is_set():
            raise AgentTimedOut("Agent callback request timed out")
        return feed.snapshot()

    async def watch_states(self, node_id: str, prefix: str) -> tuple[AgentConnection, StateFeed, Viewer]:
        check_target(prefix)
        connection = await self._sessions.ready_connection(node_id)
        feed = connection.state_feeds.get(prefix)
        if feed is not None and feed.one_shot:
            await self._wait(feed.ended, "Agent did not finish the container list")
            feed = None
        if feed is None:
            feed = self._request_states(connection, prefix, one_shot=False)
        viewer = feed.subscribe()
        if feed.first_list.is_set():
            viewer.push({"type": "containers", "items": feed.snapshot()})
        return connection, feed, viewer

    @staticmethod
    def unwatch_states(connection: AgentConnection, feed: StateFeed, viewer: Viewer) -> None:
        if feed.unsubscribe(viewer):
            feed.stop.set()
            if connection.state_feeds.get(feed.prefix) is feed:
                del connection.state_feeds[feed.prefix]

    async def watch_logs(
        self, node_id: str, prefix: str, name: str, tail: int
    ) -> tuple[AgentConnection, LogFeed, Viewer]:
        check_target(prefix, name)
        if not 0 <= tail <= MAX_TAIL:
            raise InvalidInput("tail", f"must be an integer 0..{MAX_TAIL}")
        connection = await self._sessions.ready_connection(node_id)
        key = container_key(prefix, name)
        feed = connection.log_feeds.get(key)
        if feed is None:
            feed = LogFeed(prefix, name, tail)
            connection.log_feeds[key] = feed
            connection.send(
                agent_pb2.AgentCommand(
                    containerLog=agent_pb2.ContainerLogRequest(
                        container=_identifier(prefix, name), streaming=True, tail=tail
                    )
                )
            )
        return connection, feed, feed.subscribe()

    @staticmethod
    def unwatch_logs(connection: AgentConnection, feed: LogFeed, viewer: Viewer) -> None:
        if feed.unsubscribe(viewer):
            feed.stop.set()
            key = container_key(feed.prefix, feed.name)
            if connection.log_feeds.get(key) is feed:
                del connection.log_feeds[key]

    async def command(self, node_id: str, prefix: str, name: str, operation: Operation) -> None:
        check_target(prefix, name)
        connection = await self._sessions.ready_connection(node_id)
        connection.send(
            agent_pb2.AgentCommand(
                containerCommand=common_pb2.ContainerCommandRequest(
                    container=_identifier(prefix, name), operation=OPERATIONS[operation]
                )
            )
        )

    async def delete(self, node_id: str, prefix: str, name: str) -> None:
        check_target(prefix, name)
        connection = await self._sessions.ready_connection(node_id)
        target = common_pb2.ContainerOrPrefix(container=_identifier(prefix, name))
        command = agent_pb2.AgentCommand(deleteContainers=common_pb2.DeleteContainersRequest(target=target))
        await self._sessions.callback(connection, "deleteContainers", container_key(prefix, name), command)

    async def delete_prefix(self, node_id: str, prefix: str) -> None:
        check_target(prefix)
        if not prefix:
            raise InvalidInput("prefix", "must not be empty")
        connection = await self._sessions.ready_connection(node_id)
        target = common_pb2.ContainerOrPrefix(prefix=prefix)
        command = agent_pb2.AgentCommand(deleteContainers=common_pb2.DeleteContainersRequest(target=target))
        await self._sessions.callback(connection, "deleteContainers", prefix_key(prefix), command)

    async def inspect(self, node_id: str, prefix: str, name: str) -> Any:
        check_target(prefix, name)
        connection = await self._sessions.ready_connection(node_id)
        command = agent_pb2.AgentCommand(
            containerInspect=agent_pb2.ContainerInspectRequest(container=_identifier(prefix, name))
        )
        data = await self._sessions.callback(
            connection, "containerInspect", container_key(prefix, name), command
        )
        try:
            return json.loads(data)
        except ValueError:
            return data

    async def logs(self, node_id: str, prefix: str, name: str, take: int) -> list[str]:
        check_target(prefix, name)
        connection = await self._sessions.ready_connection(node_id)
        command = agent_pb2.AgentCommand(
            containerLog=agent_pb2.ContainerLogRequest(
                container=_identifier(prefix, name), streaming=False, tail=take
            )
        )
        lines = await self._sessions.callback(
            connection, "containerLog", container_key(prefix, name), command
        )
        return list(lines)

    async def secrets(self, node_id: str, prefix: str, name: str) -> dict[str, Any]:
        check_target(prefix, name)
        connection = await self._sessions.ready_connection(node_id)
        target = common_pb2.ContainerOrPrefix(container=_identifier(prefix, name))
        command = agent_pb2.AgentCommand(listSecrets=agent_pb2.ListSecretsRequest(target=target))
        result: dict[str, Any] = await self._sessions.callback(
            connection, "listSecrets", container_key(prefix, name), command
        )
        return result
