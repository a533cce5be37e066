"""Docker containers as ``ContainerStatus`` items (§7 mapping and id rule)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from berth.imageref import split_name_tag
from berth.model import ContainerRef, ContainerState, ContainerStatus, PortMapping, frozen_map

_STATES: Final = {
    "running": ContainerState.RUNNING,
    "created": ContainerState.WAITING,
    "restarting": ContainerState.WAITING,
    "removing": ContainerState.WAITING,
    "paused": ContainerState.WAITING,
    "exited": ContainerState.EXITED,
    "dead": ContainerState.EXITED,
    # podman's compat API also reports these
    "configured": ContainerState.WAITING,
    "initialized": ContainerState.WAITING,
    "stopped": ContainerState.EXITED,
    "stopping": ContainerState.WAITING,
}


_HEALTH_MARKS: Final = (
    ("(health: starting)", "starting"),
    ("(unhealthy)", "unhealthy"),
    ("(healthy)", "healthy"),
)


def health_of(docker_status: str) -> str:
    """The health in Docker's human status ("Up 5 seconds (healthy)"), or ``""``."""
    return next((health for mark, health in _HEALTH_MARKS if docker_status.endswith(mark)), "")


def state_of(docker_state: str) -> ContainerState:
    return _STATES.get(docker_state.lower(), ContainerState.UNSPECIFIED)


def ref_for(full_name: str, watched_prefix: str | None) -> ContainerRef:
    """§7: watching ``P`` gives ``{P, name without "P-"}``; watching all gives ``{"", name}``.
    Either way K(id) is the full container name."""
    full_name = full_name.lstrip("/")
    if watched_prefix and full_name.startswith(f"{watched_prefix}-"):
        return ContainerRef(watched_prefix, full_name[len(watched_prefix) + 1 :])
    return ContainerRef("", full_name)


def status_from_summary(summary: Mapping[str, Any], watched_prefix: str | None) -> ContainerStatus:
    """One entry of ``GET /containers/json`` (cheap: the whole list is one call)."""
    names = summary.get("Names") or [summary.get("Id", "")[:12]]
    image_name, image_tag = split_name_tag(str(summary.get("Image", "")))
    raw_state = str(summary.get("State", ""))
    health = health_of(str(summary.get("Status", "")))
    created = summary.get("Created")
    seen: set[tuple[int, int]] = set()
    ports: list[PortMapping] = []
    for port in summary.get("Ports") or ():
        mapping = (int(port.get("PrivatePort", 0)), int(port.get("PublicPort", 0) or 0))
        if mapping not in seen:  # IPv4 and IPv6 bindings of one mapping
            seen.add(mapping)
            ports.append(PortMapping(*mapping))
    return ContainerStatus(
        ref=ref_for(str(names[0]), watched_prefix),
        state=state_of(raw_state),
        reason=f"{raw_state} ({health})" if health else raw_state,
        status=str(summary.get("Status", "")),
        command=str(summary.get("Command", "")),
        created_at=datetime.fromtimestamp(int(created), UTC) if created else None,
        image_name=image_name,
        image_tag=image_tag,
        ports=tuple(ports),
        labels=frozen_map(summary.get("Labels") or {}),
    )
