"""Deployments: create, patch an instance, delete; start (a ``DeployRequest`` with every secret
encrypted to the node's public key); the agent's ``DeploymentStatus`` stream (§6.2), recorded as
appended instance states and events, written in batches; the live event feed.

An instance's ``config`` is the protocol's instance config in proto3 JSON form:
``{"common": {...}, "dagent": {...}, "crane": {...}}`` with the field names of §2.4. Secret values
arrive in clear text, are sealed at rest, and leave the platform only as OpenPGP messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import pysequoia
import structlog
from google.protobuf import json_format

from berth.platform.models import (
    DeploymentCreate,
    DeploymentRecord,
    InstancePatch,
    InstanceRecord,
    InstanceState,
    RegistryRecord,
    check_config_part,
    default_instance_name,
    merge_config,
)
from berth.platform.problems import Conflict, InvalidInput, UnknownEntity
from berth.platform.services.connections import Feed, Viewer
from berth.platform.services.deployment_diff import compare
from berth.platform.services.sessions import AgentSessions
from berth.platform.store import Store
from berth.proto import agent_pb2, common_pb2

log = structlog.get_logger(__name__)

LEVELS: Final = {common_pb2.INFO: "info", common_pb2.WARNING: "warn", common_pb2.ERROR: "error"}
FINAL_STATUSES: Final = ("successful", "failed")
STREAM_QUEUE_SIZE: Final = 2_000
WRITE_BATCH: Final = 500


def _status_name(value: int) -> str:
    return common_pb2.DeploymentStatus.Name(value).lower()  # type: ignore[arg-type]


def _state_name(value: int) -> str | None:
    if value == common_pb2.CONTAINER_STATE_UNSPECIFIED:
        return None
    return common_pb2.ContainerState.Name(value).lower()  # type: ignore[arg-type]


def encrypt_secret(value: str, recipient: pysequoia.Cert) -> str:
    if value == "":
        return ""
    encrypted: bytes = pysequoia.encrypt(value.encode(), [recipient])
    return encrypted.decode()


FinishListener = Callable[[DeploymentRecord, str], Awaitable[None]]


@dataclass
class Run:
    """A started deployment, until its status stream ends or the node disconnects."""

    deployment_id: str
    node_id: str
    instance_ids: set[str]
    last_status: str = "in_progress"
    attached: bool = False


@dataclass
class _Batch:
    states: list[InstanceState] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    status: str | None = None


def build_request(
    deployment: DeploymentRecord,
    instances: list[InstanceRecord],
    public_key: str,
    registries: dict[str, RegistryRecord],
) -> agent_pb2.DeployRequest:
    """Blocking (OpenPGP encryption): runs in a worker thread."""
    recipient = pysequoia.Cert.from_bytes(public_key.encode())
    shared = {k: encrypt_secret(v, recipient) for k, v in deployment.secrets.items()}
    request = agent_pb2.DeployRequest(
        id=deployment.id,
        versionName=deployment.version_name,
        releaseNotes=deployment.release_notes,
        prefix=deployment.prefix,
        secrets=shared,
    )
    for instance in instances:
        config = instance.config
        workload = request.requests.add(id=instance.id, imageName=instance.image, tag=instance.tag)
        common_doc = dict(config.get("common", {}))
        own_secrets = {str(k): str(v) for k, v in (common_doc.pop("secrets", None) or {}).items()}
        json_format.ParseDict(common_doc, workload.common)
        for key, value in shared.items():
            workload.common.secrets[key] = value
        for key, value in own_secrets.items():
            workload.common.secrets[key] = encrypt_secret(value, recipient)
        for volume in workload.common.volumes:
            if not volume.HasField("type"):
                volume.type = common_pb2.RO
        json_format.ParseDict(config.get("dagent", {}), workload.dagent)
        json_format.ParseDict(config.get("crane", {}), workload.crane)
        registry = registries.get(instance.registry_id or "")
        if registry is not None:
            pull_prefix = registry.url.split("://", 1)[-1].rstrip("/")
            workload.registry = pull_prefix
            if registry.user and registry.password:
                workload.registryAuth.CopyFrom(
                    agent_pb2.RegistryAuth(
                        name=registry.name, url=pull_prefix, user=registry.user, password=registry.password
                    )
                )
    return request


class DeploymentService:
    def __init__(self, store: Store, sessions: AgentSessions, max_instances: int) -> None:
        self._store = store
        self._sessions = sessions
        self._max_instances = max_instances
        self._runs: dict[str, Run] = {}
        self._feeds: dict[str, Feed] = {}
        self._finish_listeners: list[FinishListener] = []
        sessions.on_disconnect(self.node_disconnected)

    def running_on(self, node_id: str) -> bool:
        return any(run.node_id == node_id for run in self._runs.values())

    def is_running(self, deployment_id: str) -> bool:
        return deployment_id in self._runs

    async def get(self, deployment_id: str) -> DeploymentRecord:
        deployment = await self._store.deployments.get(deployment_id)
        if deployment is None:
            raise UnknownEntity(f"Deployment {deployment_id} not found")
        return deployment

    async def all(self, node_id: str | None = None) -> list[DeploymentRecord]:
        return await self._store.deployments.all(node_id)

    async def instances(self, deployment_id: str) -> tuple[list[InstanceRecord], dict[str, InstanceState]]:
        return (
            await self._store.deployments.instances(deployment_id),
            await self._store.deployments.latest_states(deployment_id),
        )

    # -- create, patch, delete -------------------------------------------------------------------

    async def create(self, body: DeploymentCreate) -> DeploymentRecord:
        if await self._store.nodes.get(body.nodeId) is None:
            raise InvalidInput("nodeId", "unknown node")
        if len(body.instances) > self._max_instances:
            raise InvalidInput("instances", f"at most {self._max_instances} instances per deployment")
        registries = {r.id for r in await self._store.registries.all()}
        instances: list[InstanceRecord] = []
        seen: set[str] = set()
        for index, item in enumerate(body.instances):
            path = f"instances[{index}]"
            if item.registryId is not None and item.registryId not in registries:
                raise InvalidInput(f"{path}.registryId", "unknown registry")
            config = item.config.as_dict()
            name = str(config.setdefault("common", {}).setdefault("name", default_instance_name(item.image)))
            if name in seen:
                raise InvalidInput(f"{path}.config.common.name", f"duplicate name {name!r}")
            seen.add(name)
            if len(f"{body.prefix}-{name}") > 63:
                raise InvalidInput(f"{path}.config.common.name", "prefix-name exceeds 63 characters")
            instances.append(
                InstanceRecord(
                    id=str(uuid.uuid4()),
                    image=item.image,
                    tag=item.tag,
                    registry_id=item.registryId,
                    config=config,
                    position=index,
                )
            )
        deployment = DeploymentRecord(
            id=str(uuid.uuid4()),
            node_id=body.nodeId,
            prefix=body.prefix,
            created_at=time.time(),
            note=body.note,
            version_name=body.versionName,
            release_notes=body.releaseNotes,
            secrets=dict(body.secrets),
        )
        await self._store.deployments.insert(deployment, instances)
        return deployment

    async def patch_instance(
        self, deployment_id: str, instance_id: str, body: InstancePatch
    ) -> InstanceRecord:
        await self.get(deployment_id)
        if deployment_id in self._runs:
            raise Conflict("The deployment is in progress")
        instance = next(
            (i for i in await self._store.deployments.instances(deployment_id) if i.id == instance_id), None
        )
        if instance is None:
            raise UnknownEntity(f"Instance {instance_id} not found")
        merged = merge_config(instance.config, body.config.as_dict())
        for part, value in merged.items():
            try:
                check_config_part(part, value)
            except ValueError as err:
                raise InvalidInput(f"config.{part}", str(err)) from None
        if not merged.get("common", {}).get("name"):
            raise InvalidInput("config.common.name", "must not be removed")
        instance.config = merged
        if body.tag is not None:
            instance.tag = body.tag
        await self._store.deployments.update_instance(deployment_id, instance)
        return instance

    async def copy(self, deployment_id: str) -> DeploymentRecord:
        """A new deployment with the same node, prefix, secrets and instances (their configs and
        secret values included): the rollback path is a copy of an earlier deployment, started."""
        source = await self.get(deployment_id)
        if await self._store.nodes.get(source.node_id) is None:
            raise Conflict("The deployment's node no longer exists")
        registries = {r.id for r in await self._store.registries.all()}
        instances = []
        for instance in await self._store.deployments.instances(deployment_id):
            if instance.registry_id is not None and instance.registry_id not in registries:
                raise Conflict(f"The registry of {instance.image} no longer exists")
            instances.append(instance.model_copy(update={"id": str(uuid.uuid4())}, deep=True))
        copy = source.model_copy(
            update={
                "id": str(uuid.uuid4()),
                "status": "preparing",
                "created_at": time.time(),
                "updated_at": None,
                "note": f"Redeploy of {source.id}",
            },
            deep=True,
        )
        await self._store.deployments.insert(copy, instances)
        log.info("deployment_copied", deployment_id=copy.id, source_id=source.id)
        return copy

    async def diff(self, base_id: str, other_id: str) -> dict[str, Any]:
        base, other = await self.get(base_id), await self.get(other_id)
        return compare(
            base,
            await self._store.deployments.instances(base_id),
            other,
            await self._store.deployments.instances(other_id),
        )

    async def delete(self, deployment_id: str) -> None:
        await self.get(deployment_id)
        if deployment_id in self._runs:
            raise Conflict("The deployment is in progress")
        await self._store.deployments.delete(deployment_id)

    # -- start -----------------------------------------------------------------------------------

    async def start(self, deployment_id: str) -> DeploymentRecord:
        deployment = await self.get(deployment_id)
        if deployment_id in self._runs:
            raise Conflict("The deployment is already in progress")
        connection = await self._sessions.ready_connection(deployment.node_id)
        if not connection.public_key:
            raise Conflict("The node's agent sent no public key; secrets cannot be delivered")
        registries = {r.id: r for r in await self._store.registries.all()}
        instances = await self._store.deployments.instances(deployment_id)
        request = await asyncio.to_thread(
            build_request, deployment, instances, connection.public_key, registries
        )
        await self._store.deployments.clear_states(deployment_id)
        self._runs[deployment_id] = Run(
            deployment_id, deployment.node_id, instance_ids={i.id for i in instances}
        )
        await self._set_status(deployment_id, "in_progress")
        connection.send(agent_pb2.AgentCommand(deploy=request))
        log.info(
            "deployment_started",
            deployment_id=deployment_id,
            node_id=deployment.node_id,
            instances=len(instances),
        )
        return deployment

    # -- the agent's status stream (§6.2) --------------------------------------------------------

    def accept_stream(self, deployment_id: str, node_id: str) -> Run | None:
        run = self._runs.get(deployment_id)
        if run is None or run.node_id != node_id or run.attached:
            return None
        run.attached = True
        return run

    async def consume(self, run: Run, messages: AsyncIterator[common_pb2.DeploymentStatusMessage]) -> None:
        """Reads the stream in one task and records what arrived since the last write in one batch,
        so a large deployment costs a few writes, not one per message."""
        queue: asyncio.Queue[common_pb2.DeploymentStatusMessage | None] = asyncio.Queue(STREAM_QUEUE_SIZE)

        async def _read() -> None:
            try:
                async for message in messages:
                    await queue.put(message)
            finally:
                await queue.put(None)

        reader = asyncio.create_task(_read(), name=f"platform-deployment-stream-{run.deployment_id[:8]}")
        try:
            ended = False
            while not ended:
                batch = _Batch()
                message = await queue.get()
                while message is not None:
                    self._collect(run, batch, message)
                    if queue.empty() or len(batch.states) + len(batch.events) >= WRITE_BATCH:
                        break
                    message = queue.get_nowait()
                ended = message is None
                await self._write(run, batch)
            await reader
        finally:
            if not reader.done():
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader
            if self._runs.get(run.deployment_id) is run:
                await self._finish(run)

    def _collect(self, run: Run, batch: _Batch, message: common_pb2.DeploymentStatusMessage) -> None:
        lines = [line[:4096] for line in message.log]
        level = LEVELS.get(message.logLevel, "info")
        kind = message.WhichOneof("data")
        if kind == "containerProgress":
            progress = message.containerProgress
            self._publish(
                run.deployment_id,
                {
                    "type": "progress",
                    "instanceId": progress.instanceId,
                    "status": progress.status[:200],
                    "progress": min(max(progress.progress, 0.0), 1.0),
                },
            )
            return
        event: dict[str, Any]
        if kind == "deploymentStatus":
            status = _status_name(message.deploymentStatus)
            repeated = status == run.last_status
            run.last_status = status
            # the platform recorded in_progress itself at start: a repeat only carries its log lines
            event = {"type": "log"} if repeated else {"type": "deploymentStatus", "deploymentStatus": status}
            if status not in FINAL_STATUSES:
                batch.status = status
        elif kind == "instance":
            item = message.instance
            state = _state_name(item.state)
            reason = item.reason[:2000]
            event = {
                "type": "containerState",
                "containerState": {"instanceId": item.instanceId, "state": state, "reason": reason},
            }
            if item.instanceId in run.instance_ids:
                batch.states.append(
                    InstanceState(
                        instance_id=item.instanceId, state=state, reason=reason, updated_at=time.time()
                    )
                )
        else:
            event = {"type": "log"}
        if lines:
            event["log"] = lines
            event["level"] = level
        if event["type"] == "log" and not lines:
            return
        batch.events.append(event)

    async def _write(self, run: Run, batch: _Batch) -> None:
        await self._store.deployments.append_states(run.deployment_id, batch.states)
        if batch.status is not None:
            await self._store.deployments.set_status(run.deployment_id, batch.status)
        await self._add_events(run.deployment_id, batch.events)

    async def _finish(self, run: Run, *, reason: str = "") -> None:
        del self._runs[run.deployment_id]
        outcome = "successful" if run.last_status == "successful" else "failed"
        deployment = await self._store.deployments.get(run.deployment_id)
        if deployment is None:
            return
        if reason:
            await self._add_events(run.deployment_id, [{"type": "log", "log": [reason], "level": "error"}])
        await self._set_status(run.deployment_id, outcome, record=run.last_status != outcome)
        if outcome == "successful":
            await self._supersede(deployment)
        log.info("deployment_finished", deployment_id=run.deployment_id, status=outcome)
        for listener in self._finish_listeners:
            await listener(deployment, outcome)
        feed = self._feeds.get(run.deployment_id)
        if feed is not None:
            feed.publish({"type": "end", "status": outcome})

    async def _supersede(self, live: DeploymentRecord) -> None:
        """The deployment that just succeeded is what runs on its node under its prefix: every
        other successful one of that node and prefix, and the failed ones before it, become
        obsolete (drafts and runs in progress are left alone)."""
        for other in await self._store.deployments.all(live.node_id):
            if other.id == live.id or other.prefix != live.prefix:
                continue
            failed_before = other.status == "failed" and other.created_at < live.created_at
            if other.status != "successful" and not failed_before:
                continue
            note = f"Superseded by deployment {live.id}"
            await self._add_events(other.id, [{"type": "log", "log": [note], "level": "info"}])
            await self._set_status(other.id, "obsolete")

    def on_finish(self, listener: FinishListener) -> None:
        self._finish_listeners.append(listener)

    async def fail_interrupted(self) -> None:
        """At start-up: a deployment still in progress lost its status stream when the platform
        stopped, as when a node disconnects (§3.9); record it as failed, saying why."""
        for deployment_id in await self._store.deployments.with_status("in_progress"):
            reason = "The platform restarted during the deployment"
            await self._add_events(deployment_id, [{"type": "log", "log": [reason], "level": "error"}])
            await self._set_status(deployment_id, "failed")

    async def node_disconnected(self, node_id: str) -> None:
        for run in [r for r in self._runs.values() if r.node_id == node_id]:
            if await self._store.deployments.get(run.deployment_id) is None:
                self._runs.pop(run.deployment_id, None)
                continue
            run.last_status = "failed"
            await self._finish(run, reason="The node disconnected during the deployment")

    async def _set_status(self, deployment_id: str, status: str, *, record: bool = True) -> None:
        await self._store.deployments.set_status(deployment_id, status)
        if record:
            await self._add_events(deployment_id, [{"type": "deploymentStatus", "deploymentStatus": status}])

    async def _add_events(self, deployment_id: str, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        created = await self._store.events.add_deployment_events(deployment_id, events)
        for event in events:
            self._publish(deployment_id, {"createdAt": created, **event})

    def _publish(self, deployment_id: str, event: dict[str, Any]) -> None:
        feed = self._feeds.get(deployment_id)
        if feed is not None:
            feed.publish(event)

    # -- the event log and its live feed ---------------------------------------------------------

    async def events(self, deployment_id: str) -> list[dict[str, Any]]:
        await self.get(deployment_id)
        return await self._store.events.deployment_events(deployment_id)

    async def watch(self, deployment_id: str) -> tuple[Feed, Viewer, list[dict[str, Any]]]:
        """Subscribes first, then reads the history, so no event falls between the two."""
        await self.get(deployment_id)
        feed = self._feeds.setdefault(deployment_id, Feed())
        viewer = feed.subscribe()
        history = await self._store.events.deployment_events(deployment_id)
        return feed, viewer, history

    def unwatch(self, deployment_id: str, feed: Feed, viewer: Viewer) -> None:
        if feed.unsubscribe(viewer) and self._feeds.get(deployment_id) is feed:
            del self._feeds[deployment_id]
