"""Live agent sessions: one ``AgentConnection`` per connected node.

A connection owns the buffered command stream of its ``Connect`` call, the pending callbacks
(keyed by command kind and K(id), §5), and the feeds that relay the agent's client streams
(container states per prefix, live logs per container) to any number of viewers.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import structlog

from berth.platform.tokens import IssuedToken
from berth.proto import agent_pb2

log = structlog.get_logger(__name__)

VIEWER_QUEUE_SIZE: Final = 1000
COMMAND_QUEUE_SIZE: Final = 10_000

ConnectionStatus = Literal["installing", "connected", "updating"]


def container_key(prefix: str, name: str) -> str:
    """K(id): ``name`` without a prefix, else ``prefix-name`` (§ conventions)."""
    return f"{prefix}-{name}" if prefix else name


def prefix_key(prefix: str) -> str:
    return f"{prefix}-"


class Viewer:
    """One subscriber's bounded queue; when it overflows the oldest item is dropped and counted."""

    def __init__(self, size: int = VIEWER_QUEUE_SIZE) -> None:
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(size)
        self.dropped = 0

    def push(self, item: dict[str, Any] | None) -> None:
        while True:
            try:
                self.queue.put_nowait(item)
                return
            except asyncio.QueueFull:
                self.queue.get_nowait()
                self.dropped += 1


class Feed:
    """Relays one agent client stream to viewers. ``stop`` asks the gRPC handler to complete the
    call (the platform's only way to end it); ``ended`` is set when the call is over."""

    def __init__(self) -> None:
        self.viewers: set[Viewer] = set()
        self.attached = asyncio.Event()
        self.stop = asyncio.Event()
        self.ended = asyncio.Event()
        self.changed = asyncio.Event()

    def subscribe(self) -> Viewer:
        viewer = Viewer()
        self.viewers.add(viewer)
        return viewer

    def unsubscribe(self, viewer: Viewer) -> bool:
        """Returns True when the last viewer left."""
        self.viewers.discard(viewer)
        return not self.viewers

    def publish(self, item: dict[str, Any]) -> None:
        self.changed.set()
        for viewer in list(self.viewers):
            viewer.push(item)

    def end(self) -> None:
        self.stop.set()
        self.ended.set()
        self.changed.set()
        for viewer in list(self.viewers):
            viewer.push(None)


class StateFeed(Feed):
    """Container states of one prefix, merged by K(id) as the platform does (§7)."""

    def __init__(self, prefix: str, one_shot: bool) -> None:
        super().__init__()
        self.prefix = prefix
        self.one_shot = one_shot
        self.items: dict[str, dict[str, Any]] = {}
        self.first_list = asyncio.Event()

    def apply(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for item in items:
            key = container_key(item["id"]["prefix"], item["id"]["name"])
            if item["state"] == "removed":
                self.items.pop(key, None)
            else:
                self.items[key] = item
        self.first_list.set()
        self.publish({"type": "containers", "items": items})
        return items

    def snapshot(self) -> list[dict[str, Any]]:
        return sorted(self.items.values(), key=lambda i: container_key(i["id"]["prefix"], i["id"]["name"]))


class LogFeed(Feed):
    def __init__(self, prefix: str, name: str, tail: int) -> None:
        super().__init__()
        self.prefix = prefix
        self.name = name
        self.tail = tail


@dataclass
class PendingUpdate:
    token: IssuedToken
    deadline: float


@dataclass
class AgentConnection:
    node_id: str
    token: str
    nonce: str
    status: ConnectionStatus
    version: str
    public_key: str
    address: str
    outdated: bool = False
    pending_token: IssuedToken | None = None
    pending_update: PendingUpdate | None = None
    connected_at: float = field(default_factory=time.time)
    commands: asyncio.Queue[agent_pb2.AgentCommand | None] = field(
        default_factory=lambda: asyncio.Queue(COMMAND_QUEUE_SIZE)
    )
    closing: bool = False
    state_feeds: dict[str, StateFeed] = field(default_factory=dict)
    log_feeds: dict[str, LogFeed] = field(default_factory=dict)
    callbacks: dict[tuple[str, str], asyncio.Future[Any]] = field(default_factory=dict)

    def send(self, command: agent_pb2.AgentCommand) -> None:
        """Queues a command; commands queued before the agent reads are delivered first (§3.7)."""
        if self.closing:
            return
        self.commands.put_nowait(command)

    def close(self, reason: agent_pb2.CloseReason.ValueType | None = None) -> None:
        """Sends ``close{reason}`` (when given) and completes the command stream right after."""
        if self.closing:
            return
        if reason is not None:
            self.commands.put_nowait(
                agent_pb2.AgentCommand(close=agent_pb2.CloseConnectionRequest(reason=reason))
            )
        self.closing = True
        self.commands.put_nowait(None)

    def updating(self) -> bool:
        if self.status == "installing":
            return True
        if self.pending_update is not None:
            if time.time() <= self.pending_update.deadline:
                return True
            self.pending_update = None
        return False

    def accepts(self, nonce: str) -> bool:
        # After an update's TokenReplaced the old agent already signs with the new token (§3.2),
        # including the AbortUpdate that may follow, so the pending update's nonce is live too.
        return (
            nonce == self.nonce
            or (self.pending_token is not None and nonce == self.pending_token.nonce)
            or (self.pending_update is not None and nonce == self.pending_update.token.nonce)
        )

    def tear_down(self) -> None:
        """The Connect call ended: end every feed and cancel pending callbacks (§3.9)."""
        for state_feed in list(self.state_feeds.values()):
            state_feed.end()
        self.state_feeds.clear()
        for log_feed in list(self.log_feeds.values()):
            log_feed.end()
        self.log_feeds.clear()
        for future in self.callbacks.values():
            if not future.done():
                future.cancel()
        self.callbacks.clear()


class ConnectionRegistry:
    def __init__(self) -> None:
        self._by_node: dict[str, AgentConnection] = {}

    def get(self, node_id: str) -> AgentConnection | None:
        return self._by_node.get(node_id)

    def register(self, connection: AgentConnection) -> None:
        self._by_node[connection.node_id] = connection

    def unregister(self, connection: AgentConnection) -> bool:
        if self._by_node.get(connection.node_id) is connection:
            del self._by_node[connection.node_id]
            return True
        return False

    def all(self) -> list[AgentConnection]:
        return list(self._by_node.values())
