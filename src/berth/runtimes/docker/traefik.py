"""Traefik routing labels for exposed workloads (§14.4, with the §17 #19 fix) and the optional
boot container."""

from __future__ import annotations

from typing import Any, Final

from berth.errors import InvalidSpec
from berth.model import ExposeStrategy, Routing, WorkloadSpec
from berth.runtimes.docker.mounts import size_in_bytes
from berth.settings import DockerSettings

TRAEFIK_IMAGE: Final = "docker.io/library/traefik:v2.8.0"
TRAEFIK_NAME: Final = "traefik"
ROLE_LABEL: Final = "io.berth.role"  # marks containers the agent runs for itself
TRAEFIK_ROLE: Final = "traefik"


def is_exposed(workload: WorkloadSpec) -> bool:
    return workload.expose in (ExposeStrategy.EXPOSE, ExposeStrategy.EXPOSE_WITH_TLS)


def routing_labels(workload: WorkloadSpec, settings: DockerSettings) -> dict[str, str]:
    if not is_exposed(workload):
        return {}
    svc = f"{workload.prefix}-{workload.name}"
    routing = workload.routing
    path = routing.path if routing and routing.path else None
    rule = _rule(workload, settings, path)
    labels = {
        "traefik.enable": "true",
        f"traefik.http.routers.{svc}.rule": rule,
        f"traefik.http.routers.{svc}.entrypoints": "web",
    }
    middlewares = _middlewares(svc, routing, path, labels)
    if routing and routing.port:
        if routing.port not in {p.internal for p in workload.ports}:
            raise InvalidSpec("routing port", f"{routing.port} is not one of the workload's ports")
        labels[f"traefik.http.services.{svc}.loadbalancer.server.port"] = str(routing.port)
    if middlewares:
        labels[f"traefik.http.routers.{svc}.middlewares"] = ",".join(middlewares)
    if workload.expose is ExposeStrategy.EXPOSE_WITH_TLS:
        labels[f"traefik.http.routers.{svc}-secure.entrypoints"] = "websecure"
        labels[f"traefik.http.routers.{svc}-secure.rule"] = rule
        labels[f"traefik.http.routers.{svc}-secure.tls"] = "true"
        labels[f"traefik.http.routers.{svc}-secure.tls.certresolver"] = "le"
        if middlewares:
            labels[f"traefik.http.routers.{svc}-secure.middlewares"] = ",".join(middlewares)
    return labels


def _rule(workload: WorkloadSpec, settings: DockerSettings, path: str | None) -> str:
    """The router rule: the workload's domain (or one under ``ROOT_DOMAIN``) and its path."""
    routing = workload.routing
    host = routing.domain if routing and routing.domain else None
    if host is None and settings.root_domain:
        host = f"{workload.name}.{workload.prefix}.{settings.root_domain}"
    rules = []
    if host:
        rules.append(f"Host(`{host}`)")
    if path:
        rules.append(f"PathPrefix(`{path}`)")
    if not rules:
        raise InvalidSpec(
            "routing", "not enough configuration to be routable (no domain, path or ROOT_DOMAIN)"
        )
    return " && ".join(rules)


def _middlewares(svc: str, routing: Routing | None, path: str | None, labels: dict[str, str]) -> list[str]:
    """The path stripper and upload limit, declared in ``labels``; their names in order."""
    middlewares: list[str] = []
    if routing and routing.strip_path and path:
        labels[f"traefik.http.middlewares.{svc}-stripper.stripprefix.prefixes"] = path
        middlewares.append(f"{svc}-stripper")
    if routing and routing.upload_limit:
        limit = size_in_bytes("routing uploadLimit", routing.upload_limit)
        labels[f"traefik.http.middlewares.{svc}-limit.buffering.maxRequestBodyBytes"] = str(limit)
        middlewares.append(f"{svc}-limit")
    return middlewares


def boot_container_config(settings: DockerSettings) -> dict[str, Any]:
    """``create_container`` arguments of the Traefik boot container (§14.4); host config keys
    are returned under ``host_config`` as plain values for ``create_host_config``."""
    data = settings.data_mount_path
    binds = [
        f"{settings.host_docker_sock_path}:/var/run/docker.sock:ro",
        f"{data}/traefik/logs:/var/log/traefik:rw",
    ]
    command = [
        f"--entrypoints.web.address=:{settings.traefik_port}",
        "--accesslog=true",
        "--log.filepath=/var/log/traefik/traefik.log",
        f"--log.level={settings.traefik_log_level}",
        "--providers.docker=true",
        "--providers.docker.exposedbydefault=false",
    ]
    if settings.traefik_log_level.upper() == "DEBUG":
        command += ["--api.insecure=true", "--api.dashboard=true"]
    if settings.traefik_tls:
        binds.append(f"{data}/traefik/letsencrypt:/letsencrypt:rw")
        command += [
            f"--entrypoints.websecure.address=:{settings.traefik_tls_port}",
            "--certificatesresolvers.le.acme.httpchallenge=true",
            "--certificatesresolvers.le.acme.httpchallenge.entrypoint=web",
            "--certificatesresolvers.le.acme.storage=/letsencrypt/acme.json",
            f"--certificatesresolvers.le.acme.email={settings.traefik_acme_mail}",
        ]
    return {
        "image": TRAEFIK_IMAGE,
        "name": TRAEFIK_NAME,
        "command": command,
        "labels": {ROLE_LABEL: TRAEFIK_ROLE},
        "host_config": {
            "network_mode": "host",
            "restart_policy": {"Name": "always"},
            "binds": binds,
        },
    }
