"""``deploy``: decrypt the secrets, run the runtime, report on the DeploymentStatus stream (§6.2).

The stream opens with IN_PROGRESS ["Started."], carries the runtime's events through a bounded
buffer (progress coalesced per workload), ends with exactly one SUCCESSFUL/FAILED and is
half-closed exactly once. When the platform completes the call early, nothing more is sent.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Protocol

import structlog

from berth.agent.commands import Deploy, DeploymentMessage, InstanceUpdate, PullProgress
from berth.agent.ports import OutboundStream, PlatformLink
from berth.errors import BerthError, SecretError
from berth.model import (
    ContainerState,
    DeploymentSpec,
    DeploymentStatus,
    LogLevel,
    SecretValue,
)
from berth.runtimes.base import Runtime

log = structlog.get_logger("berth.agent.deploy")

BUFFER_MESSAGES: Final = 512


class SecretDecryptor(Protocol):
    def decrypt_all(self, secrets: Mapping[str, str]) -> dict[str, SecretValue]: ...


class _ProgressMarker:
    """A place in the queue where the latest progress of one workload is sent."""

    __slots__ = ("workload_id",)

    def __init__(self, workload_id: str) -> None:
        self.workload_id = workload_id


class DeploymentReporter:
    """The runtime's ``DeployEvents``: a bounded, order-keeping buffer in front of the stream.

    Log lines beyond the buffer are dropped and counted (a summary line says so); progress is
    coalesced (only the latest fraction per workload is sent); instance states are never dropped.
    """

    def __init__(self, stream: OutboundStream[DeploymentMessage], capacity: int = BUFFER_MESSAGES) -> None:
        self._stream = stream
        self._capacity = capacity
        self._queue: deque[DeploymentMessage | _ProgressMarker] = deque()
        self._progress: dict[str, PullProgress] = {}
        self._wakeup = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._closing = False
        self.dropped = 0
        self.platform_done = False

    # -- DeployEvents ---------------------------------------------------------------------------

    async def log(self, level: LogLevel, *lines: str) -> None:
        if self.platform_done or not lines:
            return
        if len(self._queue) >= self._capacity:
            self.dropped += 1
            return
        self._push(DeploymentMessage(log=tuple(lines), level=level))

    async def instance(
        self, workload_id: str, state: ContainerState, reason: str, level: LogLevel = LogLevel.INFO
    ) -> None:
        if self.platform_done:
            return
        while len(self._queue) >= self._capacity and not self.platform_done:
            self._space.clear()
            await self._space.wait()
        self._push(DeploymentMessage(instance=InstanceUpdate(workload_id, state, reason), level=level))

    async def progress(self, workload_id: str, status: str, fraction: float) -> None:
        if self.platform_done:
            return
        pending = workload_id in self._progress
        self._progress[workload_id] = PullProgress(workload_id, status, min(1.0, max(0.0, fraction)))
        if not pending:
            self._queue.append(_ProgressMarker(workload_id))
            self._wakeup.set()

    # -- the sender ---------------------------------------------------------------------------------

    async def send_now(self, message: DeploymentMessage) -> None:
        """Send directly (first and last message), after everything buffered."""
        await self.flush()
        if not self.platform_done and not await self._stream.send(message):
            self.platform_done = True

    def _push(self, message: DeploymentMessage) -> None:
        self._queue.append(message)
        self._wakeup.set()

    async def run_sender(self) -> None:
        """Drain the buffer into the stream until ``finish_sending`` and the buffer is empty."""
        while True:
            await self._drain_once()
            if self._closing and not self._queue:
                return
            self._wakeup.clear()
            if not self._queue:
                await self._wakeup.wait()

    async def _drain_once(self) -> None:
        while self._queue:
            item = self._queue.popleft()
            self._space.set()
            if self.platform_done:
                continue
            if isinstance(item, _ProgressMarker):
                progress = self._progress.pop(item.workload_id, None)
                if progress is None:
                    continue
                message = DeploymentMessage(progress=progress)
            else:
                message = item
            if not await self._stream.send(message):
                self.platform_done = True
                log.info("deployment_stream_completed_by_platform")

    async def flush(self) -> None:
        await self._drain_once()

    def finish_sending(self) -> None:
        self._closing = True
        self._wakeup.set()


class SuccessfulDeployments(Protocol):
    """Where a successful deployment is remembered (the desired state)."""

    async def remember(self, command: Deploy) -> None: ...


@dataclass(frozen=True)
class DeployHandler:
    runtime: Runtime
    decryptor: SecretDecryptor
    link: PlatformLink
    desired: SuccessfulDeployments | None = None

    def decrypt(self, command: Deploy) -> DeploymentSpec:
        """Every workload's secrets, decrypted before the runtime sees them (raises SecretError)."""
        workloads = []
        for index, workload in enumerate(command.deployment.workloads):
            encrypted = command.encrypted_secrets[index] if index < len(command.encrypted_secrets) else {}
            workloads.append(dataclasses.replace(workload, secrets=self.decryptor.decrypt_all(encrypted)))
        return dataclasses.replace(command.deployment, workloads=tuple(workloads))

    async def handle(self, command: Deploy) -> str:
        deployment_id = command.deployment.id
        if not deployment_id:
            log.warning("deploy_ignored", reason="empty deployment id")
            return "ignored"
        stream = await self.link.open_deployment_status(deployment_id)
        reporter = DeploymentReporter(stream)
        outcome = DeploymentStatus.FAILED
        final_lines: tuple[str, ...] = ()
        try:
            await reporter.send_now(
                DeploymentMessage(status=DeploymentStatus.IN_PROGRESS, log=("Started.",), level=LogLevel.INFO)
            )
            try:
                deployment = self.decrypt(command)
            except SecretError as err:
                final_lines = (str(err),)
                log.warning("deploy_secret_failed", secret_key=err.key)
                return "failed"
            if not deployment.workloads:
                outcome = DeploymentStatus.SUCCESSFUL
                return "successful"
            sender = asyncio.create_task(reporter.run_sender(), name=f"deploy-sender:{deployment_id}")
            try:
                await self.runtime.deploy(deployment, reporter)
                outcome = DeploymentStatus.SUCCESSFUL
                if self.desired is not None:
                    await self.desired.remember(command)
            except BerthError as err:
                final_lines = (f"Deployment failed: {err}",)
                log.warning("deploy_failed", error=str(err))
            finally:
                reporter.finish_sending()
                await sender
            return "successful" if outcome == DeploymentStatus.SUCCESSFUL else "failed"
        finally:
            if outcome != DeploymentStatus.SUCCESSFUL and not final_lines:
                final_lines = ("Deployment failed: the agent stopped before it finished",)
            if reporter.dropped:
                await reporter.log(
                    LogLevel.WARNING, f"{reporter.dropped} log messages were dropped (buffer full)"
                )
            level = LogLevel.INFO if outcome == DeploymentStatus.SUCCESSFUL else LogLevel.ERROR
            await reporter.send_now(DeploymentMessage(status=outcome, log=final_lines, level=level))
            await stream.close()
