"""Deployments: create, patch an instance's config, start (builds the ``DeployRequest`` with every
secret encrypted to the node's public key), the ``DeploymentStatus`` stream (§6.2) and the event log.

An instance's ``config`` is the protocol's instance config in proto3 JSON form:
``{"common": {...}, "dagent": {...}, "crane": {...}}`` with the field names of §2.4 (``name``,
``environment``, ``secrets``, ``ports``, ``restartPolicy`` ...). Secret values arrive in plain text
and leave the platform only as OpenPGP messages.
"""

from __future__ import annotations

import asyncio
import copy
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Final

import pysequoia
import structlog
from google.protobuf import json_format

from berth.platform.connections import Feed, Viewer
from berth.platform.control import ControlPlane, valid_label
from berth.platform.problems import Conflict, InvalidInput, UnknownEntity
from berth.platform.records import DeploymentRecord, InstanceRecord, RegistryRecord
from berth.proto import agent_pb2, common_pb2

log = structlog.get_logger(__name__)

CONFIG_PARTS: Final = {
    "common": agent_pb2.CommonContainerConfig,
    "dagent": agent_pb2.DagentContainerConfig,
    "crane": agent_pb2.CraneContainerConfig,
}
LEVELS: Final = {
    common_pb2.INFO: "info",
    common_pb2.WARNING: "warn",
    common_pb2.ERROR: "error",
}
FINAL_STATUSES: Final = ("successful", "failed")


def _status_name(value: int) -> str:
    return common_pb2.DeploymentStatus.Name(value).lower()  # type: ignore[arg-type]


def _state_name(value: int) -> str | None:
    if value == common_pb2.CONTAINER_STATE_UNSPECIFIED:
        return None
    return common_pb2.ContainerState.Name(value).lower()  # type: ignore[arg-type]


def _text(payload: dict[str, Any], key: str, field_path: str, *, required: bool = False) -> str:
    value = payload.get(key)
    if value is None:
        if required:
            raise InvalidInput(field_path, "is required")
        return ""
    if not isinstance(value, str):
        raise InvalidInput(field_path, "must be a string")
    if required and not value.strip():
        raise InvalidInput(field_path, "must not be empty")
    return value


def _string_map(value: Any, field_path: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise InvalidInput(field_path, "must be an object of strings")
    return dict(value)


def validate_config(config: Any, field_path: str) -> dict[str, Any]:
    """Checks the instance config against the protocol messages; errors name the failing field."""
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise InvalidInput(field_path, "must be an object")
    for part, value in config.items():
        message_type = CONFIG_PARTS.get(part)
        if message_type is None:
            raise InvalidInput(f"{field_path}.{part}", "unknown part (expected common, dagent or crane)")
        if not isinstance(value, dict):
            raise InvalidInput(f"{field_path}.{part}", "must be an object")
        try:
            json_format.ParseDict(value, message_type())
        except json_format.ParseError as err:
            raise InvalidInput(f"{field_path}.{part}", str(err)) from None
    common = config.get("common", {})
    if "name" in common and not valid_label(str(common["name"])):
        raise InvalidInput(
            f"{field_path}.common.name", "must be an RFC 1123 label ([a-z0-9-], 1-63 characters)"
        )
    return copy.deepcopy(config)


def _default_name(image: str) -> str:
    last = image.rsplit("/", 1)[-1].lower()
    cleaned = "".join(c if c.isalnum() or c == "-" else "-" for c in last).strip("-")
    return cleaned[:63] or "app"


def merge_config(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Patches replace fields inside each part; ``null`` removes a field."""
    merged = copy.deepcopy(base)
    for part, fields in patch.items():
        target = merged.setdefault(part, {})
        for key, value in fields.items():
            if value is None:
                target.pop(key, None)
            else:
                target[key] = copy.deepcopy(value)
    return merged


def encrypt_secret(value: str, recipient: pysequoia.Cert) -> str:
    if value == "":
        return ""
    encrypted: bytes = pysequoia.encrypt(value.encode(), [recipient])
    return encrypted.decode()


@dataclass
class Run:
    """A started deployment, until its status stream ends or the node disconnects."""

    deployment_id: str
    node_id: str
    last_status: str = "in_progress"
    attached: bool = False
    instance_ids: set[str] = field(default_factory=set)


class Deployments:
    def __init__(self, plane: ControlPlane) -> None:
        self._plane = plane
        self._store = plane.store
        self._runs: dict[str, Run] = {}
        self._feeds: dict[str, Feed] = {}
        plane.on_disconnect.append(self.node_disconnected)

    def running_on(self, node_id: str) -> bool:
        return any(run.node_id == node_id for run in self._runs.values())

    async def get(self, deployment_id: str) -> DeploymentRecord:
        deployment = await self._store.get_deployment(deployment_id)
        if deployment is None:
            raise UnknownEntity(f"Deployment {deployment_id} not found")
        return deployment

    def view(self, deployment: DeploymentRecord, node_name: str = "") -> dict[str, Any]:
        return {
            "id": deployment.id,
            "node": {"id": deployment.node_id, "name": node_name},
            "prefix": deployment.prefix,
            "status": deployment.status,
            "note": deployment.note,
            "versionName": deployment.version_name,
            "releaseNotes": deployment.release_notes,
            "secretKeys": sorted(deployment.secrets),
            "createdAt": deployment.created_at,
            "updatedAt": deployment.updated_at,
            "instances": [self.instance_view(i) for i in deployment.get_instances()],
        }

    @staticmethod
    def instance_view(instance: InstanceRecord) -> dict[str, Any]:
        config = copy.deepcopy(instance.config)
        secrets = config.get("common", {}).get("secrets")
        if isinstance(secrets, dict):  # secret values are write-only, like registry passwords
            config["common"]["secrets"] = dict.fromkeys(secrets, "")
        return {
            "id": instance.id,
            "image": {"name": instance.image, "tag": instance.tag, "registryId": instance.registry_id},
            "config": config,
            "state": instance.state,
            "reason": instance.reason,
            "updatedAt": instance.updated_at,
        }

    async def _instance_from_payload(self, payload: Any, index: int) -> InstanceRecord:
        path = f"instances[{index}]"
        if not isinstance(payload, dict):
            raise InvalidInput(path, "must be an object")
        image = _text(payload, "image", f"{path}.image", required=True)
        tag = _text(payload, "tag", f"{path}.tag") or "latest"
        registry_id = payload.get("registryId")
        if registry_id is not None and (
            not isinstance(registry_id, str) or await self._store.get_registry(registry_id) is None
        ):
            raise InvalidInput(f"{path}.registryId", "unknown registry")
        config = validate_config(payload.get("config"), f"{path}.config")
        common = config.setdefault("common", {})
        common.setdefault("name", _default_name(image))
        return InstanceRecord(
            id=str(uuid.uuid4()), image=image, tag=tag, registry_id=registry_id, config=config
        )

    async def create(self, payload: dict[str, Any]) -> DeploymentRecord:
        node_id = _text(payload, "nodeId", "nodeId", required=True)
        if await self._store.get_node(node_id) is None:
            raise InvalidInput("nodeId", "unknown node")
        prefix = _text(payload, "prefix", "prefix", required=True)
        if not valid_label(prefix):
            raise InvalidInput("prefix", "must be an RFC 1123 label ([a-z0-9-], 1-63 characters)")
        instances_payload = payload.get("instances")
        if not isinstance(instances_payload, list) or not instances_payload:
            raise InvalidInput("instances", "must be a non-empty list")
        instances = [await self._instance_from_payload(item, i) for i, item in enumerate(instances_payload)]
        names = [i.config["common"]["name"] for i in instances]
        for index, name in enumerate(names):
            if names.index(name) != index:
                raise InvalidInput(f"instances[{index}].config.common.name", f"duplicate name {name!r}")
            if len(f"{prefix}-{name}") > 63:
                raise InvalidInput(
                    f"instances[{index}].config.common.name", "prefix-name exceeds 63 characters"
                )
        deployment = DeploymentRecord(
            id=str(uuid.uuid4()),
            node_id=node_id,
            prefix=prefix,
            created_at=time.time(),
            note=_text(payload, "note", "note"),
            version_name=_text(payload, "versionName", "versionName"),
            release_notes=_text(payload, "releaseNotes", "releaseNotes"),
            secrets=_string_map(payload.get("secrets"), "secrets"),
        )
        deployment.set_instances(instances)
        await self._store.put_deployment(deployment)
        return deployment

    async def patch_instance(
        self, deployment_id: str, instance_id: str, payload: dict[str, Any]
    ) -> InstanceRecord:
        deployment = await self.get(deployment_id)
        if deployment_id in self._runs:
            raise Conflict("The deployment is in progress")
        instances = deployment.get_instances()
        instance = next((i for i in instances if i.id == instance_id), None)
        if instance is None:
            raise UnknownEntity(f"Instance {instance_id} not found")
        patch = validate_config(payload.get("config"), "config")
        merged = merge_config(instance.config, patch)
        validate_config(merged, "config")
        if not merged.get("common", {}).get("name"):
            raise InvalidInput("config.common.name", "must not be removed")
        instance.config = merged
        if "tag" in payload:
            instance.tag = _text(payload, "tag", "tag", required=True)
        instance.updated_at = time.time()
        deployment.set_instances(instances)
        deployment.updated_at = time.time()
        await self._store.put_deployment(deployment)
        return instance

    async def delete(self, deployment_id: str) -> None:
        await self.get(deployment_id)
        if deployment_id in self._runs:
            raise Conflict("The deployment is in progress")
        await self._store.delete_deployment(deployment_id)

    async def list_all(self) -> list[dict[str, Any]]:
        names = {n.id: n.name for n in await self._store.list_nodes()}
        return [self.view(d, names.get(d.node_id, "")) for d in await self._store.list_deployments()]

    # -- start ---------------------------------------------------------------------------------

    async def start(self, deployment_id: str) -> DeploymentRecord:
        deployment = await self.get(deployment_id)
        if deployment_id in self._runs:
            raise Conflict("The deployment is already in progress")
        connection = await self._plane.ready_connection(deployment.node_id)
        if not connection.public_key:
            raise Conflict("The node's agent sent no public key; secrets cannot be delivered")
        registries = {r.id: r for r in await self._store.list_registries()}
        request = await asyncio.to_thread(self._build_request, deployment, connection.public_key, registries)
        instances = deployment.get_instances()
        for instance in instances:
            instance.state = None
            instance.reason = ""
        deployment.set_instances(instances)
        self._runs[deployment_id] = Run(
            deployment_id, deployment.node_id, instance_ids={i.id for i in instances}
        )
        await self._set_status(deployment, "in_progress")
        connection.send(agent_pb2.AgentCommand(deploy=request))
        log.info("deployment_started", deployment_id=deployment_id, node_id=deployment.node_id)
        return deployment

    @staticmethod
    def _build_request(
        deployment: DeploymentRecord, public_key: str, registries: dict[str, RegistryRecord]
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
        for instance in deployment.get_instances():
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
                            name=registry.name,
                            url=pull_prefix,
                            user=registry.user,
                            password=registry.password,
                        )
                    )
        return request

    # -- the agent's status stream (§6.2) -----------------------------------------------------

    def accept_stream(self, deployment_id: str, node_id: str) -> Run | None:
        run = self._runs.get(deployment_id)
        if run is None or run.node_id != node_id or run.attached:
            return None
        run.attached = True
        return run

    async def consume(self, run: Run, messages: AsyncIterator[common_pb2.DeploymentStatusMessage]) -> None:
        deployment = await self.get(run.deployment_id)
        try:
            async for message in messages:
                await self._record(run, deployment, message)
        finally:
            if self._runs.get(run.deployment_id) is run:
                await self._finish(run, deployment)

    async def _record(
        self, run: Run, deployment: DeploymentRecord, message: common_pb2.DeploymentStatusMessage
    ) -> None:
        lines = list(message.log)
        level = LEVELS.get(message.logLevel, "info")
        kind = message.WhichOneof("data")
        if kind == "containerProgress":
            progress = message.containerProgress
            self._publish(
                run.deployment_id,
                {
                    "type": "progress",
                    "instanceId": progress.instanceId,
                    "status": progress.status,
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
                await self._set_status(deployment, status, record=False)
        elif kind == "instance":
            item = message.instance
            state = _state_name(item.state)
            event = {
                "type": "containerState",
                "containerState": {"instanceId": item.instanceId, "state": state, "reason": item.reason},
            }
            instances = deployment.get_instances()
            for instance in instances:
                if instance.id == item.instanceId:
                    instance.state = state
                    instance.reason = item.reason
                    instance.updated_at = time.time()
            deployment.set_instances(instances)
            await self._store.put_deployment(deployment)
        else:
            event = {"type": "log"}
        if lines:
            event["log"] = lines
            event["level"] = level
        if event["type"] == "log" and not lines:
            return
        await self._add_event(run.deployment_id, event)

    async def _finish(self, run: Run, deployment: DeploymentRecord, *, reason: str = "") -> None:
        del self._runs[run.deployment_id]
        outcome = "successful" if run.last_status == "successful" else "failed"
        fresh = await self._store.get_deployment(run.deployment_id)
        if fresh is None:
            return
        fresh.set_instances(deployment.get_instances())
        if reason:
            await self._add_event(run.deployment_id, {"type": "log", "log": [reason], "level": "error"})
        await self._set_status(fresh, outcome, record=run.last_status != outcome)
        log.info("deployment_finished", deployment_id=run.deployment_id, status=outcome)
        feed = self._feeds.get(run.deployment_id)
        if feed is not None:
            feed.publish({"type": "end", "status": outcome})

    async def fail_interrupted(self) -> None:
        """At start-up: a deployment still in progress lost its status stream when the platform
        stopped, as when a node disconnects (§3.9); record it as failed, saying why."""
        for deployment in await self._store.list_deployments():
            if deployment.status == "in_progress":
                reason = "The platform restarted during the deployment"
                await self._add_event(deployment.id, {"type": "log", "log": [reason], "level": "error"})
                await self._set_status(deployment, "failed")

    async def node_disconnected(self, node_id: str) -> None:
        for run in [r for r in self._runs.values() if r.node_id == node_id]:
            deployment = await self._store.get_deployment(run.deployment_id)
            if deployment is None:
                self._runs.pop(run.deployment_id, None)
                continue
            run.last_status = "failed"
            await self._finish(run, deployment, reason="The node disconnected during the deployment")

    async def _set_status(self, deployment: DeploymentRecord, status: str, *, record: bool = True) -> None:
        if deployment.status == status:
            return
        deployment.status = status
        deployment.updated_at = time.time()
        await self._store.put_deployment(deployment)
        if record:
            await self._add_event(deployment.id, {"type": "deploymentStatus", "deploymentStatus": status})

    async def _add_event(self, deployment_id: str, event: dict[str, Any]) -> None:
        created = await self._store.add_deployment_event(deployment_id, event)
        self._publish(deployment_id, {"createdAt": created, **event})

    def _publish(self, deployment_id: str, event: dict[str, Any]) -> None:
        feed = self._feeds.get(deployment_id)
        if feed is not None:
            feed.publish(event)

    async def events(self, deployment_id: str) -> list[dict[str, Any]]:
        await self.get(deployment_id)
        return await self._store.list_deployment_events(deployment_id)

    async def watch(self, deployment_id: str) -> tuple[Feed, Viewer, list[dict[str, Any]]]:
        """Subscribes first, then reads the history, so no event falls between the two."""
        await self.get(deployment_id)
        feed = self._feeds.setdefault(deployment_id, Feed())
        viewer = feed.subscribe()
        history = await self._store.list_deployment_events(deployment_id)
        return feed, viewer, history

    def unwatch(self, deployment_id: str, feed: Feed, viewer: Viewer) -> None:
        if feed.unsubscribe(viewer) and self._feeds.get(deployment_id) is feed:
            del self._feeds[deployment_id]

    def is_running(self, deployment_id: str) -> bool:
        return deployment_id in self._runs
