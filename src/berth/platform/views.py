"""The API's JSON shapes (the seed's field names), built from stored records and live status.
Write-only values (registry passwords, secret values, install tokens) never appear here."""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

from berth.platform.models import DeploymentRecord, InstanceRecord, InstanceState, NodeRecord, RegistryRecord
from berth.platform.services.nodes import InstallView, LiveStatus


def _fields(record: BaseModel, *names: str) -> dict[str, Any]:
    """The named fields of a stored record under the API's camelCase names."""
    return {_camel_case(name): getattr(record, name) for name in names}


def _camel_case(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(word.capitalize() for word in rest)


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
        **_fields(record, "id", "name", "description", "icon", "type", "version"),
        "status": live.status,
        "address": record.address if live.connected else "",
        "connectedAt": record.connected_at if live.connected else None,
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
        **_fields(record, "id", "name", "url", "user", "description", "created_at"),
        "hasPassword": bool(record.password),
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
        **_fields(record, "id", "prefix", "status", "note", "version_name", "release_notes"),
        **_fields(record, "created_at", "updated_at"),
        "node": {"id": record.node_id, "name": node_name},
        "secretKeys": sorted(record.secrets),
        "instances": [instance(i, states.get(i.id)) for i in instances],
    }
