"""Rolling a failed rollout back to the previous ReplicaSet's pod template (what ``kubectl
rollout undo`` does), so a failed deploy does not leave a Deployment half-way between two
versions."""

from __future__ import annotations

import copy
from typing import Any, Final

import structlog

from berth.model import LogLevel
from berth.runtimes.base import DeployEvents
from berth.runtimes.common.bridge import ThreadBridge
from berth.runtimes.kubernetes import resources
from berth.runtimes.kubernetes.api import KubeApi
from berth.runtimes.kubernetes.api_errors import Request

log = structlog.get_logger(__name__)
Obj = dict[str, Any]
REVISION_ANNOTATION: Final = "deployment.kubernetes.io/revision"
TEMPLATE_HASH_LABEL: Final = "pod-template-hash"
JSON_PATCH: Final = "application/json-patch+json"


def revision(obj: Obj) -> int:
    raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(REVISION_ANNOTATION, "0")
    try:
        return int(raw)
    except ValueError:
        return 0


def previous_replica_set(deployment: Obj, replica_sets: list[Obj]) -> Obj | None:
    """The deployment's own ReplicaSet with the highest revision below the current one."""
    uid = deployment["metadata"].get("uid")
    current = revision(deployment)
    owned = [
        rs
        for rs in replica_sets
        if any(ref.get("uid") == uid for ref in rs["metadata"].get("ownerReferences") or [])
        and 0 < revision(rs) < current
    ]
    return max(owned, key=revision, default=None)


def template_of(replica_set: Obj) -> Obj:
    template: Obj = copy.deepcopy(replica_set["spec"]["template"])
    labels = (template.get("metadata") or {}).get("labels") or {}
    labels.pop(TEMPLATE_HASH_LABEL, None)
    return template


def _images(template: Obj) -> str:
    return ", ".join(str(c.get("image", "?")) for c in (template.get("spec") or {}).get("containers") or [])


async def roll_back(
    api: KubeApi, bridge: ThreadBridge, namespace: str, name: str, events: DeployEvents
) -> bool:
    """Put the previous ReplicaSet's template back; ``False`` (and a warning) when there is none."""
    deployment = await bridge.call(api.get, resources.DEPLOYMENT, namespace, name)
    selector = (deployment.get("spec") or {}).get("selector", {}).get("matchLabels") or {}
    listed = await bridge.call(
        api.list,
        resources.REPLICA_SET,
        namespace,
        label_selector=",".join(f"{k}={v}" for k, v in sorted(selector.items())),
    )
    previous = previous_replica_set(deployment, list(listed.get("items") or []))
    if previous is None:
        await events.log(LogLevel.WARNING, f"No previous version of {namespace}/{name} to roll back to")
        return False
    template = template_of(previous)
    patch = [{"op": "replace", "path": "/spec/template", "value": template}]
    await bridge.call(
        api.call,
        Request("patch", resources.DEPLOYMENT, namespace, name),
        "PATCH",
        resources.DEPLOYMENT.path(namespace, name),
        query=[("fieldManager", api.field_manager)],
        body=patch,
        content_type=JSON_PATCH,
    )
    rs_name = previous["metadata"]["name"]
    await events.log(
        LogLevel.WARNING,
        f"Rolled back {namespace}/{name} to revision {revision(previous)} "
        f"(ReplicaSet {rs_name}, {_images(template)})",
    )
    log.warning("kube_rolled_back", workload=f"{namespace}/{name}", replica_set=rs_name)
    return True
