"""The seam every backend implements. Handlers and the dispatcher know this and nothing about
gRPC, Docker or Kubernetes.

Error contract: every method raises only ``berth.errors.RuntimeFailure`` subclasses:
``NotFound`` (CommandError status 5), ``PermanentCommandError``/``InvalidSpec`` (the command
cannot succeed as given) or ``TemporaryCommandError`` (the engine is unavailable right now).
Runtimes never block the event loop: blocking SDK calls run in threads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from berth.model import (
    ContainerRef,
    ContainerState,
    DeleteOutcome,
    DeploymentSpec,
    LogItem,
    LogLevel,
    RuntimeInfo,
    StateUpdate,
    Target,
)
from berth.runtimes.waits import WaitBoard


class DeployEvents(Protocol):
    """Where a runtime reports a deployment's progress (the DeploymentStatus stream).

    The deploy handler sends IN_PROGRESS before and SUCCESSFUL/FAILED after ``Runtime.deploy``;
    runtimes never send a deployment status themselves. Calls never raise and never block for
    long: the handler buffers (bounded) and coalesces progress.
    """

    async def log(self, level: LogLevel, *lines: str) -> None: ...

    async def instance(
        self, workload_id: str, state: ContainerState, reason: str, level: LogLevel = LogLevel.INFO
    ) -> None: ...

    async def progress(self, workload_id: str, status: str, fraction: float) -> None: ...


@runtime_checkable
class Runtime(Protocol):
    """A deployment target: a Docker engine, a Kubernetes cluster, or memory (tests)."""

    async def preflight(self) -> RuntimeInfo:
        """Check the engine is reachable and supported; raise TemporaryCommandError if not."""
        ...

    async def deploy(self, deployment: DeploymentSpec, events: DeployEvents) -> None:
        """Apply every workload in order; return on success, raise RuntimeFailure on the first
        failure (after reporting it through ``events`` and restoring what was replaced)."""
        ...

    async def start(self, ref: ContainerRef) -> None: ...

    async def stop(self, ref: ContainerRef) -> None: ...

    async def restart(self, ref: ContainerRef) -> None: ...

    async def delete(self, target: Target) -> DeleteOutcome:
        """Delete one container/workload or a whole prefix. Missing counts as success."""
        ...

    async def inspect(self, ref: ContainerRef) -> str:
        """The engine's own JSON description of the target (Docker inspect, k8s Deployment)."""
        ...

    def logs(self, ref: ContainerRef, *, follow: bool, tail_lines: int) -> AsyncIterator[LogItem]:
        """History (``tail_lines`` last lines, 0 = none) then, with ``follow``, new lines until
        the consumer stops iterating. Lines keep the engine's timestamp prefix and newline.
        Raises NotFound before yielding when the target does not exist. With ``follow`` the
        iterator survives container restarts; it ends only when the consumer closes it."""
        ...

    def watch(self, prefix: str | None) -> AsyncIterator[StateUpdate]:
        """The full list first (``initial=True``), then changes (REMOVED on deletion), until the
        consumer stops iterating. ``None``/``""`` watches everything. Survives engine restarts
        (resyncs with a full ``initial=True`` list after reconnecting)."""
        ...

    async def list_state(self, prefix: str | None) -> StateUpdate:
        """The full list once (one-shot containerState)."""
        ...

    async def secret_keys(self, target: Target) -> list[str]:
        """Secret key names (never values) of a container or a prefix; empty when none."""
        ...

    async def aclose(self) -> None:
        """Stop watches and follows, release SDK clients and thread pools."""
        ...


class SelfUpdater(Protocol):
    """Optional capability of a runtime that can replace the agent's own container or service."""

    async def begin_update(self, tag: str, timeout_s: int) -> None:
        """Start the successor (which connects with the already-persisted new token). Raises
        ``berth.errors.UpdateRefused`` with a user-facing reason when it cannot."""
        ...

    async def self_destruct(self) -> bool:
        """SELF_DESTRUCT arrived: if an update is pending and within its deadline, remove the old
        agent (which may end this process) and return True; otherwise return False."""
        ...

    def own_container_name(self) -> str | None:
        """The agent's own container name without a leading ``/`` (AgentInfo.containerName)."""
        ...


class SelfScaler(Protocol):
    """Optional capability of an orchestrated runtime: make sure the agent is not restarted after
    ``close{SHUTDOWN}`` (Kubernetes: scale the agent's own Deployment to 0, §13.3)."""

    async def scale_down_self(self) -> None:
        """Scale the agent's own workload down; raises a ``berth.errors.BerthError`` with a clear
        reason when it cannot (the agent then logs it and exits anyway)."""
        ...


class CredentialStore(Protocol):
    """Where the agent keeps ``secret.key``, ``token.jwt`` and ``token-nonce.blacklist``: files in
    the persistence folder (Docker, systemd) or one Secret (Kubernetes, §15.11). Writes are
    atomic (temp + fsync + rename, or one API write); values are never logged."""

    def read(self, key: str) -> str | None:
        """The stored value, or ``None`` when absent (an empty stored value counts as absent)."""
        ...

    def write(self, key: str, value: str) -> None:
        """Store atomically; raises ``berth.errors.PersistenceError`` with a clear reason."""
        ...

    def delete(self, key: str) -> None:
        """Remove; a missing value counts as already deleted."""
        ...


@runtime_checkable
class SupersedableWaits(Protocol):
    """Optional capability of a runtime whose deploys wait (for a rollout): the dispatcher ends
    those waits when a newer command for the same workload or prefix, or a shutdown, arrives."""

    waits: WaitBoard


@dataclass(frozen=True, slots=True)
class DiskFigures:
    """For the metrics endpoint: free bytes of the engine's data root (``None`` when unknown)
    and the bytes image pruning freed since the agent started."""

    free_bytes: int | None = None
    pruned_bytes_total: int = 0


@runtime_checkable
class ReportsDiskFigures(Protocol):
    """Optional capability of a runtime that watches its engine's disk (Docker)."""

    def disk_figures(self) -> DiskFigures: ...
