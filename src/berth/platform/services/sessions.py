"""Agent sessions: accepting an agent's ``Connect`` (§3.7), the token lifecycle (§4), the per-node
command queues, and callbacks, the commands whose answer comes back on another call (§5).

Nothing here knows gRPC: a refusal names its status code, the shell turns it into one.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

import structlog

from berth.platform.config import PLATFORM_VERSION, PlatformConfig
from berth.platform.models import NodeRecord
from berth.platform.problems import AgentFailed, AgentTimedOut, NodeBusy, NodeNotConnected, UnknownEntity
from berth.platform.services.connections import AgentConnection, ConnectionRegistry
from berth.platform.store import Store
from berth.platform.tokens import Claims, IssuedToken, TokenIssuer
from berth.proto import agent_pb2, common_pb2

log = structlog.get_logger(__name__)

MIN_AGENT_VERSION: Final = (0, 15, 4)
NOT_FOUND_STATUS: Final = 5  # the gRPC status an agent's CommandError carries for "not found"
_SEMVER = re.compile(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?")

RefusalCode = Literal[
    "UNAUTHENTICATED", "NOT_FOUND", "FAILED_PRECONDITION", "ALREADY_EXISTS", "INVALID_ARGUMENT"
]
DisconnectHook = Callable[[str], Awaitable[None]]
UpdateHook = Callable[[str, bool, str], Awaitable[None]]


class Refusal(Exception):
    """The agent's ``Connect`` is refused with this status (§3.7's table)."""

    def __init__(self, code: RefusalCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ConnectionLost(Exception):
    """The node disconnected while a callback was pending."""


@dataclass(frozen=True)
class CallbackFailure(Exception):
    status: int
    error: str


def coerce_version(raw: str) -> tuple[int, int, int] | None:
    match = _SEMVER.search(raw)
    if not match:
        return None
    return (int(match.group(1)), int(match.group(2) or 0), int(match.group(3) or 0))


def is_outdated(version: str) -> bool:
    """§3.5: the string must contain ``-`` and coerce into [0.15.4, platform version]."""
    coerced = coerce_version(version)
    platform = coerce_version(PLATFORM_VERSION)
    return (
        "-" not in version
        or coerced is None
        or platform is None
        or not MIN_AGENT_VERSION <= coerced <= platform
    )


class AgentSessions:
    def __init__(self, config: PlatformConfig, store: Store, issuer: TokenIssuer) -> None:
        self.config = config
        self.issuer = issuer
        self.connections = ConnectionRegistry()
        self._store = store
        self._accept_lock = asyncio.Lock()
        self._disconnect_hooks: list[DisconnectHook] = []
        self._connect_hooks: list[DisconnectHook] = []
        self._update_hooks: list[UpdateHook] = []

    def on_disconnect(self, hook: DisconnectHook) -> None:
        self._disconnect_hooks.append(hook)

    def on_connect(self, hook: DisconnectHook) -> None:
        self._connect_hooks.append(hook)

    def on_update_result(self, hook: UpdateHook) -> None:
        """``hook(node_id, succeeded, version or error)`` when an agent update ends."""
        self._update_hooks.append(hook)

    # -- acceptance ----------------------------------------------------------------------------

    async def accept(
        self, claims: Claims, token: str, info: agent_pb2.AgentInfo, address: str
    ) -> AgentConnection:
        async with self._accept_lock:
            if claims.type == "install":
                connection = await self._accept_install(claims, token, info, address)
            elif claims.type == "connection":
                existing = self.connections.get(claims.sub)
                if existing is not None:
                    connection = await self._accept_update(existing, claims, token, info, address)
                else:
                    connection = await self._accept_default(claims, token, info, address)
            else:
                raise Refusal("UNAUTHENTICATED", "Invalid token type")
        if connection.status == "connected":
            for hook in self._connect_hooks:
                await hook(connection.node_id)
        return connection

    async def _known_node(self, node_id: str) -> NodeRecord:
        node = await self._store.nodes.get(node_id)
        if node is None:
            raise Refusal("NOT_FOUND", "Node not found")
        return node

    async def _accept_install(
        self, claims: Claims, token: str, info: agent_pb2.AgentInfo, address: str
    ) -> AgentConnection:
        node = await self._known_node(claims.sub)
        installer = node.installer
        if node.nonce is not None or installer is None:
            raise Refusal("UNAUTHENTICATED", "No installer for the node (token consumed or revoked)")
        if installer.token != token:
            raise Refusal("UNAUTHENTICATED", "Install token mismatch")
        if installer.expires_at < time.time():
            raise Refusal("FAILED_PRECONDITION", "Install token expired")
        if self.connections.get(node.id) is not None:
            raise Refusal("ALREADY_EXISTS", "Node is already connected")
        node.installer = None  # consumed
        self._record_agent(node, info, address)
        await self._store.nodes.put(node)
        replacement = self.issuer.issue(node.id, "connection")
        connection = self._register(node.id, token, claims, info, address, replacement=replacement)
        connection.send(
            agent_pb2.AgentCommand(replaceToken=agent_pb2.ReplaceTokenRequest(token=replacement.token))
        )
        await self._store.events.add_node_event(
            node.id, "installed", {"address": address, "version": info.version}
        )
        log.info("agent_installing", node_id=node.id, address=address)
        return connection

    async def _accept_default(
        self, claims: Claims, token: str, info: agent_pb2.AgentInfo, address: str
    ) -> AgentConnection:
        node = await self._known_node(claims.sub)
        if node.nonce is None or node.nonce != claims.nonce:
            raise Refusal("UNAUTHENTICATED", "Token nonce mismatch")
        self._record_agent(node, info, address)
        await self._store.nodes.put(node)
        connection = self._register(node.id, token, claims, info, address)
        await self._store.events.add_node_event(
            node.id,
            "connected",
            {"address": address, "version": info.version, "containerName": info.containerName},
        )
        log.info("agent_connected", node_id=node.id, address=address, outdated=connection.outdated)
        return connection

    def _register(
        self,
        node_id: str,
        token: str,
        claims: Claims,
        info: agent_pb2.AgentInfo,
        address: str,
        *,
        replacement: IssuedToken | None = None,
    ) -> AgentConnection:
        """An installing agent (``replacement``: its connection token, sent at once) is never
        called outdated: it reconnects with that token right away and is judged then."""
        installing = replacement is not None
        connection = AgentConnection(
            node_id=node_id,
            token=token,
            nonce=claims.nonce,
            status="installing" if installing else "connected",
            version=info.version,
            public_key=info.publicKey,
            address=address,
            outdated=not installing and is_outdated(info.version),
            pending_token=replacement,
        )
        self.connections.register(connection)
        return connection

    async def _accept_update(
        self,
        existing: AgentConnection,
        claims: Claims,
        token: str,
        info: agent_pb2.AgentInfo,
        address: str,
    ) -> AgentConnection:
        pending = existing.pending_update
        if pending is None or pending.token.token != token:
            raise Refusal("ALREADY_EXISTS", "Node is already connected")
        if time.time() > pending.deadline:
            raise Refusal("FAILED_PRECONDITION", "Update window passed")
        node = await self._known_node(claims.sub)
        node.nonce = claims.nonce
        self._record_agent(node, info, address)
        await self._store.nodes.put(node)
        existing.pending_update = None
        existing.close(agent_pb2.SELF_DESTRUCT)
        self.connections.unregister(existing)
        existing.tear_down()
        connection = self._register(node.id, token, claims, info, address)
        await self._store.events.add_node_event(node.id, "updated", {"version": info.version})
        log.info("agent_updated", node_id=node.id)
        for update_hook in self._update_hooks:
            await update_hook(node.id, True, info.version)
        return connection

    @staticmethod
    def _record_agent(node: NodeRecord, info: agent_pb2.AgentInfo, address: str) -> None:
        node.public_key = info.publicKey
        node.version = info.version
        node.address = address
        node.container_name = info.containerName
        node.connected_at = time.time()

    async def disconnected(self, connection: AgentConnection) -> None:
        connection.tear_down()
        if not self.connections.unregister(connection):
            return
        log.info("agent_disconnected", node_id=connection.node_id)
        if await self._store.nodes.get(connection.node_id) is not None:
            await self._store.events.add_node_event(connection.node_id, "disconnected", {})
        for hook in self._disconnect_hooks:
            await hook(connection.node_id)

    async def token_replaced(self, connection: AgentConnection) -> None:
        node = await self._store.nodes.get(connection.node_id)
        if node is None:
            return
        if connection.pending_token is not None and connection.status == "installing":
            replacement = connection.pending_token
            node.nonce = replacement.nonce
            await self._store.nodes.put(node)
            connection.nonce = replacement.nonce
            connection.token = replacement.token
            connection.pending_token = None
            connection.status = "connected"
            await self._store.events.add_node_event(node.id, "connected", {"address": connection.address})
            log.info("agent_connected", node_id=node.id, address=connection.address, via="install")
            for hook in self._connect_hooks:
                await hook(node.id)
        elif connection.pending_update is not None:
            node.nonce = connection.pending_update.token.nonce
            await self._store.nodes.put(node)
            await self._store.events.add_node_event(node.id, "update_token_replaced", {})

    async def abort_update(self, connection: AgentConnection, error: str) -> None:
        connection.pending_update = None
        log.info("agent_update_aborted", node_id=connection.node_id)
        await self._store.events.add_node_event(connection.node_id, "update_aborted", {"error": error[:2000]})
        for hook in self._update_hooks:
            await hook(connection.node_id, False, error)

    def connection_for_answer(self, claims: Claims) -> AgentConnection | None:
        connection = self.connections.get(claims.sub)
        if connection is None or not connection.accepts(claims.nonce):
            return None
        return connection

    def close_all(self) -> None:
        for connection in self.connections.all():
            connection.close()

    # -- commands and callbacks ------------------------------------------------------------------

    async def ready_connection(self, node_id: str) -> AgentConnection:
        """The node's session if user commands may go to it now (404, 409, 412 otherwise)."""
        if await self._store.nodes.get(node_id) is None:
            raise UnknownEntity(f"Node {node_id} not found")
        connection = self.connections.get(node_id)
        if connection is None or connection.closing:
            raise NodeNotConnected("The node is not connected")
        if connection.updating():
            raise NodeBusy("The node is updating")
        if connection.outdated:
            raise NodeBusy("The node's agent is outdated; update it first")
        return connection

    async def callback(
        self, connection: AgentConnection, kind: str, key: str, command: agent_pb2.AgentCommand
    ) -> Any:
        """Sends ``command`` (unless the same callback is already pending) and waits for its answer."""
        slot = (kind, key)
        future = connection.callbacks.get(slot)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            future.add_done_callback(lambda f: None if f.cancelled() else f.exception())
            connection.callbacks[slot] = future
            connection.send(command)
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.config.callback_timeout_s)
        except TimeoutError:
            raise AgentTimedOut("Agent callback request timed out") from None
        except (ConnectionLost, asyncio.CancelledError) as err:
            if isinstance(err, asyncio.CancelledError) and not future.cancelled():
                raise
            raise NodeNotConnected("The node disconnected before answering") from None
        except CallbackFailure as failure:
            if failure.status == NOT_FOUND_STATUS:
                raise UnknownEntity(failure.error or "Container not found") from None
            raise AgentFailed(failure.error or "The agent failed") from None
        finally:
            if connection.callbacks.get(slot) is future:
                if not future.done():
                    future.set_exception(ConnectionLost())
                del connection.callbacks[slot]

    @staticmethod
    def resolve(connection: AgentConnection, kind: str, key: str, outcome: Any) -> bool:
        future = connection.callbacks.pop((kind, key), None)
        if future is None or future.done():
            return False
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
        return True


def state_item_to_dict(item: common_pb2.ContainerStateItem) -> dict[str, Any]:
    name = common_pb2.ContainerState.Name(item.state)
    return {
        "id": {"prefix": item.id.prefix, "name": item.id.name},
        "command": item.command,
        "createdAt": item.createdAt.seconds if item.HasField("createdAt") else None,
        "state": "unspecified" if name == "CONTAINER_STATE_UNSPECIFIED" else name.lower(),
        "reason": item.reason,
        "status": item.status,
        "imageName": item.imageName,
        "imageTag": item.imageTag,
        "ports": [{"internal": p.internal, "external": p.external} for p in item.ports],
        "labels": dict(item.labels),
    }
