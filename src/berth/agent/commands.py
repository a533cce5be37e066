"""The platform's commands as a closed union of frozen dataclasses (made by ``codec.py``), each
with its route (lane, handler, error answer: ``routing.py``), and the messages the agent sends
back, in domain terms. Nothing here knows about gRPC."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from berth.agent.routing import (
    Ignored,
    Inline,
    OnLifecycle,
    Queued,
    Route,
    Stream,
    Supersede,
    not_served,
    target_key,
)
from berth.model import (
    CloseReason,
    ContainerOperation,
    ContainerRef,
    ContainerState,
    DeploymentSpec,
    DeploymentStatus,
    LogLevel,
    PrefixTarget,
    Target,
)


@dataclass(frozen=True, slots=True)
class Deploy:
    """``deploy``. ``deployment.workloads`` carry no secrets yet: ``encrypted_secrets[i]`` holds the
    armored ciphertexts of workload ``i``, decrypted by the deploy handler."""

    deployment: DeploymentSpec
    encrypted_secrets: tuple[Mapping[str, str], ...] = ()

    def route(self) -> Route:
        spec = self.deployment
        names = frozenset(w.name for w in spec.workloads)
        return Route(
            "deploy",
            Queued(target_key(PrefixTarget(spec.prefix))),
            lambda h: h.deploy.handle(self),
            context={"deployment_id": spec.id, "prefix": spec.prefix},
            supersedes=Supersede(f"deployment {spec.id}", spec.prefix, names),
        )


@dataclass(frozen=True, slots=True)
class WatchState:
    """``containerState``: ``prefix`` is ``""`` for every container."""

    prefix: str
    one_shot: bool = False

    def route(self) -> Route:
        return Route(
            "container_state",
            Stream(f"state:{self.prefix}"),
            lambda h: h.state.handle(self),
            context={"prefix": self.prefix},
        )


@dataclass(frozen=True, slots=True)
class ContainerLogs:
    """``containerLog``: a follow (``streaming``) on its own stream, else one callback answer."""

    ref: ContainerRef
    streaming: bool
    tail_lines: int

    def route(self) -> Route:
        if self.streaming:
            # Streaming failures get no CommandError (§8).
            return Route(
                "container_log",
                Stream(f"log:{self.ref.key}"),
                lambda h: h.log_stream.handle(self),
                context={"container": self.ref.key},
            )
        return Route.reply(CallbackKind.CONTAINER_LOG, self.ref, lambda h: h.callbacks.container_log(self))


@dataclass(frozen=True, slots=True)
class ListSecrets:
    """``listSecrets``: answered with ``SecretList``, the keys of the target's secrets (never their
    values) and the agent's public key to encrypt new ones with."""

    target: Target

    def route(self) -> Route:
        return Route.reply(CallbackKind.LIST_SECRETS, self.target, lambda h: h.callbacks.list_secrets(self))


@dataclass(frozen=True, slots=True)
class DeleteContainers:
    """``deleteContainers``; ``target`` is ``None`` when the platform named none."""

    target: Target | None

    def route(self) -> Route:
        match self.target:
            case PrefixTarget(prefix=prefix):
                ends: Supersede | None = Supersede(f"deleteContainers of prefix {prefix}", prefix)
            case ContainerRef() as ref:
                ends = Supersede.container("deleteContainers", ref)
            case None:
                ends = None
        return Route.reply(
            CallbackKind.DELETE_CONTAINERS, self.target, lambda h: h.callbacks.delete_containers(self), ends
        )


@dataclass(frozen=True, slots=True)
class Inspect:
    """``containerInspect``: answered with ``ContainerInspect``."""

    ref: ContainerRef

    def route(self) -> Route:
        return Route.reply(CallbackKind.CONTAINER_INSPECT, self.ref, lambda h: h.callbacks.inspect(self))


@dataclass(frozen=True, slots=True)
class ContainerCommand:
    """``containerCommand``: start, stop or restart one container; no answer."""

    ref: ContainerRef
    operation: ContainerOperation

    def route(self) -> Route:
        stops = self.operation == ContainerOperation.STOP
        return Route.behind(
            "container_command",
            self.ref,
            lambda h: h.callbacks.container_command(self),
            supersedes=Supersede.container("stop", self.ref) if stops else None,
        )


@dataclass(frozen=True, slots=True)
class LegacyDelete:
    """``containerDelete`` (legacy): delete one container, no answer."""

    ref: ContainerRef

    def route(self) -> Route:
        return Route.behind(
            "container_delete",
            self.ref,
            lambda h: h.callbacks.legacy_delete(self),
            supersedes=Supersede.container("deleteContainers", self.ref),
        )


@dataclass(frozen=True, slots=True)
class Update:
    """``update``: swap the token, then hand over to the self-updater (or ``AbortUpdate``)."""

    tag: str
    timeout_s: int
    token: str = field(repr=False)

    def route(self) -> Route:
        return Route(
            "update",
            Queued("agent"),
            OnLifecycle(lambda h: h.update(self)),
            context={"tag": self.tag},
        )


@dataclass(frozen=True, slots=True)
class ReplaceToken:
    token: str = field(repr=False)

    def route(self) -> Route:
        return Route("replace_token", Inline(), OnLifecycle(lambda h: h.replace_token(self)))


@dataclass(frozen=True, slots=True)
class Close:
    reason: CloseReason

    def route(self) -> Route:
        name = self.reason.name
        ends_waits = self.reason in (CloseReason.SHUTDOWN, CloseReason.REVOKE_TOKEN)
        return Route(
            "close",
            Inline(),
            OnLifecycle(lambda h: h.close(self)),
            context={"reason": name},
            supersedes=Supersede(f"close({name})") if ends_waits else None,
        )


@dataclass(frozen=True, slots=True)
class LegacyDeploy:
    """``deployLegacy``: not supported, logged."""

    request_id: str

    def route(self) -> Route:
        lane = Ignored("legacy deploy is not supported")
        return Route("deploy_legacy", lane, not_served, {"request_id": self.request_id})


@dataclass(frozen=True, slots=True)
class Unknown:
    """An empty ``AgentCommand`` or one this agent does not understand."""

    kind: str

    def route(self) -> Route:
        return Route("unknown", Ignored("not understood by this agent"), not_served, {"detail": self.kind})


class CallbackKind(enum.IntEnum):
    """Callback commands; the value is the ``AgentCommandError`` member number (§5)."""

    LIST_SECRETS = 5
    DELETE_CONTAINERS = 9
    CONTAINER_LOG = 10
    CONTAINER_INSPECT = 12


Command = (
    Deploy
    | WatchState
    | ContainerLogs
    | ListSecrets
    | DeleteContainers
    | Inspect
    | ContainerCommand
    | LegacyDelete
    | Update
    | ReplaceToken
    | Close
    | LegacyDeploy
    | Unknown
)
"""Every command kind; each declares its ``route()``, the only thing the dispatcher reads."""


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
