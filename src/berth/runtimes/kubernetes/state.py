"""One ``ContainerStatus`` per Deployment, derived from the Deployment, its pods and its Service
(§15.7 with the §17 #37-#39 corrections). Pure functions over API objects (dicts)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from berth.imageref import split_name_tag
from berth.model import ContainerRef, ContainerState, ContainerStatus, PortMapping, frozen_map
from berth.runtimes.kubernetes.manifests import APP_LABEL

Obj = dict[str, Any]


def ref_of(obj: Obj) -> ContainerRef:
    meta = obj["metadata"]
    return ContainerRef(meta.get("namespace", ""), meta["name"])


def app_of(pod: Obj) -> str | None:
    labels = pod["metadata"].get("labels") or {}
    value = labels.get(APP_LABEL)
    return str(value) if value else None


def _timestamp(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def newest_pod(pods: Iterable[Obj]) -> Obj | None:
    """The newest pod, preferring pods that are not being deleted."""
    ranked = sorted(
        pods,
        key=lambda p: (
            "deletionTimestamp" not in p["metadata"],
            p["metadata"].get("creationTimestamp") or "",
            p["metadata"].get("name", ""),
        ),
    )
    return ranked[-1] if ranked else None


def main_container_status(pod: Obj, container_name: str) -> Obj | None:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    for status in statuses:
        if status.get("name") == container_name:
            return dict(status)
    return dict(statuses[0]) if statuses else None


def pod_state(pod: Obj, container_name: str) -> tuple[ContainerState, str]:
    """RUNNING/WAITING/EXITED with the reason text, from the main container (or the pod)."""
    status = main_container_status(pod, container_name)
    if status is not None:
        state = status.get("state") or {}
        if "running" in state:
            return ContainerState.RUNNING, "Started"
        if "terminated" in state:
            return ContainerState.EXITED, str(state["terminated"].get("reason") or "Terminated")
        if "waiting" in state:
            return ContainerState.WAITING, str(state["waiting"].get("reason") or "Waiting")
    # no container status yet (Pending, not scheduled): WAITING with the pod's own reason (§17 #39)
    pod_status = pod.get("status") or {}
    for condition in pod_status.get("conditions") or []:
        if condition.get("status") != "True" and condition.get("reason"):
            return ContainerState.WAITING, str(condition["reason"])
    return ContainerState.WAITING, str(pod_status.get("reason") or pod_status.get("phase") or "Pending")


def service_ports(service: Obj | None) -> tuple[PortMapping, ...]:
    if service is None:
        return ()
    mappings = []
    for port in (service.get("spec") or {}).get("ports") or []:
        target = port.get("targetPort", port.get("port"))
        internal = target if isinstance(target, int) else port.get("port", 0)
        mappings.append(PortMapping(internal=int(internal), external=int(port.get("port", 0))))
    return tuple(mappings)


def derive(deployment: Obj, pods: Iterable[Obj], service: Obj | None) -> ContainerStatus:
    meta = deployment["metadata"]
    name = meta["name"]
    template = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    containers = template.get("containers") or [{}]
    main = next((c for c in containers if c.get("name") == name), containers[0])
    image_name, image_tag = split_name_tag(str(main.get("image", "")))
    pod = newest_pod(p for p in pods if app_of(p) == name)
    if pod is None:
        state, reason = ContainerState.EXITED, ""
    else:
        state, reason = pod_state(pod, name)
    return ContainerStatus(
        ref=ref_of(deployment),
        state=state,
        reason=reason,
        status="",
        command=" ".join(main.get("command") or []),
        created_at=_timestamp(meta.get("creationTimestamp")),
        image_name=image_name,
        image_tag=image_tag,
        ports=service_ports(service),
        labels=frozen_map(meta.get("labels") or {}),
    )
