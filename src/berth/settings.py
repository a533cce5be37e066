"""Every knob of the agent, with its unit and default.

Environment names are dagent/crane-compatible (so a platform-generated install script starts
Berth unchanged), plus ``BERTH_*`` names of our own. ``load_agent_settings`` raises ``ConfigError``
naming the setting (never its value) when something is invalid; the CLI turns that into exit 2.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Final

from berth.errors import ConfigError

PROTOCOL_VERSION: Final = "0.15.4"
KEEPALIVE_MIN_S: Final = 30.0

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_K8S_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")


def parse_duration_s(name: str, raw: str) -> float:
    """Go-style durations as dagent reads them (``30s``, ``5s``, ``2m``, ``500ms``); bare numbers
    are seconds."""
    match = _DURATION.match(raw)
    if not match:
        raise ConfigError(name, "expected a duration such as 30s, 500ms or 2m")
    value = float(match.group(1))
    unit = match.group(2) or "s"
    return value * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]


def parse_bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(name, "expected true or false")


def parse_quantity(name: str, raw: str) -> str:
    if not _K8S_QUANTITY.match(raw.strip()):
        raise ConfigError(name, "expected a Kubernetes quantity such as 100m, 128Mi or 1G")
    return raw.strip()


class Env:
    """Typed reads from an environment mapping; each error names the variable."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def text(self, name: str, default: str = "") -> str:
        return self._environ.get(name, default)

    def flag(self, name: str, default: bool = False) -> bool:
        raw = self._environ.get(name)
        return default if raw is None else parse_bool(name, raw)

    def duration_s(self, name: str, default: str) -> float:
        return parse_duration_s(name, self._environ.get(name, default))

    def integer(self, name: str, default: int, *, minimum: int | None = None) -> int:
        raw = self._environ.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(name, "expected an integer") from None
        if minimum is not None and value < minimum:
            raise ConfigError(name, f"must be at least {minimum}")
        return value

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self._environ.get(name, default).strip().lower() or default
        if value not in choices:
            raise ConfigError(name, f"expected one of {', '.join(choices)}")
        return value


@dataclass(frozen=True)
class ConnectionSettings:
    grpc_token: str = field(default="", repr=False)
    keepalive_s: float = 30.0  # GRPC_KEEPALIVE, clamped up to 30 s
    keepalive_timeout_s: float = 5.0  # DEFAULT_TIMEOUT
    allow_plaintext: bool = False  # DEBUG=true or BERTH_INSECURE=true
    ca_file: Path | None = None  # BERTH_CA_FILE: extra trust for the platform's certificate
    dial_override: str | None = None  # BERTH_PLATFORM_ADDRESS: dial here, keep the JWT unchanged
    version: str = ""  # AgentInfo.version; BERTH_AGENT_VERSION overrides
    # reconnect policy: delays in [ceiling/4, ceiling], ceiling doubling from BERTH_BACKOFF_INITIAL
    # up to BERTH_BACKOFF_MAX, reset by a session that lasted BERTH_HEALTHY_AFTER (README
    # "Reconnecting": a small cap keeps a reconnect within seconds of the platform's return)
    backoff_initial_s: float = 2.0
    backoff_max_s: float = 4.0
    healthy_after_s: float = 10.0
    iat_skew_s: float = 60.0


# -- node resilience (health-gated deploys, disk-aware pulls and pruning, desired state) ------


@dataclass(frozen=True)
class ResilienceSettings:
    health_gate: bool = True  # BERTH_HEALTH_GATE: a deploy succeeds only once its health check passes
    health_timeout_s: float = 0.0  # BERTH_HEALTH_TIMEOUT: fixed bound; 0 = derived from the check
    health_slack_s: float = 10.0  # BERTH_HEALTH_SLACK: added to the derived bound
    disk_check: bool = True  # BERTH_DISK_CHECK: refuse a pull the data root has no room for
    prune_images: bool = True  # BERTH_PRUNE_IMAGES: remove superseded images after a success
    prune_keep: int = 2  # BERTH_PRUNE_KEEP: superseded images kept per workload for rollback
    desired_state: bool = True  # BERTH_DESIRED_STATE: keep the last successful deployment per prefix
    reconcile_at_start: bool = True  # BERTH_RECONCILE: recreate/start from it when the platform is away
    reconcile_after_s: float = 15.0  # BERTH_RECONCILE_AFTER: no accepted session this long = away
    fix_drift: bool = False  # BERTH_FIX_DRIFT: recreate drifted containers (else only report)


def load_resilience_settings(env: Env) -> ResilienceSettings:
    return ResilienceSettings(
        health_gate=env.flag("BERTH_HEALTH_GATE", True),
        health_timeout_s=env.duration_s("BERTH_HEALTH_TIMEOUT", "0s"),
        health_slack_s=env.duration_s("BERTH_HEALTH_SLACK", "10s"),
        disk_check=env.flag("BERTH_DISK_CHECK", True),
        prune_images=env.flag("BERTH_PRUNE_IMAGES", True),
        prune_keep=env.integer("BERTH_PRUNE_KEEP", 2, minimum=0),
        desired_state=env.flag("BERTH_DESIRED_STATE", True),
        reconcile_at_start=env.flag("BERTH_RECONCILE", True),
        reconcile_after_s=env.duration_s("BERTH_RECONCILE_AFTER", "15s"),
        fix_drift=env.flag("BERTH_FIX_DRIFT", False),
    )


@dataclass(frozen=True)
class DockerSettings:
    data_mount_path: Path = Path("/srv/dagent")  # DATA_MOUNT_PATH: host view of the data folder
    internal_mount_path: Path = Path("/srv/dagent")  # INTERNAL_MOUNT_PATH: the agent's own view
    host_docker_sock_path: str = "/var/run/docker.sock"
    default_registry: str = "index.docker.io"
    default_tag: str = "latest"
    import_container_image: str = "rclone/rclone:1.57.0"
    root_domain: str = ""
    strict_read_only_volumes: bool = False  # BERTH_STRICT_RO_VOLUMES: honour RO as read-only
    traefik_enabled: bool = False
    traefik_tls: bool = False
    traefik_acme_mail: str = ""
    traefik_log_level: str = "INFO"
    traefik_port: int = 80
    traefik_tls_port: int = 443
    stop_grace_s: float = 2.0  # BERTH_STOP_GRACE: SIGTERM grace before SIGKILL in callbacks
    default_expected_timeout_s: int = 120
    log_buffer_lines: int = 10_000  # BERTH_LOG_BUFFER_LINES: bounded follow buffer
    resync_interval_s: float = 45.0  # BERTH_RESYNC_INTERVAL: periodic full re-list of state
    # Self-update pulls with these when set (else the engine's/docker config's own credentials).
    update_registry_user: str = ""  # BERTH_UPDATE_REGISTRY_USER
    update_registry_password: str = field(default="", repr=False)  # BERTH_UPDATE_REGISTRY_PASSWORD
    # Drop-in hardening (opt-in; defaults keep dagent's behaviour).
    publish_host_ip: str = ""  # BERTH_PUBLISH_HOST_IP: "" publishes on IPv4 and IPv6, as docker run -p
    managed_only: bool = False  # BERTH_MANAGED_ONLY: commands only on containers Berth created
    allowed_host_paths: tuple[str, ...] = ()  # BERTH_ALLOWED_HOST_PATHS: where absolute volumes may bind
    resilience: ResilienceSettings = field(default_factory=ResilienceSettings)


@dataclass(frozen=True)
class KubernetesSettings:
    in_cluster: bool = False  # CRANE_IN_CLUSTER
    kubeconfig: str = ""  # KUBECONFIG / BERTH_KUBECONFIG
    request_timeout_s: float = 120.0  # DEFAULT_KUBE_TIMEOUT; never applied to watches/follows
    field_manager: str = "berth"  # FIELD_MANAGER_NAME
    force_on_conflicts: bool = True
    secret_name: str = "dyrectorio-secret"
    secret_namespace: str = "dyrectorio"
    deployment_name: str = ""  # CRANE_DEPLOYMENT_NAME: the agent's own Deployment
    deployment_namespace: str = ""
    default_limits_cpu: str = "100m"
    default_limits_memory: str = "128Mi"
    default_requests_cpu: str = "50m"
    default_requests_memory: str = "64Mi"
    default_volume_size: str = "1G"
    default_registry: str = "index.docker.io"
    default_tag: str = "latest"
    root_domain: str = ""
    import_container_image: str = "rclone/rclone:1.57.0"
    strict_read_only_volumes: bool = False  # BERTH_STRICT_RO_VOLUMES: RO -> ReadOnlyMany
    ingress_class: str = "nginx"  # BERTH_INGRESS_CLASS
    wait_for_rollout: bool = True  # BERTH_WAIT_FOR_ROLLOUT
    rollout_timeout_s: float = 120.0  # BERTH_ROLLOUT_TIMEOUT
    resync_interval_s: float = 45.0


@dataclass(frozen=True)
class AgentSettings:
    node_name: str = "berth"  # NAME
    runtime: str = "docker"  # BERTH_RUNTIME: docker | kubernetes | memory
    data_dir: Path = Path("/srv/dagent")  # = INTERNAL_MOUNT_PATH: key, token, blacklist
    log_format: str = "auto"  # BERTH_LOG_FORMAT: auto | json | console
    log_level: str = "info"  # BERTH_LOG_LEVEL
    health_socket: Path = Path("/tmp/dyrectorio/agenthealth.sock")
    metrics_address: str = ""  # BERTH_METRICS_ADDRESS host:port (loopback), "" = off
    max_concurrent_commands: int = 64  # BERTH_MAX_CONCURRENT_COMMANDS
    shutdown_grace_s: float = 20.0  # BERTH_SHUTDOWN_GRACE
    install_method: str = "container"  # BERTH_INSTALL: container | systemd (set by the installer)
    systemd_prefix: Path = Path("/opt/berth")  # BERTH_SYSTEMD_PREFIX: venvs/ and current -> venv
    update_package: str = "berth=={tag}"  # BERTH_UPDATE_PACKAGE: pip spec of a systemd update
    update_pip_args: str = ""  # BERTH_PIP_ARGS: extra pip arguments (e.g. --index-url URL)
    connection: ConnectionSettings = field(default_factory=ConnectionSettings)
    docker: DockerSettings = field(default_factory=DockerSettings)
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)


def agent_version_string(product_version: str) -> str:
    """Leads with the protocol version so the platform does not flag the node outdated (§3.5)."""
    return f"{PROTOCOL_VERSION}-berth.{product_version}"


def _address(name: str, raw: str) -> str:
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(name, "expected host:port")
    return raw


def _host_ip(name: str, raw: str) -> str:
    if not raw:
        return ""
    try:
        ipaddress.ip_address(raw)
    except ValueError:
        raise ConfigError(name, "expected an IP address such as 0.0.0.0 or ::") from None
    return raw


def _host_paths(name: str, raw: str) -> tuple[str, ...]:
    """``:``- or ``,``-separated absolute host folders, normalised (no ``..``)."""
    paths = []
    for raw_part in re.split(r"[:,]", raw):
        part = raw_part.strip()
        if not part:
            continue
        if not part.startswith("/") or ".." in PurePosixPath(part).parts:
            raise ConfigError(name, "expected absolute folders separated by ':' (no '..')")
        paths.append(str(PurePosixPath(part)))
    return tuple(paths)


def load_agent_settings(environ: Mapping[str, str] | None = None) -> AgentSettings:
    from berth import __version__

    env = Env(os.environ if environ is None else environ)
    debug = env.flag("DEBUG")
    keepalive = max(env.duration_s("GRPC_KEEPALIVE", "30s"), KEEPALIVE_MIN_S)
    ca_raw = env.text("BERTH_CA_FILE")
    ca_file = Path(ca_raw) if ca_raw else None
    if ca_file is not None and not ca_file.is_file():
        raise ConfigError("BERTH_CA_FILE", "file does not exist")
    dial = env.text("BERTH_PLATFORM_ADDRESS")
    connection = ConnectionSettings(
        grpc_token=env.text("GRPC_TOKEN").strip(),
        keepalive_s=keepalive,
        keepalive_timeout_s=env.duration_s("DEFAULT_TIMEOUT", "5s"),
        allow_plaintext=debug or env.flag("BERTH_INSECURE"),
        ca_file=ca_file,
        dial_override=_address("BERTH_PLATFORM_ADDRESS", dial) if dial else None,
        version=env.text("BERTH_AGENT_VERSION") or agent_version_string(__version__),
        backoff_initial_s=env.duration_s("BERTH_BACKOFF_INITIAL", "2s"),
        backoff_max_s=env.duration_s("BERTH_BACKOFF_MAX", "4s"),
        healthy_after_s=env.duration_s("BERTH_HEALTHY_AFTER", "10s"),
    )
    if "-" not in connection.version:
        raise ConfigError("BERTH_AGENT_VERSION", "must contain '-' (the platform flags it outdated)")
    for backoff_name, backoff_s in (
        ("BERTH_BACKOFF_INITIAL", connection.backoff_initial_s),
        ("BERTH_BACKOFF_MAX", connection.backoff_max_s),
    ):
        if backoff_s <= 0:
            raise ConfigError(backoff_name, "must be a positive duration")
    data_mount = Path(env.text("DATA_MOUNT_PATH", "/srv/dagent"))
    internal_mount = Path(env.text("INTERNAL_MOUNT_PATH", str(data_mount)))
    strict_ro = env.flag("BERTH_STRICT_RO_VOLUMES")
    default_registry = env.text("DEFAULT_REGISTRY", "index.docker.io") or "index.docker.io"
    default_tag = env.text("DEFAULT_TAG", "latest") or "latest"
    root_domain = env.text("ROOT_DOMAIN")
    import_image = env.text("IMPORT_CONTAINER_IMAGE", "rclone/rclone:1.57.0")
    resync = env.duration_s("BERTH_RESYNC_INTERVAL", "45s")
    docker = DockerSettings(
        data_mount_path=data_mount,
        internal_mount_path=internal_mount,
        host_docker_sock_path=env.text("HOST_DOCKER_SOCK_PATH", "/var/run/docker.sock"),
        default_registry=default_registry,
        default_tag=default_tag,
        import_container_image=import_image,
        root_domain=root_domain,
        strict_read_only_volumes=strict_ro,
        traefik_enabled=env.flag("TRAEFIK_ENABLED"),
        traefik_tls=env.flag("TRAEFIK_TLS"),
        traefik_acme_mail=env.text("TRAEFIK_ACME_MAIL"),
        traefik_log_level=env.text("TRAEFIK_LOG_LEVEL", "INFO"),
        traefik_port=env.integer("TRAEFIK_PORT", 80, minimum=1),
        traefik_tls_port=env.integer("TRAEFIK_TLS_PORT", 443, minimum=1),
        stop_grace_s=env.duration_s("BERTH_STOP_GRACE", "2s"),
        log_buffer_lines=env.integer("BERTH_LOG_BUFFER_LINES", 10_000, minimum=100),
        resync_interval_s=resync,
        update_registry_user=env.text("BERTH_UPDATE_REGISTRY_USER"),
        update_registry_password=env.text("BERTH_UPDATE_REGISTRY_PASSWORD"),
        publish_host_ip=_host_ip("BERTH_PUBLISH_HOST_IP", env.text("BERTH_PUBLISH_HOST_IP").strip()),
        managed_only=env.flag("BERTH_MANAGED_ONLY"),
        allowed_host_paths=_host_paths("BERTH_ALLOWED_HOST_PATHS", env.text("BERTH_ALLOWED_HOST_PATHS")),
        resilience=load_resilience_settings(env),
    )
    kubernetes = KubernetesSettings(
        in_cluster=env.flag("CRANE_IN_CLUSTER"),
        kubeconfig=env.text("BERTH_KUBECONFIG") or env.text("KUBECONFIG"),
        request_timeout_s=env.duration_s("DEFAULT_KUBE_TIMEOUT", "2m"),
        field_manager=env.text("FIELD_MANAGER_NAME", "berth") or "berth",
        force_on_conflicts=env.flag("FORCE_ON_CONFLICTS", True),
        secret_name=env.text("SECRET_NAME", "dyrectorio-secret"),
        secret_namespace=env.text("SECRET_NAMESPACE", "dyrectorio"),
        deployment_name=env.text("CRANE_DEPLOYMENT_NAME"),
        deployment_namespace=env.text("CRANE_DEPLOYMENT_NAMESPACE"),
        default_limits_cpu=parse_quantity("DEFAULT_LIMITS_CPU", env.text("DEFAULT_LIMITS_CPU", "100m")),
        default_limits_memory=parse_quantity(
            "DEFAULT_LIMITS_MEMORY", env.text("DEFAULT_LIMITS_MEMORY", "128Mi")
        ),
        default_requests_cpu=parse_quantity("DEFAULT_REQUESTS_CPU", env.text("DEFAULT_REQUESTS_CPU", "50m")),
        default_requests_memory=parse_quantity(
            "DEFAULT_REQUESTS_MEMORY", env.text("DEFAULT_REQUESTS_MEMORY", "64Mi")
        ),
        default_volume_size=parse_quantity("DEFAULT_VOLUME_SIZE", env.text("DEFAULT_VOLUME_SIZE", "1G")),
        default_registry=default_registry,
        default_tag=default_tag,
        root_domain=root_domain,
        import_container_image=import_image,
        strict_read_only_volumes=strict_ro,
        ingress_class=env.text("BERTH_INGRESS_CLASS", "nginx"),
        wait_for_rollout=env.flag("BERTH_WAIT_FOR_ROLLOUT", True),
        rollout_timeout_s=env.duration_s("BERTH_ROLLOUT_TIMEOUT", "120s"),
        resync_interval_s=resync,
    )
    runtime = env.choice(
        "BERTH_RUNTIME",
        "kubernetes" if kubernetes.in_cluster else "docker",
        ("docker", "kubernetes", "memory"),
    )
    tmpdir = Path(env.text("TMPDIR", "/tmp") or "/tmp")
    health_raw = env.text("BERTH_HEALTH_SOCKET")
    metrics = env.text("BERTH_METRICS_ADDRESS")
    return AgentSettings(
        node_name=env.text("NAME", "berth") or "berth",
        runtime=runtime,
        data_dir=internal_mount,
        log_format=env.choice("BERTH_LOG_FORMAT", "auto", ("auto", "json", "console")),
        log_level=env.choice(
            "BERTH_LOG_LEVEL", "debug" if debug else "info", ("debug", "info", "warning", "error")
        ),
        health_socket=Path(health_raw) if health_raw else tmpdir / "dyrectorio" / "agenthealth.sock",
        metrics_address=_address("BERTH_METRICS_ADDRESS", metrics) if metrics else "",
        max_concurrent_commands=env.integer("BERTH_MAX_CONCURRENT_COMMANDS", 64, minimum=1),
        shutdown_grace_s=env.duration_s("BERTH_SHUTDOWN_GRACE", "20s"),
        install_method=env.choice("BERTH_INSTALL", "container", ("container", "systemd")),
        systemd_prefix=Path(env.text("BERTH_SYSTEMD_PREFIX", "/opt/berth") or "/opt/berth"),
        update_package=env.text("BERTH_UPDATE_PACKAGE", "berth=={tag}") or "berth=={tag}",
        update_pip_args=env.text("BERTH_PIP_ARGS"),
        connection=connection,
        docker=docker,
        kubernetes=kubernetes,
    )
