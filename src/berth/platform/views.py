"""The API's JSON shapes (the seed's field names), built from stored records and live status.
Write-only values (registry passwords, secret values, install tokens) never appear here."""

from __future__ import annotations

import copy
from typing import Any

from berth.platform.models import DeploymentRecord, InstanceRecord, InstanceState, NodeRecord, RegistryRecord
from berth.platform.services.nodes import InstallView, LiveStatus


def install(view: InstallView) -> dict[str, Any]:
    return {
        "command": view.command,
        "type": view.node_type,
        "scriptType": view.script_type,
        "expireAt": view.expires_at,
    }


def node(
    record: NodeRecord, live: LiveStatus, install_view: InstallView | None = None, *, detailed: bool = False
) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": record.id,
        "name": record.name,
        "description": record.description,
        "icon": record.icon,
        "type": record.type,
        "status": live.status,
        "address": record.address if live.connected else "",
        "connectedAt": record.connected_at if live.connected else None,
        "version": record.version,
        "updating": live.updating,
        "outdated": live.outdated,
    }
    if detailed:
        view["hasToken"] = record.nonce is not None
        view["containerName"] = record.container_name
        view["install"] = install(install_view) if install_view is not None else None
    return view


def registry(record: RegistryRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "url": record.url,
        "user": record.user,
        "description": record.description,
        "hasPassword": bool(record.password),
        "createdAt": record.created_at,
    }


def instance(record: InstanceRecord, state: InstanceState | None) -> dict[str, Any]:
    config = copy.deepcopy(record.config)
    secrets = config.get("common", {}).get("secrets")
    if isinstance(secrets, dict):  # secret values are write-only, like registry passwords
        config["common"]["secrets"] = dict.fromkeys(secrets, "")
    return {
        "id": record.id,
        "image": {"name": record.image, "tag": record.tag, "registryId": record.registry_id},
        "config": config,
        "state": state.state if state else None,
        "reason": state.reason if state else "",
        "updatedAt": state.updated_at if state else None,
    }


def deployment(
    record: DeploymentRecord,
    node_name: str,
    instances: list[InstanceRecord],
    states: dict[str, InstanceState],
) -> dict[str, Any]:
    return {
        "id": record.id,
        "node": {"id": record.node_id, "name": node_name},
        "prefix": record.prefix,
        "status": record.status,
        "note": record.note,
        "versionName": record.version_name,
        "releaseNotes": record.release_notes,
        "secretKeys": sorted(record.secrets),
        "createdAt": record.created_at,
        "updatedAt": record.updated_at,
        "instances": [instance(i, states.get(i.id)) for i in instances],
    }
