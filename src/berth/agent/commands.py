"""The platform's commands as a closed union of frozen dataclasses (made by ``codec.py``) and the
messages the agent sends back, in domain terms. Nothing here knows about gRPC."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from berth.model import (
    CloseReason,
    ContainerOperation,
    ContainerRef,
    ContainerState,
    DeploymentSpec,
    DeploymentStatus,
    LogLevel,
    Target,
)


@dataclass(frozen=True, slots=True)
class Deploy:
    """``deploy``. ``deployment.workloads`` carry no secrets yet: ``encrypted_secrets[i]`` holds the
    armored ciphertexts of workload ``i``, decrypted by the deploy handler."""

    deployment: DeploymentSpec
    encrypted_secrets: tuple[Mapping[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class WatchState:
    """``containerState``: ``prefix`` is ``""`` for every container."""

    prefix: str
    one_shot: bool = False


@dataclass(frozen=True, slots=True)
class LegacyDelete:
    """``containerDelete`` (legacy): delete one container, no answer."""

    ref: ContainerRef


@dataclass(frozen=True, slots=True)
class LegacyDeploy:
    """``deployLegacy``: not supported, logged."""

    request_id: str


@dataclass(frozen=True, slots=True)
class ListSecrets:
    target: Target


@dataclass(frozen=True, slots=True)
class Update:
    tag: str
    timeout_s: int
    token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Close:
    reason: CloseReason


@dataclass(frozen=True, slots=True)
class ContainerCommand:
    ref: ContainerRef
    operation: ContainerOperation


@dataclass(frozen=True, slots=True)
class DeleteContainers:
    """``deleteContainers``; ``target`` is ``None`` when the platform named none."""

    target: Target | None


@dataclass(frozen=True, slots=True)
class ContainerLogs:
    ref: ContainerRef
    streaming: bool
    tail_lines: int


@dataclass(frozen=True, slots=True)
class ReplaceToken:
    token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Inspect:
    ref: ContainerRef


@dataclass(frozen=True, slots=True)
class Unknown:
    """An empty ``AgentCommand`` or one this agent does not understand."""

    kind: str


Command = (
    Deploy
    | WatchState
    | LegacyDelete
    | LegacyDeploy
    | ListSecrets
    | Update
    | Close
    | ContainerCommand
    | DeleteContainers
    | ContainerLogs
    | ReplaceToken
    | Inspect
    | Unknown
)


def command_kind(command: Command) -> str:
    """A stable, low-cardinality name for logs and metrics."""
    return {
        Deploy: "deploy",
        WatchState: "container_state",
        LegacyDelete: "container_delete",
        LegacyDeploy: "deploy_legacy",
        ListSecrets: "list_secrets",
        Update: "update",
        Close: "close",
        ContainerCommand: "container_command",
        DeleteContainers: "delete_containers",
        ContainerLogs: "container_log",
        ReplaceToken: "replace_token",
        Inspect: "container_inspect",
        Unknown: "unknown",
    }[type(command)]


class CallbackKind(enum.IntEnum):
    """Callback commands; the value is the ``AgentCommandError`` member number (§5)."""

    LIST_SECRETS = 5
    DELETE_CONTAINERS = 9
    CONTAINER_LOG = 10
    CONTAINER_INSPECT = 12


# -- outbound deployment messages -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InstanceUpdate:
    workload_id: str
    state: ContainerState
    reason: str


@dataclass(frozen=True, slots=True)
class PullProgress:
    workload_id: str
    status: str
    fraction: float


@dataclass(frozen=True, slots=True)
class DeploymentMessage:
    """One ``DeploymentStatusMessage``: at most one of ``status``/``instance``/``progress``."""

    status: DeploymentStatus | None = None
    instance: InstanceUpdate | None = None
    progress: PullProgress | None = None
    log: tuple[str, ...] = ()
    level: LogLevel | None = None
