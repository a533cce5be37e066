"""Domain values shared by the agent, its runtimes and its handlers.

These are plain frozen dataclasses: protobuf types never leave ``agent/codec.py``. Field names
follow the protocol's meaning with units in their names (``timeout_s``); ``None`` means "not set"
wherever the protocol has explicit presence.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Final

PREFIX_LABEL: Final = "org.dyrectorio.container.prefix"
SECRET_KEYS_LABEL: Final = "org.dyrectorio.secret.keys"
MANAGED_LABEL: Final = "io.berth.managed"

EMPTY_MAP: Final[Mapping[str, str]] = MappingProxyType({})


def frozen_map(values: Mapping[str, str] | None = None) -> Mapping[str, str]:
    """A read-only copy of a string map (dataclasses below stay hashable in spirit)."""
    return MappingProxyType(dict(values or {}))


# -- identities ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContainerRef:
    """A container (Docker) or workload (Kubernetes) as the platform names it.

    ``key`` is the platform's correlation string K(id) (protocol §0).
    """

    prefix: str
    name: str

    @property
    def key(self) -> str:
        return self.name if not self.prefix else f"{self.prefix}-{self.name}"

    def __str__(self) -> str:
        return self.key


@dataclass(frozen=True, slots=True)
class PrefixTarget:
    """Every container of one prefix (Docker label / Kubernetes namespace)."""

    prefix: str


Target = ContainerRef | PrefixTarget


# -- enums: the protocol's, with its names and numbers (so the codec is a plain lookup) ------------


ContainerState = enum.IntEnum("ContainerState", "UNSPECIFIED RUNNING WAITING EXITED REMOVED", start=0)
DeploymentStatus = enum.IntEnum(
    "DeploymentStatus", "UNSPECIFIED PREPARING IN_PROGRESS SUCCESSFUL FAILED OBSOLETE DOWNGRADED", start=0
)
LogLevel = enum.IntEnum("LogLevel", "UNSPECIFIED INFO WARNING ERROR", start=0)
NetworkMode = enum.IntEnum("NetworkMode", [("UNSPECIFIED", 0), ("BRIDGE", 1), ("HOST", 2), ("NONE", 6)])
RestartPolicy = enum.IntEnum(
    "RestartPolicy", "UNSPECIFIED UNDEFINED NO ON_FAILURE ALWAYS UNLESS_STOPPED", start=0
)
DeploymentStrategy = enum.IntEnum("DeploymentStrategy", "UNSPECIFIED RECREATE ROLLING_UPDATE", start=0)
VolumeType = enum.IntEnum("VolumeType", "UNSPECIFIED RO RWO RWX MEM TMP SECRET", start=0)


class LogDriver(enum.IntEnum):
    UNSPECIFIED = 0
    NODE_DEFAULT = 1
    NONE = 2
    GCPLOGS = 3
    LOCAL = 4
    JSON_FILE = 5
    SYSLOG = 6
    JOURNALD = 7
    GELF = 8
    FLUENTD = 9
    AWSLOGS = 10
    SPLUNK = 11
    ETWLOGS = 12
    LOGENTRIES = 13

    @property
    def docker_name(self) -> str | None:
        """The Docker log driver name; ``None`` means the daemon default."""
        if self in (LogDriver.UNSPECIFIED, LogDriver.NODE_DEFAULT):
            return None
        return self.name.lower().replace("_", "-")


ExposeStrategy = enum.IntEnum("ExposeStrategy", "UNSPECIFIED NONE EXPOSE EXPOSE_WITH_TLS", start=0)
ContainerOperation = enum.IntEnum("ContainerOperation", "UNSPECIFIED START STOP RESTART", start=0)
CloseReason = enum.IntEnum("CloseReason", "UNSPECIFIED CLOSE SELF_DESTRUCT SHUTDOWN REVOKE_TOKEN", start=0)


# -- secrets ---------------------------------------------------------------------------------------


class SecretValue(str):
    """A decrypted secret. Behaves as ``str`` for the SDKs but never shows itself in a repr."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "SecretValue(***)"


# -- workload specification ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Port:
    internal: int
    external: int | None = None  # None or 0: not published


@dataclass(frozen=True, slots=True)
class PortRange:
    start: int
    end: int  # inclusive


@dataclass(frozen=True, slots=True)
class PortRangeBinding:
    internal: PortRange
    external: PortRange


@dataclass(frozen=True, slots=True)
class VolumeLink:
    """A named volume mounted at ``path`` (an init container's link to its parent's volume)."""

    name: str
    path: str


@dataclass(frozen=True, slots=True)
class Volume(VolumeLink):
    """A workload's volume: a link with what creating it needs."""

    size: str | None = None
    type: VolumeType | None = None
    storage_class: str | None = None


@dataclass(frozen=True, slots=True)
class InitContainer:
    name: str
    image: str
    use_parent_config: bool = False
    volumes: tuple[VolumeLink, ...] = ()
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    environment: Mapping[str, str] = field(default_factory=frozen_map)


@dataclass(frozen=True, slots=True)
class ImportContainer:
    volume: str
    command: str
    environment: Mapping[str, str] = field(default_factory=frozen_map)


@dataclass(frozen=True, slots=True)
class ConfigContainer:
    image: str
    volume: str
    path: str
    keep_files: bool = False


@dataclass(frozen=True, slots=True)
class Routing:
    domain: str | None = None
    path: str | None = None
    strip_path: bool = False
    upload_limit: str | None = None
    port: int | None = None


@dataclass(frozen=True, slots=True)
class LogConfig:
    driver: LogDriver = LogDriver.UNSPECIFIED
    options: Mapping[str, str] = field(default_factory=frozen_map)


@dataclass(frozen=True, slots=True)
class ExpectedState:
    state: ContainerState = ContainerState.RUNNING
    timeout_s: int | None = None
    exit_code: int | None = None


@dataclass(frozen=True, slots=True)
class HealthCheck:
    port: int | None = None
    liveness_path: str | None = None
    readiness_path: str | None = None
    startup_path: str | None = None


@dataclass(frozen=True, slots=True)
class Resources:
    cpu: str | None = None
    memory: str | None = None


@dataclass(frozen=True, slots=True)
class ResourceConfig:
    limits: Resources | None = None
    requests: Resources | None = None


@dataclass(frozen=True, slots=True)
class Marker:
    deployment: Mapping[str, str] = field(default_factory=frozen_map)
    service: Mapping[str, str] = field(default_factory=frozen_map)
    ingress: Mapping[str, str] = field(default_factory=frozen_map)


@dataclass(frozen=True, slots=True)
class Metrics:
    port: int = 0
    path: str = ""


@dataclass(frozen=True, slots=True)
class RegistryAuth:
    name: str
    url: str
    user: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class DockerOptions:
    """The ``dagent`` part of a workload."""

    network_mode: NetworkMode | None = None
    networks: tuple[str, ...] = ()
    log_config: LogConfig | None = None
    restart_policy: RestartPolicy | None = None
    expected_state: ExpectedState | None = None
    labels: Mapping[str, str] = field(default_factory=frozen_map)


@dataclass(frozen=True, slots=True)
class KubernetesOptions:
    """The ``crane`` part of a workload."""

    deployment_strategy: DeploymentStrategy | None = None
    health_check: HealthCheck | None = None
    resources: ResourceConfig | None = None
    proxy_headers: bool = False
    use_load_balancer: bool = False
    annotations: Marker | None = None
    labels: Marker | None = None
    metrics: Metrics | None = None
    custom_headers: tuple[str, ...] = ()
    extra_lb_annotations: Mapping[str, str] = field(default_factory=frozen_map)


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """One ``DeployWorkloadRequest``: one container on Docker, one Deployment on Kubernetes.

    ``secrets`` are already decrypted (the deploy handler does it before the runtime sees them).
    ``registry`` is the platform's pull prefix, ``image_name``/``tag`` as sent.
    """

    id: str
    prefix: str
    name: str
    image_name: str
    tag: str = ""
    registry: str | None = None
    registry_auth: RegistryAuth | None = None
    expose: ExposeStrategy | None = None
    routing: Routing | None = None
    config_container: ConfigContainer | None = None
    import_container: ImportContainer | None = None
    user: int | None = None
    tty: bool = False
    working_directory: str | None = None
    ports: tuple[Port, ...] = ()
    port_ranges: tuple[PortRangeBinding, ...] = ()
    volumes: tuple[Volume, ...] = ()
    commands: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    environment: Mapping[str, str] = field(default_factory=frozen_map)
    secrets: Mapping[str, SecretValue] = field(default_factory=lambda: MappingProxyType({}))
    init_containers: tuple[InitContainer, ...] = ()
    docker: DockerOptions = field(default_factory=DockerOptions)
    kubernetes: KubernetesOptions = field(default_factory=KubernetesOptions)

    @property
    def ref(self) -> ContainerRef:
        return ContainerRef(self.prefix, self.name)


@dataclass(frozen=True, slots=True)
class DeploymentSpec:
    """One ``DeployRequest``. ``shared_secret_keys`` are the prefix-level secret names
    (``DeployRequest.secrets``); their values stay encrypted and are only stored for listing."""

    id: str
    prefix: str
    version_name: str = ""
    release_notes: str = ""
    shared_secrets: Mapping[str, str] = field(default_factory=frozen_map)
    workloads: tuple[WorkloadSpec, ...] = ()


# -- what runtimes report ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PortMapping:
    internal: int
    external: int = 0


@dataclass(frozen=True, slots=True)
class ContainerStatus:
    """One ``ContainerStateItem``. ``ref`` already follows the §7 id rule for the watched prefix.

    A REMOVED item carries only ``ref`` and ``state``.
    """

    ref: ContainerRef
    state: ContainerState
    reason: str = ""
    status: str = ""
    command: str = ""
    created_at: datetime | None = None
    image_name: str = ""
    image_tag: str = ""
    ports: tuple[PortMapping, ...] = ()
    labels: Mapping[str, str] = field(default_factory=frozen_map)

    @classmethod
    def removed(cls, ref: ContainerRef) -> ContainerStatus:
        return cls(ref=ref, state=ContainerState.REMOVED)


@dataclass(frozen=True, slots=True)
class StateUpdate:
    """A batch for the ContainerState stream. The first one a watch yields is the full list
    (``initial=True``); later ones carry only what changed."""

    items: tuple[ContainerStatus, ...]
    initial: bool = False


@dataclass(frozen=True, slots=True)
class LogGap:
    """Lines a bounded log buffer had to drop; the stream says so instead of hiding it."""

    dropped_lines: int


LogItem = str | LogGap


@dataclass(frozen=True, slots=True)
class DeleteOutcome:
    """What a delete did, for the answer's log (e.g. "killed after 2 s grace")."""

    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RuntimeInfo:
    """Preflight result: which engine and version the runtime talks to."""

    kind: str  # "docker", "podman", "kubernetes", "memory"
    version: str
    api_version: str = ""
    warnings: tuple[str, ...] = ()
