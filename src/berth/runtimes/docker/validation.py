"""Checks on a deploy request before anything touches the engine (§6.3 #1, ports, volumes)."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Final

from berth.errors import InvalidSpec
from berth.model import DeploymentSpec, WorkloadSpec
from berth.names import check_unique, checked_label

MAX_PORT: Final = 65535


def container_name(prefix: str, name: str) -> str:
    """``<prefix>-<name>``, both checked (§6.3 #1: an empty prefix is invalid for deploy)."""
    checked_label("prefix", prefix)
    return checked_label("container name", f"{prefix}-{name}")


def _check_port(field: str, port: int, *, allow_zero: bool = False) -> None:
    low = 0 if allow_zero else 1
    if not low <= port <= MAX_PORT:
        raise InvalidSpec(field, f"{port} is outside {low}..{MAX_PORT}")


def check_volume_name(name: str) -> None:
    """A relative name must stay inside the workload's data folder: no ``..`` segment, no NUL.
    An absolute name is a host path the deployment asks for on purpose (dagent semantics)."""
    if not name or "\x00" in name:
        raise InvalidSpec("volume name", f"{name!r} is empty or contains NUL")
    parts = PurePosixPath(name).parts
    if ".." in parts or name.startswith("~"):
        raise InvalidSpec("volume name", f"{name!r} escapes the data folder")


def check_workload(workload: WorkloadSpec) -> None:
    container_name(workload.prefix, workload.name)
    for port in workload.ports:
        _check_port("port", port.internal)
        if port.external:
            _check_port("external port", port.external)
    for binding in workload.port_ranges:
        for rng, what in ((binding.internal, "internal"), (binding.external, "external")):
            _check_port(f"{what} port range", rng.start)
            _check_port(f"{what} port range", rng.end)
            if rng.end < rng.start:
                raise InvalidSpec(f"{what} port range", f"{rng.start}-{rng.end} ends before it starts")
        if binding.internal.end - binding.internal.start != binding.external.end - binding.external.start:
            raise InvalidSpec(
                "port range",
                f"{binding.external.start}-{binding.external.end}:"
                f"{binding.internal.start}-{binding.internal.end} have different lengths",
            )
    check_unique("volume", (v.name for v in workload.volumes))
    for volume in workload.volumes:
        check_volume_name(volume.name)
        if not volume.path.startswith("/"):
            raise InvalidSpec("volume path", f"{volume.path!r} of {volume.name!r} is not absolute")
    check_unique("init container", (i.name for i in workload.init_containers))
    for init in workload.init_containers:
        container_name(workload.prefix, f"{workload.name}-{init.name}")
        for link in init.volumes:
            if not link.path.startswith("/"):
                raise InvalidSpec("init container volume path", f"{link.path!r} is not absolute")


def check_deployment(deployment: DeploymentSpec) -> None:
    """Every workload of the request, plus duplicate names (two workloads, one container)."""
    check_unique("container name", (w.ref.key for w in deployment.workloads))
    for workload in deployment.workloads:
        check_workload(workload)
