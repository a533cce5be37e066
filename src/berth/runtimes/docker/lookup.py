"""The §11 lookup shared by inspect, logs, commands and delete. Blocking: run in a thread."""

from __future__ import annotations

from typing import Any

import docker
import docker.errors

from berth.model import PREFIX_LABEL, ContainerRef


def find_container(client: docker.DockerClient, ref: ContainerRef) -> dict[str, Any] | None:
    """The inspect document of the target, or ``None``.

    ``("", "p-web")`` is the container named exactly ``p-web``; ``("p", "web")`` is ``p-web`` when it
    carries the prefix label ``p`` (a container without the label is accepted too, a label with
    another prefix is not). Docker also resolves ids and id prefixes: only an exact name counts.
    """
    if not ref.name:
        return None
    full = ref.key
    try:
        attrs: dict[str, Any] = client.api.inspect_container(full)
    except docker.errors.NotFound:
        return None
    if str(attrs.get("Name", "")).lstrip("/") != full:
        return None
    if ref.prefix:
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        if labels.get(PREFIX_LABEL, ref.prefix) != ref.prefix:
            return None
    return attrs


def prefix_container_ids(client: docker.DockerClient, prefix: str) -> list[dict[str, Any]]:
    """Summaries of every container labelled with the prefix."""
    result: list[dict[str, Any]] = client.api.containers(
        all=True, filters={"label": f"{PREFIX_LABEL}={prefix}"}
    )
    return result
