"""What a Docker node does with the parts of a deploy request written for Kubernetes (the ``crane``
block) or that Docker has no equivalent for: honour it where Docker has an equivalent the user
set (resource limits, a health check), and otherwise say so on the deployment's event log.

``ignored_fields`` names every field the container will not honour, with the reason, one line
each; the deployer sends them as one WARNING message. The platform always sends the ``crane``
block with its defaults (§6.1), so only values that differ from "not set" are reported.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Any, Final

from berth.errors import InvalidSpec
from berth.model import (
    DeploymentStrategy,
    Marker,
    NetworkMode,
    VolumeType,
    WorkloadSpec,
)
from berth.runtimes.docker.traefik import is_exposed
from berth.settings import DockerSettings

_QUANTITY: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?\s*$")
_BINARY: Final = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL: Final = {"k": 1, "M": 2, "G": 3, "T": 4, "P": 5, "E": 6}
_NANOS_PER_CPU: Final = 1_000_000_000
_SHARES_PER_CPU: Final = 1024  # what kubelet writes to cpu.shares for a CPU request
_MIN_SHARES: Final = 2
_NANOS_PER_S: Final = 1_000_000_000
HEALTH_INTERVAL_S: Final = 10  # Kubernetes' default probe period
HEALTH_TIMEOUT_S: Final = 5
HEALTH_RETRIES: Final = 3
HEALTH_START_PERIOD_S: Final = 30  # the Kubernetes runtime's initial probe delay


def _quantity(field: str, text: str) -> tuple[float, str]:
    match = _QUANTITY.match(text)
    if not match:
        raise InvalidSpec(field, f"{text!r} is not a Kubernetes quantity such as 500m, 1, 128Mi or 1G")
    return float(match.group(1)), match.group(2) or ""


def memory_bytes(field: str, text: str) -> int:
    """``128Mi`` = 128 MiB, ``1G`` = 10^9 bytes, a plain number = bytes (Kubernetes rules)."""
    number, unit = _quantity(field, text)
    if unit == "m":
        raise InvalidSpec(field, f"{text!r}: milli-bytes make no sense for memory")
    if unit in _BINARY:
        return int(number * 1024 ** _BINARY[unit])
    if unit in _DECIMAL:
        return int(number * 1000 ** _DECIMAL[unit])
    return int(number)


def cpu_nanos(field: str, text: str) -> int:
    """``500m`` = half a CPU, ``2`` = two CPUs, in the Engine API's nano-CPUs."""
    number, unit = _quantity(field, text)
    if unit not in ("", "m"):
        raise InvalidSpec(field, f"{text!r} is not a CPU quantity (such as 500m or 2)")
    cpus = number / 1000 if unit == "m" else number
    return int(cpus * _NANOS_PER_CPU)


def resource_limits(workload: WorkloadSpec) -> dict[str, Any]:
    """``crane.resourceConfig`` as host-config arguments: limits.memory → memory limit,
    limits.cpu → CPU quota (``--cpus``), requests.memory → memory reservation, requests.cpu →
    CPU shares (1024 per CPU, as kubelet maps a request). Only what the user set."""
    config = workload.kubernetes.resources
    host: dict[str, Any] = {}
    if config is None:
        return host
    if config.limits is not None:
        if config.limits.memory:
            host["mem_limit"] = memory_bytes("crane.resourceConfig.limits.memory", config.limits.memory)
        if config.limits.cpu:
            nanos = cpu_nanos("crane.resourceConfig.limits.cpu", config.limits.cpu)
            if nanos > 0:  # "0" means no CPU limit
                host["nano_cpus"] = nanos
    if config.requests is not None:
        if config.requests.memory:
            host["mem_reservation"] = memory_bytes(
                "crane.resourceConfig.requests.memory", config.requests.memory
            )
        if config.requests.cpu:
            nanos = cpu_nanos("crane.resourceConfig.requests.cpu", config.requests.cpu)
            host["cpu_shares"] = max(_MIN_SHARES, nanos * _SHARES_PER_CPU // _NANOS_PER_CPU)
    return host


@dataclass(frozen=True, slots=True)
class HealthPlan:
    """A Docker health check derived from ``crane.healthCheckConfig``."""

    healthcheck: dict[str, Any]
    url: str
    source: str  # which probe path it tests
    unused: tuple[str, ...]  # probe fields Docker cannot express separately


def health_check(workload: WorkloadSpec) -> HealthPlan | None:
    """An HTTP GET on ``127.0.0.1:<port><path>`` from inside the container (``wget`` or ``curl``
    from the image), for the first of liveness, readiness and startup paths that is set. The
    port is the check's own or the first port of the workload, as on Kubernetes."""
    check = workload.kubernetes.health_check
    if check is None:
        return None
    paths = (
        ("livenessProbe", check.liveness_path),
        ("readinessProbe", check.readiness_path),
        ("startupProbe", check.startup_path),
    )
    wanted = [(name, path) for name, path in paths if path]
    if not wanted:
        return None
    port = check.port or (workload.ports[0].internal if workload.ports else None)
    if port is None:
        return None
    source, path = wanted[0]
    url = f"http://127.0.0.1:{port}{path if path.startswith('/') else '/' + path}"
    quoted = shlex.quote(url)
    command = f"wget -q -O /dev/null {quoted} || curl -fsS -o /dev/null {quoted}"
    healthcheck = {
        "test": ["CMD-SHELL", command],
        "interval": HEALTH_INTERVAL_S * _NANOS_PER_S,
        "timeout": HEALTH_TIMEOUT_S * _NANOS_PER_S,
        "retries": HEALTH_RETRIES,
        "start_period": HEALTH_START_PERIOD_S * _NANOS_PER_S,
    }
    return HealthPlan(healthcheck, url, source, tuple(name for name, _ in wanted[1:]))


def _marker_set(marker: Marker | None) -> bool:
    return marker is not None and bool(marker.deployment or marker.service or marker.ingress)


def _crane_warnings(workload: WorkloadSpec) -> list[str]:
    crane = workload.kubernetes
    lines: list[str] = []
    if crane.deployment_strategy is DeploymentStrategy.ROLLING_UPDATE:
        lines.append(
            "crane.deploymentStrategy ROLLING_UPDATE: not honoured on Docker; the container is "
            "replaced (the old one stopped, then the new one started)"
        )
    check = crane.health_check
    if check is not None and (check.liveness_path or check.readiness_path or check.startup_path):
        plan = health_check(workload)
        if plan is None:
            lines.append(
                "crane.healthCheckConfig: not honoured on Docker: no port (set healthCheckConfig.port "
                "or a port of the workload)"
            )
        else:
            lines.extend(
                f"crane.healthCheckConfig.{name}: not honoured on Docker, which has one health check "
                f"per container (it tests the {plan.source} path)"
                for name in plan.unused
            )
    checks = (
        ("proxyHeaders", crane.proxy_headers, "Traefik on Docker forwards the proxy headers itself"),
        ("useLoadBalancer", crane.use_load_balancer, "a LoadBalancer Service is a Kubernetes object"),
        ("annotations", _marker_set(crane.annotations), "annotations are Kubernetes metadata"),
        ("labels", _marker_set(crane.labels), "use dagent.labels for container labels on Docker"),
        ("metrics", crane.metrics is not None, "a ServiceMonitor needs the Prometheus Operator"),
        ("customHeaders", bool(crane.custom_headers), "ingress headers are a Kubernetes Ingress setting"),
        (
            "extraLBAnnotations",
            bool(crane.extra_lb_annotations),
            "load-balancer annotations are Kubernetes metadata",
        ),
    )
    lines.extend(f"crane.{name}: not honoured on Docker ({why})" for name, is_set, why in checks if is_set)
    return lines


def ignored_fields(workload: WorkloadSpec, settings: DockerSettings) -> list[str]:
    """One line per field of the request this Docker node does not honour, naming it and why."""
    lines: list[str] = []
    if workload.config_container is not None:
        lines.append(
            "configContainer: not honoured on Docker (no config-loader container runs; "
            "use an init container with useParentConfig and a volume)"
        )
    for volume in workload.volumes:
        where = f"volumes[{volume.name}]"
        if volume.type is VolumeType.SECRET:
            lines.append(
                f"{where}.type SECRET: Docker has no secret volumes; {volume.path} is a plain "
                "folder in the data folder (pass secrets as environment)"
            )
        if volume.size and volume.type not in (VolumeType.MEM, VolumeType.TMP):
            lines.append(f"{where}.size: a bind-mounted folder has no size limit on Docker")
        if volume.storage_class:
            lines.append(f"{where}.class: storage classes are a Kubernetes setting; a folder is bound")
    mode = workload.docker.network_mode
    if mode in (NetworkMode.HOST, NetworkMode.NONE):
        if workload.docker.networks:
            lines.append(
                f"dagent.networks {', '.join(workload.docker.networks)}: not joined, the container "
                f"uses networkMode {mode.name}"
            )
        if any(p.external for p in workload.ports) or workload.port_ranges:
            lines.append(
                f"ports[].external / portRanges: not published with networkMode {mode.name} "
                "(on HOST the container listens on the host's ports directly)"
            )
    routing = workload.routing
    if routing is not None and (routing.domain or routing.path) and not is_exposed(workload):
        lines.append("routing: not used, the workload is not exposed (set expose to route it)")
    if is_exposed(workload) and not settings.traefik_enabled:
        lines.append(
            "expose: TRAEFIK_ENABLED is off on this node; the routing labels are set, but only a "
            "Traefik that watches this engine routes them"
        )
    lines.extend(_crane_warnings(workload))
    return lines


def honoured_notes(workload: WorkloadSpec) -> list[str]:
    """INFO lines for the ``crane`` values Docker honours, so the log says where they went."""
    notes: list[str] = []
    limits = resource_limits(workload)
    names = {
        "mem_limit": "memory limit",
        "nano_cpus": "CPU limit (nano-CPUs)",
        "mem_reservation": "memory reservation",
        "cpu_shares": "CPU shares",
    }
    notes.extend(f"crane.resourceConfig → Docker {names[key]}: {value}" for key, value in limits.items())
    plan = health_check(workload)
    if plan is not None:
        notes.append(
            f"crane.healthCheckConfig.{plan.source} → Docker health check: GET {plan.url} "
            "from inside the container (needs wget or curl in the image)"
        )
    return notes
