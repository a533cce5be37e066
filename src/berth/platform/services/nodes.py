"""Nodes: create, change, delete; install scripts (generate, render, discard); the connection
token (revoke), the agent (update, kick); the audit log of all of it."""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from dataclasses import dataclass
from typing import Any, Final

from berth.platform.config import PlatformConfig
from berth.platform.install_scripts import InstallScripts, RefusedValue
from berth.platform.models import Installer, NodeCreate, NodeRecord, NodeUpdate, ScriptRequest
from berth.platform.problems import Conflict, InvalidInput, NodeBusy, NodeNotConnected, UnknownEntity
from berth.platform.services.connections import PendingUpdate
from berth.platform.services.sessions import AgentSessions
from berth.platform.store import Store
from berth.proto import agent_pb2

MAX_AUDIT_TAKE: Final = 10_000


@dataclass(frozen=True)
class LiveStatus:
    """What the node's session says right now."""

    status: str  # connected | unreachable | updating | outdated
    connected: bool
    updating: bool
    outdated: bool


@dataclass(frozen=True)
class InstallView:
    command: str
    node_type: str
    script_type: str
    expires_at: float


class NodeService:
    def __init__(
        self, config: PlatformConfig, store: Store, sessions: AgentSessions, scripts: InstallScripts
    ) -> None:
        self._config = config
        self._store = store
        self._sessions = sessions
        self.scripts = scripts

    async def get(self, node_id: str) -> NodeRecord:
        node = await self._store.nodes.get(node_id)
        if node is None:
            raise UnknownEntity(f"Node {node_id} not found")
        return node

    async def all(self) -> list[NodeRecord]:
        return await self._store.nodes.all()

    def live_status(self, node_id: str) -> LiveStatus:
        connection = self._sessions.connections.get(node_id)
        if connection is None:
            return LiveStatus("unreachable", connected=False, updating=False, outdated=False)
        updating = connection.updating()
        status = "updating" if updating else "outdated" if connection.outdated else "connected"
        return LiveStatus(status, connected=True, updating=updating, outdated=connection.outdated)

    def install_view(self, node: NodeRecord) -> InstallView | None:
        installer = node.installer
        if installer is None or installer.expires_at <= time.time():
            return None
        return InstallView(
            command=self.scripts.one_line_command(node.id, installer.node_type, installer.script_type),
            node_type=installer.node_type,
            script_type=installer.script_type,
            expires_at=installer.expires_at,
        )

    async def create(self, body: NodeCreate) -> NodeRecord:
        node = NodeRecord(
            id=str(uuid.uuid4()),
            name=body.name,
            description=body.description,
            icon=body.icon,
            created_at=time.time(),
        )
        await self._store.nodes.put(node)
        await self._store.events.add_node_event(node.id, "created", {"name": node.name})
        return node

    async def update(self, node_id: str, body: NodeUpdate) -> NodeRecord:
        node = await self.get(node_id)
        changes = body.model_dump(exclude_none=True)
        for key, value in changes.items():
            setattr(node, key, value)
        await self._store.nodes.put(node)
        await self._store.events.add_node_event(node.id, "updated", {"fields": sorted(changes)})
        return node

    async def delete(self, node_id: str) -> None:
        node = await self.get(node_id)
        connection = self._sessions.connections.get(node.id)
        if connection is not None:
            connection.close(agent_pb2.SHUTDOWN)
        await self._store.nodes.delete(node.id)

    # -- install scripts -------------------------------------------------------------------------

    async def generate_script(self, node_id: str, body: ScriptRequest) -> tuple[InstallView, str]:
        """The one-liner and, for the administrator starting an agent by hand, the install token."""
        node = await self.get(node_id)
        if node.nonce is not None:
            raise Conflict("The node already has a connection token; revoke it first")
        if body.type == "k8s" and body.scriptType != "shell":
            raise InvalidInput("scriptType", "a k8s node has only the manifest (scriptType shell)")
        self.scripts.require(body.type, body.scriptType)
        try:  # render once now, so that a value the script cannot carry is refused here
            await asyncio.to_thread(  # reads the template file
                functools.partial(
                    self.scripts.render,
                    node_name=node.name,
                    node_type=body.type,
                    script_type=body.scriptType,
                    token="probe",  # noqa: S106 - not a credential: a stand-in for the check
                    root_path=body.rootPath,
                )
            )
        except RefusedValue as err:
            raise InvalidInput(err.field, err.problem) from None
        issued = self._sessions.issuer.issue(node.id, "install")
        node.installer = Installer(
            token=issued.token,
            nonce=issued.nonce,
            expires_at=time.time() + self._config.install_window_s,
            node_type=body.type,
            script_type=body.scriptType,
            root_path=body.rootPath,
        )
        node.type = body.type
        await self._store.nodes.put(node)
        await self._store.events.add_node_event(
            node.id, "install_script_generated", {"type": body.type, "scriptType": body.scriptType}
        )
        view = self.install_view(node)
        assert view is not None
        return view, issued.token

    async def render_script(self, node_id: str) -> tuple[str, str]:
        """The install script text and its media type; only while the installer is valid."""
        node = await self.get(node_id)
        installer = node.installer
        if installer is None or installer.expires_at < time.time():
            raise UnknownEntity("No valid install script for this node (expired, used or discarded)")
        try:
            return await asyncio.to_thread(  # reads the template file
                functools.partial(
                    self.scripts.render,
                    node_name=node.name,
                    node_type=installer.node_type,
                    script_type=installer.script_type,
                    token=installer.token,
                    root_path=installer.root_path,
                )
            )
        except RefusedValue as err:  # a node stored before validation existed
            raise Conflict(f"The node's install script cannot be rendered safely: {err}") from None

    async def discard_script(self, node_id: str) -> None:
        node = await self.get(node_id)
        node.installer = None
        await self._store.nodes.put(node)
        await self._store.events.add_node_event(node.id, "install_script_discarded", {})

    # -- token and agent -------------------------------------------------------------------------

    async def revoke_token(self, node_id: str) -> None:
        node = await self.get(node_id)
        node.nonce = None
        await self._store.nodes.put(node)
        connection = self._sessions.connections.get(node.id)
        if connection is not None:
            connection.close(agent_pb2.REVOKE_TOKEN)
        await self._store.events.add_node_event(node.id, "token_revoked", {})

    async def kick(self, node_id: str) -> None:
        await self.get(node_id)
        connection = self._sessions.connections.get(node_id)
        if connection is None:
            raise NodeNotConnected("The node is not connected")
        connection.close(agent_pb2.SHUTDOWN)
        await self._store.events.add_node_event(node_id, "kicked", {})

    async def update_agent(self, node_id: str, deployment_running: bool) -> None:
        await self.get(node_id)
        connection = self._sessions.connections.get(node_id)
        if connection is None:
            raise NodeNotConnected("The node is not connected")
        if connection.updating():
            raise NodeBusy("An update or install is already in progress")
        if deployment_running:
            raise Conflict("A deployment is running on the node")
        issued = self._sessions.issuer.issue(node_id, "connection")
        window = int(self._config.update_window_s)
        connection.pending_update = PendingUpdate(token=issued, deadline=time.time() + window)
        connection.send(
            agent_pb2.AgentCommand(
                update=agent_pb2.AgentUpdateRequest(
                    tag=self._config.agent_tag, timeoutSeconds=window, token=issued.token
                )
            )
        )
        await self._store.events.add_node_event(node_id, "update_requested", {"tag": self._config.agent_tag})

    async def audit(self, node_id: str, skip: int, take: int) -> tuple[int, list[dict[str, Any]]]:
        await self.get(node_id)
        return await self._store.events.node_events(node_id, skip, take)
