"""The mapping of one workload to a Docker container configuration (§6.3 #6-7, §14, §18)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from berth.imageref import ImageReference
from berth.model import (
    MANAGED_LABEL,
    PREFIX_LABEL,
    SECRET_KEYS_LABEL,
    NetworkMode,
    RestartPolicy,
    WorkloadSpec,
)
from berth.runtimes.docker.compat import health_check, resource_limits
from berth.runtimes.docker.mounts import MountPlan
from berth.runtimes.docker.traefik import routing_labels
from berth.settings import DockerSettings

CAPABILITY_LABEL: Final = "io.dyrector.cap.network.v1"
HOST_GATEWAY: Final = "host.docker.internal:host-gateway"

_RESTART: Final = {
    RestartPolicy.NO: "no",
    RestartPolicy.ON_FAILURE: "on-failure",
    RestartPolicy.ALWAYS: "always",
    RestartPolicy.UNLESS_STOPPED: "unless-stopped",
}


def restart_policy_name(policy: RestartPolicy | None) -> str:
    return _RESTART.get(policy, "unless-stopped") if policy is not None else "unless-stopped"


def network_mode_name(mode: NetworkMode | None) -> str | None:
    """``host``/``none``; ``None`` means the default bridge (plus ``dagent.networks``)."""
    if mode is NetworkMode.HOST:
        return "host"
    if mode is NetworkMode.NONE:
        return "none"
    return None


def capability_ports(image_labels: Mapping[str, str]) -> list[int]:
    """Ports an image asks to publish through ``io.dyrector.cap.network.v1``; a malformed label
    is ignored (it is the image author's metadata, not the request)."""
    raw = image_labels.get(CAPABILITY_LABEL)
    if not raw:
        return []
    try:
        ports = json.loads(raw).get("ports", [])
        return [int(p["listening"]) for p in ports if isinstance(p, dict) and "listening" in p]
    except (ValueError, TypeError, AttributeError):
        return []


def environment_list(workload: WorkloadSpec) -> list[str]:
    """Plain env, then the decrypted secrets overriding same-named keys (§6.3 #3)."""
    merged: dict[str, str] = dict(workload.environment)
    merged.update(workload.secrets)
    return [f"{key}={value}" for key, value in merged.items()]


def _host_port(settings: DockerSettings, port: int) -> int | tuple[str, int]:
    """A bare port binds every address family the engine serves (IPv4 and IPv6), as
    ``docker run -p`` does; ``BERTH_PUBLISH_HOST_IP`` pins one address."""
    return (settings.publish_host_ip, port) if settings.publish_host_ip else port


@dataclass(frozen=True, slots=True)
class ContainerPlan:
    name: str
    image: str
    create: dict[str, Any]  # create_container keyword arguments except host_config
    host: dict[str, Any]  # create_host_config keyword arguments
    networks: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)


def _ports(
    workload: WorkloadSpec, settings: DockerSettings, image_labels: Mapping[str, str]
) -> tuple[list[tuple[int, str]], dict[str, Any]]:
    """The exposed ports and their host bindings: the image's capability ports (random host
    ports), the workload's ports and port ranges.

    The SDK's ``ports`` takes (port, protocol) tuples; a "8080/tcp" string would become
    "8080/tcp/tcp" there. ``port_bindings`` keys take the "port/protocol" form."""
    exposed: list[tuple[int, str]] = []
    bindings: dict[str, Any] = {}
    for port in capability_ports(image_labels):
        exposed.append((port, "tcp"))
        bindings[f"{port}/tcp"] = None  # a random host port
    for p in workload.ports:
        exposed.append((p.internal, "tcp"))
        if p.external:
            bindings[f"{p.internal}/tcp"] = _host_port(settings, p.external)
    for binding in workload.port_ranges:
        for offset in range(binding.internal.end - binding.internal.start + 1):
            internal = binding.internal.start + offset
            exposed.append((internal, "tcp"))
            bindings[f"{internal}/tcp"] = _host_port(settings, binding.external.start + offset)
    return exposed, bindings


def _process_options(workload: WorkloadSpec) -> dict[str, Any]:
    """What the container's process runs as: health check, entrypoint, command, folder, user."""
    options: dict[str, Any] = {}
    health = health_check(workload)
    if health is not None:
        options["healthcheck"] = health.healthcheck
    if workload.commands:
        options["entrypoint"] = list(workload.commands)
    if workload.args:
        options["command"] = list(workload.args)
    if workload.working_directory:
        options["working_dir"] = workload.working_directory
    if workload.user is not None and workload.user >= 0:
        options["user"] = str(workload.user)
    return options


def plan_container(
    workload: WorkloadSpec,
    settings: DockerSettings,
    image: ImageReference,
    image_labels: Mapping[str, str],
    mounts: MountPlan,
) -> ContainerPlan:
    name = f"{workload.prefix}-{workload.name}"
    labels: dict[str, str] = dict(image_labels)
    labels.update(routing_labels(workload, settings))
    labels[PREFIX_LABEL] = workload.prefix
    labels[MANAGED_LABEL] = "true"
    if workload.secrets:
        labels[SECRET_KEYS_LABEL] = ",".join(workload.secrets)
    labels.update(workload.docker.labels)

    exposed, bindings = _ports(workload, settings, image_labels)
    host: dict[str, Any] = {
        "restart_policy": {"Name": restart_policy_name(workload.docker.restart_policy)},
        "extra_hosts": [HOST_GATEWAY],
        "port_bindings": bindings,
        "binds": [b.bind_spec for b in mounts.binds],
        "tmpfs": dict(mounts.tmpfs),
    }
    host.update(resource_limits(workload))
    log_config = workload.docker.log_config
    if log_config is not None and log_config.driver.docker_name is not None:
        host["log_config"] = {"Type": log_config.driver.docker_name, "Config": dict(log_config.options)}
    mode = network_mode_name(workload.docker.network_mode)
    if mode is not None:
        host["network_mode"] = mode
    create: dict[str, Any] = {
        "name": name,
        "hostname": name if mode != "host" else None,
        "labels": labels,
        "environment": environment_list(workload),
        "ports": list(dict.fromkeys(exposed)),
        "tty": workload.tty,
        "detach": True,
    }
    create.update(_process_options(workload))
    # On the default bridge (always kept, so Traefik on the host network reaches exposed
    # workloads) the container also joins each requested network.
    networks = () if mode is not None else workload.docker.networks
    return ContainerPlan(
        name=name,
        image=str(image),
        create=create,
        host=host,
        networks=tuple(networks),
        aliases=(name, workload.name),
        labels=labels,
    )
