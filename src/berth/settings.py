"""Every knob of the agent, each declared once, on the dataclass field it fills: its environment
name, type, default and parser (``setting(...)``), and its one-line doc (the string under it).

Environment names are dagent/crane-compatible (so a platform-generated install script starts
Berth unchanged), plus ``BERTH_*`` names of our own. An empty variable counts as unset.
``load_agent_settings`` raises ``ConfigError`` naming the setting (never its value) when something
is invalid; the CLI turns that into exit 2. The README's settings tables are generated from these
declarations (``python -m berth.settings --readme README.md``) and a test keeps them equal.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import ipaddress
import itertools
import os
import re
import textwrap
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Final, Generic, Literal, TypeVar, get_args

from berth.errors import ConfigError

PROTOCOL_VERSION: Final = "0.15.4"
KEEPALIVE_MIN_S: Final = 30.0

T = TypeVar("T")
Parser = Callable[[str, str], T]
"""``(variable name, raw value) -> value``; raises ``ConfigError`` naming the variable."""

Runtime = Literal["docker", "kubernetes", "memory"]
LogFormat = Literal["auto", "json", "console"]
LogLevel = Literal["debug", "info", "warning", "error"]
InstallMethod = Literal["container", "systemd"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_K8S_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")


# -- parsers ---------------------------------------------------------------------------------------


def duration(name: str, raw: str) -> float:
    """Go-style durations as dagent reads them (``30s``, ``5s``, ``2m``, ``500ms``); bare numbers
    are seconds."""
    match = _DURATION.match(raw)
    if not match:
        raise ConfigError(name, "expected a duration such as 30s, 500ms or 2m")
    value = float(match.group(1))
    unit = match.group(2) or "s"
    return value * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]


def flag(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(name, "expected true or false")


def quantity(name: str, raw: str) -> str:
    if not _K8S_QUANTITY.match(raw.strip()):
        raise ConfigError(name, "expected a Kubernetes quantity such as 100m, 128Mi or 1G")
    return raw.strip()


def text(_: str, raw: str) -> str:
    return raw


def stripped(_: str, raw: str) -> str:
    return raw.strip()


def path(_: str, raw: str) -> Path:
    return Path(raw)


def integer(minimum: int) -> Parser[int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(name, "expected an integer") from None
        if value < minimum:
            raise ConfigError(name, f"must be at least {minimum}")
        return value

    return parse


def choice(options: tuple[T, ...]) -> Parser[T]:
    """One of ``options`` (the members of a ``Literal``), case-insensitive."""

    def parse(name: str, raw: str) -> T:
        value = raw.strip().lower()
        for option in options:
            if option == value:
                return option
        raise ConfigError(name, f"expected one of {', '.join(map(str, options))}")

    return parse


def _keepalive_s(name: str, raw: str) -> float:
    return max(duration(name, raw), KEEPALIVE_MIN_S)


def _positive_duration(name: str, raw: str) -> float:
    value = duration(name, raw)
    if value <= 0:
        raise ConfigError(name, "must be a positive duration")
    return value


def _existing_file(name: str, raw: str) -> Path | None:
    file = Path(raw)
    if not file.is_file():
        raise ConfigError(name, "file does not exist")
    return file


def _address(name: str, raw: str) -> str:
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(name, "expected host:port")
    return raw


def _host_ip(name: str, raw: str) -> str:
    try:
        ipaddress.ip_address(raw.strip())
    except ValueError:
        raise ConfigError(name, "expected an IP address such as 0.0.0.0 or ::") from None
    return raw.strip()


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


def _agent_version(name: str, raw: str) -> str:
    if "-" not in raw:
        raise ConfigError(name, "must contain '-' (the platform flags it outdated)")
    return raw


# -- the declaration -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One environment variable (or several, the first one set wins) and what it becomes."""

    env: tuple[str, ...]
    default: T
    parse: Parser[T]
    shown_default: str | None = None  # for the README, when the default is derived at load time
    topic: str | None = None  # which README table lists it; None: its group's

    def field(self) -> T:
        return field(default=self.default, metadata={_SETTING: self})

    def read(self, environ: Mapping[str, str]) -> T | None:
        """The parsed value, or ``None`` when every variable is unset or empty."""
        for name in self.env:
            raw = environ.get(name, "")
            if raw.strip():
                return self.parse(name, raw)
        return None

    @property
    def default_text(self) -> str:
        if self.shown_default is not None:
            return self.shown_default
        value: Any = self.default
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, float):
            return f"{value:g}s"
        if value in (None, "", ()):
            return NO_DEFAULT
        return str(value)


_SETTING: Final = "berth.setting"
NO_DEFAULT: Final = "\u2013"  # the README's en dash


def setting(
    env: str | tuple[str, ...],
    default: T,
    parse: Parser[T],
    *,
    shown_default: str | None = None,
    topic: str | None = None,
) -> T:
    """A dataclass field filled from the environment (see ``Setting``); the string literal below
    the field is its one-line doc (the README's "meaning")."""
    names = (env,) if isinstance(env, str) else env
    return Setting(names, default, parse, shown_default, topic).field()


@dataclass(frozen=True)
class ConnectionSettings:
    grpc_token: str = setting("GRPC_TOKEN", "", stripped)
    """install (or connection) JWT"""
    keepalive_s: float = setting("GRPC_KEEPALIVE", 30.0, _keepalive_s)
    """keepalive ping interval; values below 30 s are raised to 30 s"""
    keepalive_timeout_s: float = setting("DEFAULT_TIMEOUT", 5.0, duration)
    """keepalive ack timeout"""
    allow_plaintext: bool = setting("BERTH_INSECURE", False, flag)
    """allow plaintext gRPC (also `DEBUG=true`)"""
    ca_file: Path | None = setting("BERTH_CA_FILE", None, _existing_file)
    """extra CA bundle to verify the platform"""
    dial_override: str | None = setting("BERTH_PLATFORM_ADDRESS", None, _address)
    """dial this `host:port` instead of the token's `iss` (the token is unchanged)"""
    version: str = setting(
        "BERTH_AGENT_VERSION", "", _agent_version, shown_default=f"`{PROTOCOL_VERSION}-berth.<version>`"
    )
    """version sent in AgentInfo (must lead with the protocol version)"""
    # The reconnect policy (README "Reconnecting"): each delay is random in [ceiling / 4, ceiling];
    # a small cap keeps a reconnect within seconds of the platform's return.
    backoff_initial_s: float = setting("BERTH_BACKOFF_INITIAL", 2.0, _positive_duration)
    """first reconnect ceiling; it doubles after each failed attempt"""
    backoff_max_s: float = setting("BERTH_BACKOFF_MAX", 4.0, _positive_duration)
    """cap of the reconnect ceiling: the longest reconnect delay"""
    healthy_after_s: float = setting("BERTH_HEALTHY_AFTER", 10.0, duration)
    """a session accepted this long starts the reconnect ceiling over"""
    iat_skew_s: float = 60.0


# -- node resilience (health-gated deploys, disk-aware pulls and pruning, desired state) ------


@dataclass(frozen=True)
class ResilienceSettings:
    health_gate: bool = setting("BERTH_HEALTH_GATE", True, flag)
    """a deploy succeeds only once its health check passes"""
    health_timeout_s: float = setting("BERTH_HEALTH_TIMEOUT", 0.0, duration)
    """a fixed bound for the health wait; `0s` derives it from the check"""
    health_slack_s: float = setting("BERTH_HEALTH_SLACK", 10.0, duration)
    """added to the derived bound"""
    disk_check: bool = setting("BERTH_DISK_CHECK", True, flag)
    """refuse a pull the data root has no room for"""
    prune_images: bool = setting("BERTH_PRUNE_IMAGES", True, flag)
    """prune superseded images Berth pulled after a success"""
    prune_keep: int = setting("BERTH_PRUNE_KEEP", 2, integer(0))
    """superseded images kept per workload for rollback"""
    desired_state: bool = setting("BERTH_DESIRED_STATE", True, flag)
    """keep the last successful deployment of each prefix"""
    reconcile_at_start: bool = setting("BERTH_RECONCILE", True, flag)
    """reconcile at start (recreate, start) from the desired state when the platform is away"""
    reconcile_after_s: float = setting("BERTH_RECONCILE_AFTER", 15.0, duration)
    """no accepted session this long counts as the platform being away"""
    fix_drift: bool = setting("BERTH_FIX_DRIFT", False, flag)
    """recreate drifted containers instead of only reporting them"""


@dataclass(frozen=True)
class RuntimeSettings:
    # What both runtimes read.
    resync_interval_s: float = setting("BERTH_RESYNC_INTERVAL", 45.0, duration)
    """periodic full re-list of the state"""
    default_registry: str = setting("DEFAULT_REGISTRY", "index.docker.io", text)
    """registry of an image without one"""
    default_tag: str = setting("DEFAULT_TAG", "latest", text)
    """tag of an image without one"""
    strict_read_only_volumes: bool = setting("BERTH_STRICT_RO_VOLUMES", False, flag)
    """honour volume type `RO` as read-only (the platform sends `RO` when the user picked no type)"""
    import_container_image: str = setting("IMPORT_CONTAINER_IMAGE", "rclone/rclone:1.57.0", text)
    """image of the import container"""
    root_domain: str = setting("ROOT_DOMAIN", "", text)
    """routing host fallback `<name>.<prefix>.<ROOT_DOMAIN>`"""


@dataclass(frozen=True)
class DockerSettings(RuntimeSettings):
    data_mount_path: Path = setting("DATA_MOUNT_PATH", Path("/srv/dagent"), path)
    """host path of the data folder (bind-mount sources)"""
    internal_mount_path: Path = setting(
        "INTERNAL_MOUNT_PATH", Path("/srv/dagent"), path, shown_default="= `DATA_MOUNT_PATH`"
    )
    """the same folder as the agent sees it (key, token, volumes)"""
    host_docker_sock_path: str = setting("HOST_DOCKER_SOCK_PATH", "/var/run/docker.sock", text)
    """the host's socket (mounted into Traefik)"""
    traefik_enabled: bool = setting("TRAEFIK_ENABLED", False, flag)
    """start the optional Traefik container"""
    traefik_tls: bool = setting("TRAEFIK_TLS", False, flag)
    """Traefik: TLS through Let's Encrypt"""
    traefik_acme_mail: str = setting("TRAEFIK_ACME_MAIL", "", text)
    """Traefik: the ACME account e-mail"""
    traefik_log_level: str = setting("TRAEFIK_LOG_LEVEL", "INFO", text)
    """Traefik: its log level"""
    traefik_port: int = setting("TRAEFIK_PORT", 80, integer(1))
    """Traefik: the HTTP port"""
    traefik_tls_port: int = setting("TRAEFIK_TLS_PORT", 443, integer(1))
    """Traefik: the HTTPS port"""
    stop_grace_s: float = setting("BERTH_STOP_GRACE", 2.0, duration)
    """SIGTERM grace before SIGKILL when a callback deletes a container"""
    default_expected_timeout_s: int = 120
    log_buffer_lines: int = setting("BERTH_LOG_BUFFER_LINES", 10_000, integer(100))
    """lines a log follow buffers before it drops (and says so)"""
    update_registry_user: str = setting("BERTH_UPDATE_REGISTRY_USER", "", text)
    """self-update pulls with it (else the engine's own credentials)"""
    update_registry_password: str = field(
        default="", repr=False, metadata={_SETTING: Setting(("BERTH_UPDATE_REGISTRY_PASSWORD",), "", text)}
    )
    """its password (never logged)"""
    publish_host_ip: str = setting("BERTH_PUBLISH_HOST_IP", "", _host_ip, topic="hardening")
    """publish ports on this address only (default: every address family, as `docker run -p`)"""
    managed_only: bool = setting("BERTH_MANAGED_ONLY", False, flag, topic="hardening")
    """container commands only on containers Berth created (`io.berth.managed=true`)"""
    allowed_host_paths: tuple[str, ...] = setting(
        "BERTH_ALLOWED_HOST_PATHS", (), _host_paths, topic="hardening"
    )
    """`:`-separated host folders that absolute volume names may bind (default: any, as dagent)"""
    resilience: ResilienceSettings = field(default_factory=ResilienceSettings)


@dataclass(frozen=True)
class KubernetesSettings(RuntimeSettings):
    in_cluster: bool = setting("CRANE_IN_CLUSTER", False, flag)
    """the agent runs inside the cluster it manages"""
    kubeconfig: str = setting(("BERTH_KUBECONFIG", "KUBECONFIG"), "", text)
    """outside a cluster: the kubeconfig (else `~/.kube/config`)"""
    request_timeout_s: float = setting("DEFAULT_KUBE_TIMEOUT", 120.0, duration)
    """bound of one API request (never of a watch or follow)"""
    field_manager: str = setting("FIELD_MANAGER_NAME", "berth", text)
    """field manager of server-side apply"""
    force_on_conflicts: bool = setting("FORCE_ON_CONFLICTS", True, flag)
    """server-side apply takes fields other managers own"""
    secret_name: str = setting("SECRET_NAME", "dyrectorio-secret", text)
    """the Secret with the agent's key and token"""
    secret_namespace: str = setting("SECRET_NAMESPACE", "dyrectorio", text)
    """its namespace"""
    deployment_name: str = setting("CRANE_DEPLOYMENT_NAME", "", text)
    """the agent's own Deployment (scaled to 0 on SHUTDOWN)"""
    deployment_namespace: str = setting("CRANE_DEPLOYMENT_NAMESPACE", "", text)
    """its namespace"""
    default_limits_cpu: str = setting("DEFAULT_LIMITS_CPU", "100m", quantity)
    """CPU limit of a workload without one"""
    default_limits_memory: str = setting("DEFAULT_LIMITS_MEMORY", "128Mi", quantity)
    """memory limit of a workload without one"""
    default_requests_cpu: str = setting("DEFAULT_REQUESTS_CPU", "50m", quantity)
    """CPU request of a workload without one"""
    default_requests_memory: str = setting("DEFAULT_REQUESTS_MEMORY", "64Mi", quantity)
    """memory request of a workload without one"""
    default_volume_size: str = setting("DEFAULT_VOLUME_SIZE", "1G", quantity)
    """size of a volume without one"""
    ingress_class: str = setting("BERTH_INGRESS_CLASS", "nginx", text)
    """class of the Ingresses Berth creates"""
    wait_for_rollout: bool = setting("BERTH_WAIT_FOR_ROLLOUT", True, flag)
    """wait for the rollout before a deployment is SUCCESSFUL"""
    rollout_timeout_s: float = setting("BERTH_ROLLOUT_TIMEOUT", 120.0, duration)
    """bound of that wait"""


@dataclass(frozen=True)
class AgentSettings:
    node_name: str = setting("NAME", "berth", text)
    """node name (informational)"""
    debug: bool = setting("DEBUG", False, flag)
    """allows plaintext gRPC (reference-compatible opt-in), debug logs"""
    runtime: Runtime = setting(
        "BERTH_RUNTIME",
        "docker",
        choice(get_args(Runtime)),
        shown_default="`docker` (`kubernetes` when `CRANE_IN_CLUSTER=true`)",
    )
    """`docker`, `kubernetes` or `memory`"""
    data_dir: Path = Path("/srv/dagent")  # = INTERNAL_MOUNT_PATH: key, token, blacklist
    log_format: LogFormat = setting("BERTH_LOG_FORMAT", "auto", choice(get_args(LogFormat)))
    """`json`, `console` or `auto` (console on a TTY)"""
    log_level: LogLevel = setting(
        "BERTH_LOG_LEVEL",
        "info",
        choice(get_args(LogLevel)),
        shown_default="`info` (`debug` when `DEBUG=true`)",
    )
    """`debug`, `info`, `warning` or `error`"""
    health_socket: Path = setting(
        "BERTH_HEALTH_SOCKET",
        Path("/tmp/dyrectorio/agenthealth.sock"),
        path,
        shown_default="`$TMPDIR/dyrectorio/agenthealth.sock`",
    )
    """what `berth health` asks"""
    metrics_address: str = setting("BERTH_METRICS_ADDRESS", "", _address)
    """`127.0.0.1:PORT`: `/livez`, `/readyz`, `/metrics` (Prometheus)"""
    max_concurrent_commands: int = setting("BERTH_MAX_CONCURRENT_COMMANDS", 64, integer(1))
    """commands in flight at once (the rest wait in their lanes)"""
    shutdown_grace_s: float = setting("BERTH_SHUTDOWN_GRACE", 20.0, duration)
    """in-flight work may finish this long after SIGTERM"""
    install_method: InstallMethod = setting("BERTH_INSTALL", "container", choice(get_args(InstallMethod)))
    """`container` or `systemd` (set by the installer)"""
    systemd_prefix: Path = setting("BERTH_SYSTEMD_PREFIX", Path("/opt/berth"), path)
    """systemd install: `venvs/` and `current` live here"""
    update_package: str = setting("BERTH_UPDATE_PACKAGE", "berth=={tag}", text)
    """systemd install: pip spec of an update (`{tag}` is replaced)"""
    update_pip_args: str = setting("BERTH_PIP_ARGS", "", text)
    """systemd install: extra pip arguments (for example `--index-url URL`)"""
    connection: ConnectionSettings = field(default_factory=ConnectionSettings)
    docker: DockerSettings = field(default_factory=DockerSettings)
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)


def agent_version_string(product_version: str) -> str:
    """Leads with the protocol version so the platform does not flag the node outdated (§3.5)."""
    return f"{PROTOCOL_VERSION}-berth.{product_version}"


# -- loading ---------------------------------------------------------------------------------------

D = TypeVar("D")


def _load(cls: type[D], environ: Mapping[str, str]) -> D:
    """``cls`` with every declared setting read from ``environ`` and nested groups loaded alike."""
    values: dict[str, Any] = {}
    for item in dataclasses.fields(cls):  # type: ignore[arg-type]
        declared: Setting[Any] | None = item.metadata.get(_SETTING)
        if declared is not None:
            value = declared.read(environ)
            if value is not None:
                values[item.name] = value
        elif dataclasses.is_dataclass(item.default_factory):
            values[item.name] = _load(item.default_factory, environ)
    return cls(**values)


def _is_set(environ: Mapping[str, str], name: str) -> bool:
    return bool(environ.get(name, "").strip())


def load_agent_settings(environ: Mapping[str, str] | None = None) -> AgentSettings:
    from berth import __version__

    env = os.environ if environ is None else environ
    loaded = _load(AgentSettings, env)
    # Defaults that follow other settings.
    docker = loaded.docker
    if not _is_set(env, "INTERNAL_MOUNT_PATH"):
        docker = dataclasses.replace(docker, internal_mount_path=docker.data_mount_path)
    connection = dataclasses.replace(
        loaded.connection,
        allow_plaintext=loaded.connection.allow_plaintext or loaded.debug,
        version=loaded.connection.version or agent_version_string(__version__),
    )
    tmpdir = Path(env.get("TMPDIR") or "/tmp")
    return dataclasses.replace(
        loaded,
        runtime="kubernetes"
        if loaded.kubernetes.in_cluster and not _is_set(env, "BERTH_RUNTIME")
        else loaded.runtime,
        log_level="debug" if loaded.debug and not _is_set(env, "BERTH_LOG_LEVEL") else loaded.log_level,
        health_socket=loaded.health_socket
        if _is_set(env, "BERTH_HEALTH_SOCKET")
        else tmpdir / "dyrectorio" / "agenthealth.sock",
        data_dir=docker.internal_mount_path,
        connection=connection,
        docker=docker,
    )


# -- the README's tables ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Documented:
    topic: str
    setting: Setting[Any]
    doc: str


def _field_docs(group: type) -> dict[str, str]:
    """The string literal under each field of ``group`` (an attribute docstring)."""
    body = ast.parse(textwrap.dedent(inspect.getsource(group))).body[0]
    assert isinstance(body, ast.ClassDef)
    docs = {}
    for node, following in itertools.pairwise(body.body):
        match node, following:
            case ast.AnnAssign(target=ast.Name(id=name)), ast.Expr(value=ast.Constant(value=str(doc))):
                docs[name] = doc
    return docs


def declared_settings() -> Iterator[Documented]:
    """Every declaration once, with its README topic and doc, in the order of the dataclasses."""
    seen: set[tuple[str, ...]] = set()
    groups = (ConnectionSettings, AgentSettings, RuntimeSettings, DockerSettings, ResilienceSettings)
    for group in (*groups, KubernetesSettings):
        docs = _field_docs(group)
        for item in dataclasses.fields(group):
            declared: Setting[Any] | None = item.metadata.get(_SETTING)
            if declared is None or declared.env in seen:
                continue
            seen.add(declared.env)
            topic = declared.topic or ("resilience" if group is ResilienceSettings else "agent")
            yield Documented(topic, declared, docs.get(item.name, ""))


def markdown_table(topic: str) -> str:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for row in declared_settings():
        if row.topic == topic:
            names = ", ".join(f"`{name}`" for name in row.setting.env)
            default = row.setting.default_text
            shown = default if default.startswith(("`", "=", NO_DEFAULT)) else f"`{default}`"
            rows.append(f"| {names} | {shown} | {row.doc} |")
    return "\n".join(rows)


_TABLE_BLOCK = re.compile(r"^<!-- settings: (\w+) -->\n(?:\|.*\n)*<!-- /settings -->$", re.MULTILINE)


def readme_with_tables(readme: str) -> str:
    """``readme`` with each ``<!-- settings: TOPIC -->`` block holding that topic's table."""
    return _TABLE_BLOCK.sub(
        lambda found: f"<!-- settings: {found[1]} -->\n{markdown_table(found[1])}\n<!-- /settings -->", readme
    )


def main(argv: list[str] | None = None) -> int:
    import argparse  # on use: resident memory an agent does not need

    parser = argparse.ArgumentParser(prog="python -m berth.settings", description=__doc__)
    parser.add_argument("--markdown", metavar="TOPIC", help="print the settings table of TOPIC")
    parser.add_argument("--readme", metavar="FILE", type=Path, help="rewrite the settings tables in FILE")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown_table(args.markdown))  # noqa: T201
    if args.readme:
        args.readme.write_text(readme_with_tables(args.readme.read_text()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
