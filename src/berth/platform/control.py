"""The control plane's node side: accepting agents (§3.7), token lifecycle (§4), callbacks and
container operations (§5, §7 to §12), agent update and kick (§13).

gRPC handlers and HTTP routes are thin shells over this class.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any, Final

import grpc
import structlog

from berth.platform.config import PLATFORM_VERSION, PlatformConfig
from berth.platform.connections import (
    AgentConnection,
    ConnectionRegistry,
    LogFeed,
    PendingUpdate,
    StateFeed,
    Viewer,
    container_key,
    prefix_key,
)
from berth.platform.install_scripts import InstallScripts
from berth.platform.problems import (
    AgentFailed,
    AgentTimedOut,
    Conflict,
    InvalidInput,
    NodeBusy,
    NodeNotConnected,
    UnknownEntity,
)
from berth.platform.records import Installer, NodeRecord
from berth.platform.store import Store
from berth.platform.tokens import Claims, TokenIssuer
from berth.proto import agent_pb2, common_pb2

log = structlog.get_logger(__name__)

MIN_AGENT_VERSION: Final = (0, 15, 4)
NODE_TYPES: Final = ("docker", "k8s")
SCRIPT_TYPES: Final = ("shell", "powershell", "systemd")
_SEMVER = re.compile(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?")
_RFC1123 = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class Refusal(Exception):
    """The agent's ``Connect`` is refused with this gRPC status (§3.7's table)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
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


def valid_label(value: str) -> bool:
    return bool(_RFC1123.match(value))


def _state_name(value: int) -> str:
    name = common_pb2.ContainerState.Name(value)  # type: ignore[arg-type]
    return "unspecified" if name == "CONTAINER_STATE_UNSPECIFIED" else name.lower()


def state_item_to_dict(item: common_pb2.ContainerStateItem) -> dict[str, Any]:
    return {
        "id": {"prefix": item.id.prefix, "name": item.id.name},
        "command": item.command,
        "createdAt": item.createdAt.seconds if item.HasField("createdAt") else None,
        "state": _state_name(item.state),
        "reason": item.reason,
        "status": item.status,
        "imageName": item.imageName,
        "imageTag": item.imageTag,
        "ports": [{"internal": p.internal, "external": p.external} for p in item.ports],
        "labels": dict(item.labels),
    }


class ControlPlane:
    def __init__(
        self,
        config: PlatformConfig,
        store: Store,
        issuer: TokenIssuer,
        scripts: InstallScripts,
    ) -> None:
        self.config = config
        self.store = store
        self.issuer = issuer
        self.scripts = scripts
        self.connections = ConnectionRegistry()
        self._accept_lock = asyncio.Lock()
        self.on_disconnect: list[Any] = []  # async callables(node_id)

    # -- acceptance (§3.7) ---------------------------------------------------------------------

    async def accept(
        self, claims: Claims, token: str, info: agent_pb2.AgentInfo, address: str
    ) -> AgentConnection:
        async with self._accept_lock:
            if claims.type == "install":
                return await self._accept_install(claims, token, info, address)
            if claims.type == "connection":
                existing = self.connections.get(claims.sub)
                if existing is not None:
                    return await self._accept_update(existing, claims, token, info, address)
                return await self._accept_default(claims, token, info, address)
            raise Refusal(grpc.StatusCode.UNAUTHENTICATED, "Invalid token type")

    async def _known_node(self, node_id: str) -> NodeRecord:
        node = await self.store.get_node(node_id)
        if node is None:
            raise Refusal(grpc.StatusCode.NOT_FOUND, "Node not found")
        return node

    async def _accept_install(
        self, claims: Claims, token: str, info: agent_pb2.AgentInfo, address: str
    ) -> AgentConnection:
        node = await self._known_node(claims.sub)
        installer = node.get_installer()
        if node.nonce is not None or installer is None:
            raise Refusal(
                grpc.StatusCode.UNAUTHENTICATED, "No installer for the node (token consumed or revoked)"
            )
        if installer.token != token:
            raise Refusal(grpc.StatusCode.UNAUTHENTICATED, "Install token mismatch")
        if installer.expires_at < time.time():
            raise Refusal(grpc.StatusCode.FAILED_PRECONDITION, "Install token expired")
        if self.connections.get(node.id) is not None:
            raise Refusal(grpc.StatusCode.ALREADY_EXISTS, "Node is already connected")
        node.installer = None  # consumed
        self._record_agent(node, info, address)
        await self.store.put_node(node)
        replacement = self.issuer.issue(node.id, "connection")
        connection = AgentConnection(
            node_id=node.id,
            token=token,
            nonce=claims.nonce,
            status="installing",
            version=info.version,
            public_key=info.publicKey,
            address=address,
            pending_token=replacement,
        )
        self.connections.register(connection)
        connection.send(
            agent_pb2.AgentCommand(replaceToken=agent_pb2.ReplaceTokenRequest(token=replacement.token))
        )
        await self.store.add_node_event(node.id, "installed", {"address": address, "version": info.version})
        log.info("agent_installing", node_id=node.id, address=address)
        return connection

    async def _accept_default(
        self, claims: Claims, token: str, info: agent_pb2.AgentInfo, address: str
    ) -> AgentConnection:
        node = await self._known_node(claims.sub)
        if node.nonce is None or node.nonce != claims.nonce:
            raise Refusal(grpc.StatusCode.UNAUTHENTICATED, "Token nonce mismatch")
        self._record_agent(node, info, address)
        await self.store.put_node(node)
        connection = self._register(node.id, token, claims, info, address)
        await self.store.add_node_event(
            node.id,
            "connected",
            {"address": address, "version": info.version, "containerName": info.containerName},
        )
        log.info("agent_connected", node_id=node.id, address=address, outdated=connection.outdated)
        return connection

    def _register(
        self, node_id: str, token: str, claims: Claims, info: agent_pb2.AgentInfo, address: str
    ) -> AgentConnection:
        connection = AgentConnection(
            node_id=node_id,
            token=token,
            nonce=claims.nonce,
            status="connected",
            version=info.version,
            public_key=info.publicKey,
            address=address,
            outdated=is_outdated(info.version),
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
            raise Refusal(grpc.StatusCode.ALREADY_EXISTS, "Node is already connected")
        if time.time() > pending.deadline:
            raise Refusal(grpc.StatusCode.FAILED_PRECONDITION, "Update window passed")
        node = await self._known_node(claims.sub)
        node.nonce = claims.nonce
        self._record_agent(node, info, address)
        await self.store.put_node(node)
        existing.pending_update = None
        existing.close(agent_pb2.SELF_DESTRUCT)
        self.connections.unregister(existing)
        existing.tear_down()
        connection = self._register(node.id, token, claims, info, address)
        await self.store.add_node_event(node.id, "updated", {"version": info.version})
        log.info("agent_updated", node_id=node.id)
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
        if await self.store.get_node(connection.node_id) is not None:
            await self.store.add_node_event(connection.node_id, "disconnected", {})
        for hook in self.on_disconnect:
            await hook(connection.node_id)

    async def token_replaced(self, connection: AgentConnection) -> None:
        node = await self.store.get_node(connection.node_id)
        if node is None:
            return
        if connection.pending_token is not None and connection.status == "installing":
            replacement = connection.pending_token
            node.nonce = replacement.nonce
            await self.store.put_node(node)
            connection.nonce = replacement.nonce
            connection.token = replacement.token
            connection.pending_token = None
            connection.status = "connected"
            await self.store.add_node_event(node.id, "connected", {"address": connection.address})
            log.info("agent_connected", node_id=node.id, address=connection.address, via="install")
        elif connection.pending_update is not None:
            node.nonce = connection.pending_update.token.nonce
            await self.store.put_node(node)
            await self.store.add_node_event(node.id, "update_token_replaced", {})

    async def abort_update(self, connection: AgentConnection, error: str) -> None:
        connection.pending_update = None
        log.info("agent_update_aborted", node_id=connection.node_id)
        await self.store.add_node_event(connection.node_id, "update_aborted", {"error": error})

    def connection_for_answer(self, claims: Claims) -> AgentConnection | None:
        connection = self.connections.get(claims.sub)
        if connection is None or not connection.accepts(claims.nonce):
            return None
        return connection

    # -- callbacks (§5) ------------------------------------------------------------------------

    async def _callback(
        self, connection: AgentConnection, kind: str, key: str, command: agent_pb2.AgentCommand
    ) -> Any:
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
        except ConnectionLost:
            raise NodeNotConnected("The node disconnected before answering") from None
        except CallbackFailure as failure:
            if failure.status == grpc.StatusCode.NOT_FOUND.value[0]:
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

    # -- nodes -----------------------------------------------------------------------------------

    async def get_node(self, node_id: str) -> NodeRecord:
        node = await self.store.get_node(node_id)
        if node is None:
            raise UnknownEntity(f"Node {node_id} not found")
        return node

    def node_view(self, node: NodeRecord, *, detailed: bool = False) -> dict[str, Any]:
        connection = self.connections.get(node.id)
        if connection is None:
            status = "unreachable"
        elif connection.updating():
            status = "updating"
        elif connection.outdated:
            status = "outdated"
        else:
            status = "connected"
        view: dict[str, Any] = {
            "id": node.id,
            "name": node.name,
            "description": node.description,
            "icon": node.icon,
            "type": node.type,
            "status": status,
            "address": node.address if connection else "",
            "connectedAt": node.connected_at if connection else None,
            "version": node.version,
            "updating": connection is not None and connection.updating(),
            "outdated": connection is not None and connection.outdated,
        }
        if detailed:
            view["hasToken"] = node.nonce is not None
            view["containerName"] = node.container_name
            installer = node.get_installer()
            if installer is not None and installer.expires_at > time.time():
                view["install"] = self._install_view(node, installer)
            else:
                view["install"] = None
        return view

    def _install_view(self, node: NodeRecord, installer: Installer) -> dict[str, Any]:
        return {
            "command": self.scripts.one_line_command(node.id, installer.node_type, installer.script_type),
            "type": installer.node_type,
            "scriptType": installer.script_type,
            "expireAt": installer.expires_at,
        }

    async def create_node(self, name: str, description: str = "", icon: str = "") -> NodeRecord:
        node = NodeRecord(
            id=str(uuid.uuid4()), name=name, description=description, icon=icon, created_at=time.time()
        )
        await self.store.put_node(node)
        await self.store.add_node_event(node.id, "created", {"name": name})
        return node

    async def update_node(self, node_id: str, changes: dict[str, str]) -> NodeRecord:
        node = await self.get_node(node_id)
        for key, value in changes.items():
            setattr(node, key, value)
        await self.store.put_node(node)
        await self.store.add_node_event(node.id, "updated", {"fields": sorted(changes)})
        return node

    async def delete_node(self, node_id: str) -> None:
        node = await self.get_node(node_id)
        connection = self.connections.get(node.id)
        if connection is not None:
            connection.close(agent_pb2.SHUTDOWN)
        await self.store.delete_node(node.id)

    async def generate_script(
        self, node_id: str, node_type: str, script_type: str, root_path: str = ""
    ) -> dict[str, Any]:
        node = await self.get_node(node_id)
        if node_type not in NODE_TYPES:
            raise InvalidInput("type", f"expected one of {', '.join(NODE_TYPES)}")
        if script_type not in SCRIPT_TYPES or (node_type == "k8s" and script_type != "shell"):
            raise InvalidInput("scriptType", "expected shell, powershell or systemd (k8s: shell)")
        if node.nonce is not None:
            raise Conflict("The node already has a connection token; revoke it first")
        self.scripts.require(node_type, script_type)
        issued = self.issuer.issue(node.id, "install")
        installer = Installer(
            token=issued.token,
            nonce=issued.nonce,
            expires_at=time.time() + self.config.install_window_s,
            node_type=node_type,
            script_type=script_type,
            root_path=root_path,
        )
        node.installer = installer.to_doc()
        node.type = node_type
        await self.store.put_node(node)
        await self.store.add_node_event(
            node.id, "install_script_generated", {"type": node_type, "scriptType": script_type}
        )
        # the API caller is the administrator: hand over the token for agents started by hand
        return {**self._install_view(node, installer), "installToken": issued.token}

    async def render_script(self, node_id: str) -> tuple[str, str]:
        """The install script text and its media type; only while the installer is valid."""
        node = await self.get_node(node_id)
        installer = node.get_installer()
        if installer is None or installer.expires_at < time.time():
            raise UnknownEntity("No valid install script for this node (expired, used or discarded)")
        return self.scripts.render(
            node_name=node.name,
            node_type=installer.node_type,
            script_type=installer.script_type,
            token=installer.token,
            root_path=installer.root_path,
        )

    async def discard_script(self, node_id: str) -> None:
        node = await self.get_node(node_id)
        node.installer = None
        await self.store.put_node(node)
        await self.store.add_node_event(node.id, "install_script_discarded", {})

    async def revoke_token(self, node_id: str) -> None:
        node = await self.get_node(node_id)
        node.nonce = None
        await self.store.put_node(node)
        connection = self.connections.get(node.id)
        if connection is not None:
            connection.close(agent_pb2.REVOKE_TOKEN)
        await self.store.add_node_event(node.id, "token_revoked", {})

    async def kick(self, node_id: str) -> None:
        await self.get_node(node_id)
        connection = self.connections.get(node_id)
        if connection is None:
            raise NodeNotConnected("The node is not connected")
        connection.close(agent_pb2.SHUTDOWN)
        await self.store.add_node_event(node_id, "kicked", {})

    async def update_agent(self, node_id: str, deployment_running: bool) -> None:
        await self.get_node(node_id)
        connection = self.connections.get(node_id)
        if connection is None:
            raise NodeNotConnected("The node is not connected")
        if connection.updating():
            raise NodeBusy("An update or install is already in progress")
        if deployment_running:
            raise Conflict("A deployment is running on the node")
        issued = self.issuer.issue(node_id, "connection")
        window = int(self.config.update_window_s)
        connection.pending_update = PendingUpdate(token=issued, deadline=time.time() + window)
        connection.send(
            agent_pb2.AgentCommand(
                update=agent_pb2.AgentUpdateRequest(
                    tag=self.config.agent_tag, timeoutSeconds=window, token=issued.token
                )
            )
        )
        await self.store.add_node_event(node_id, "update_requested", {"tag": self.config.agent_tag})

    async def node_events(self, node_id: str, skip: int, take: int) -> dict[str, Any]:
        await self.get_node(node_id)
        total, items = await self.store.list_node_events(node_id, skip, take)
        return {"total": total, "items": items}

    # -- containers ------------------------------------------------------------------------------

    async def ready_connection(self, node_id: str) -> AgentConnection:
        """The node's session if user commands may go to it now (404, 409, 412 otherwise)."""
        await self.get_node(node_id)
        connection = self.connections.get(node_id)
        if connection is None or connection.closing:
            raise NodeNotConnected("The node is not connected")
        if connection.updating():
            raise NodeBusy("The node is updating")
        if connection.outdated:
            raise NodeBusy("The node's agent is outdated; update it first")
        return connection

    async def list_containers(self, node_id: str, prefix: str) -> list[dict[str, Any]]:
        connection = await self.ready_connection(node_id)
        feed = connection.state_feeds.get(prefix)
        if feed is not None and not feed.one_shot:
            await self._wait(feed.first_list, "Agent did not send the container list")
            return feed.snapshot()
        if feed is None:
            feed = StateFeed(prefix, one_shot=True)
            connection.state_feeds[prefix] = feed
            connection.send(
                agent_pb2.AgentCommand(
                    containerState=agent_pb2.ContainerStateRequest(prefix=prefix, oneShot=True)
                )
            )
        deadline = time.monotonic() + self.config.callback_timeout_s
        try:
            while not feed.ended.is_set() and not feed.items:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                feed.changed.clear()
                try:
                    await asyncio.wait_for(feed.changed.wait(), remaining)
                except TimeoutError:
                    break
        finally:
            if not feed.attached.is_set() and connection.state_feeds.get(prefix) is feed:
                del connection.state_feeds[prefix]
        if not feed.first_list.is_set():
            raise AgentTimedOut("Agent callback request timed out")
        return feed.snapshot()

    async def _wait(self, event: asyncio.Event, message: str) -> None:
        try:
            await asyncio.wait_for(event.wait(), self.config.callback_timeout_s)
        except TimeoutError:
            raise AgentTimedOut(message) from None

    async def watch_states(self, node_id: str, prefix: str) -> tuple[AgentConnection, StateFeed, Viewer]:
        connection = await self.ready_connection(node_id)
        feed = connection.state_feeds.get(prefix)
        if feed is not None and feed.one_shot:
            await self._wait(feed.ended, "Agent did not finish the container list")
            feed = None
        if feed is None:
            feed = StateFeed(prefix, one_shot=False)
            connection.state_feeds[prefix] = feed
            connection.send(
                agent_pb2.AgentCommand(
                    containerState=agent_pb2.ContainerStateRequest(prefix=prefix, oneShot=False)
                )
            )
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
        connection = await self.ready_connection(node_id)
        key = container_key(prefix, name)
        feed = connection.log_feeds.get(key)
        if feed is None:
            feed = LogFeed(prefix, name, tail)
            connection.log_feeds[key] = feed
            connection.send(
                agent_pb2.AgentCommand(
                    containerLog=agent_pb2.ContainerLogRequest(
                        container=common_pb2.ContainerIdentifier(prefix=prefix, name=name),
                        streaming=True,
                        tail=tail,
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

    async def container_command(self, node_id: str, prefix: str, name: str, operation: str) -> None:
        operations = {
            "start": common_pb2.START_CONTAINER,
            "stop": common_pb2.STOP_CONTAINER,
            "restart": common_pb2.RESTART_CONTAINER,
        }
        connection = await self.ready_connection(node_id)
        connection.send(
            agent_pb2.AgentCommand(
                containerCommand=common_pb2.ContainerCommandRequest(
                    container=common_pb2.ContainerIdentifier(prefix=prefix, name=name),
                    operation=operations[operation],
                )
            )
        )

    async def delete_container(self, node_id: str, prefix: str, name: str) -> None:
        connection = await self.ready_connection(node_id)
        target = common_pb2.ContainerOrPrefix(
            container=common_pb2.ContainerIdentifier(prefix=prefix, name=name)
        )
        command = agent_pb2.AgentCommand(deleteContainers=common_pb2.DeleteContainersRequest(target=target))
        await self._callback(connection, "deleteContainers", container_key(prefix, name), command)

    async def delete_prefix(self, node_id: str, prefix: str) -> None:
        connection = await self.ready_connection(node_id)
        target = common_pb2.ContainerOrPrefix(prefix=prefix)
        command = agent_pb2.AgentCommand(deleteContainers=common_pb2.DeleteContainersRequest(target=target))
        await self._callback(connection, "deleteContainers", prefix_key(prefix), command)

    async def inspect_container(self, node_id: str, prefix: str, name: str) -> Any:
        connection = await self.ready_connection(node_id)
        command = agent_pb2.AgentCommand(
            containerInspect=agent_pb2.ContainerInspectRequest(
                container=common_pb2.ContainerIdentifier(prefix=prefix, name=name)
            )
        )
        data = await self._callback(connection, "containerInspect", container_key(prefix, name), command)
        try:
            return json.loads(data)
        except ValueError:
            return data

    async def container_logs(self, node_id: str, prefix: str, name: str, take: int) -> list[str]:
        connection = await self.ready_connection(node_id)
        command = agent_pb2.AgentCommand(
            containerLog=agent_pb2.ContainerLogRequest(
                container=common_pb2.ContainerIdentifier(prefix=prefix, name=name), streaming=False, tail=take
            )
        )
        lines = await self._callback(connection, "containerLog", container_key(prefix, name), command)
        return list(lines)

    async def list_secrets(self, node_id: str, prefix: str, name: str) -> dict[str, Any]:
        connection = await self.ready_connection(node_id)
        target = common_pb2.ContainerOrPrefix(
            container=common_pb2.ContainerIdentifier(prefix=prefix, name=name)
        )
        command = agent_pb2.AgentCommand(listSecrets=agent_pb2.ListSecretsRequest(target=target))
        result: dict[str, Any] = await self._callback(
            connection, "listSecrets", container_key(prefix, name), command
        )
        return result
