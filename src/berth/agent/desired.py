"""Desired state that survives the platform.

``DesiredState`` keeps the last successful deployment of each prefix (``berth.desired_state``);
``DesiredStateRuntime`` wraps the runtime so that deletes, stops and starts keep that record
true and every state item of a drifted workload carries a ``drift: …`` reason; ``Reconciler``
runs once at start when the platform cannot be reached: missing workloads are recreated, those
that should run are started, drift is reported (and fixed only when ``BERTH_FIX_DRIFT`` asks),
each action logged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import structlog

from berth.agent.commands import Deploy
from berth.agent.credentials import AgentKey
from berth.desired_state import (
    SPEC_HASH_LABEL,
    DesiredDeployment,
    DesiredStateStore,
    spec_hash,
    strip_secrets,
    with_password,
)
from berth.errors import BerthError, SecretError
from berth.model import (
    ContainerRef,
    ContainerState,
    ContainerStatus,
    DeleteOutcome,
    DeploymentSpec,
    ExpectedState,
    LogLevel,
    PrefixTarget,
    SecretValue,
    StateUpdate,
    Target,
    WorkloadSpec,
)
from berth.runtimes.base import Runtime

log = structlog.get_logger("berth.agent.desired")


class DesiredState:
    """The agent's side of the store: encrypts what must not be kept in clear, decrypts it back
    for a reconciliation. Every method is blocking-free for the loop (file I/O in threads)."""

    def __init__(self, store: DesiredStateStore, key: AgentKey | None) -> None:
        self.store = store
        self._key = key
        self.snapshot: dict[str, DesiredDeployment] = {}  # prefix -> desired, for drift checks

    async def load(self) -> None:
        loaded = await asyncio.to_thread(self.store.load_all)
        self.snapshot = {d.prefix: d for d in loaded}

    async def remember(self, command: Deploy) -> None:
        deployment = command.deployment
        if self._key is None:
            return
        secrets = {
            w.name: dict(command.encrypted_secrets[i]) if i < len(command.encrypted_secrets) else {}
            for i, w in enumerate(deployment.workloads)
        }
        try:
            passwords = {
                w.name: self._key.encrypt_to_self(w.registry_auth.password)
                for w in deployment.workloads
                if w.registry_auth is not None and w.registry_auth.password
            }
        except Exception as err:  # pysequoia raises plain exceptions; the deployment still succeeded
            log.warning("desired_state_not_saved", prefix=deployment.prefix, error=type(err).__name__)
            return
        desired = DesiredDeployment(
            deployment=strip_secrets(deployment),
            encrypted_secrets=secrets,
            encrypted_registry_passwords=passwords,
            saved_at=time.time(),
        )
        await self._change(desired.prefix, lambda: self.store.remember(desired))
        log.info("desired_state_saved", prefix=desired.prefix, workloads=len(deployment.workloads))

    async def forget(self, target: Target) -> None:
        prefix, name = (
            (target.prefix, None) if isinstance(target, PrefixTarget) else (target.prefix, target.name)
        )
        if prefix in self.snapshot:
            await self._change(prefix, lambda: self.store.forget(prefix, name))

    async def mark(self, ref: ContainerRef, *, stopped: bool) -> None:
        if ref.prefix in self.snapshot:
            await self._change(ref.prefix, lambda: self.store.mark(ref, stopped=stopped))

    async def _change(self, prefix: str, change: Callable[[], None]) -> None:
        def apply() -> DesiredDeployment | None:
            change()
            return self.store.load(prefix)

        try:
            current = await asyncio.to_thread(apply)
        except BerthError as err:
            log.warning("desired_state_not_saved", prefix=prefix, error=str(err))
            return
        if current is None:
            self.snapshot.pop(prefix, None)
        else:
            self.snapshot[prefix] = current

    def runnable(self, desired: DesiredDeployment, workload: WorkloadSpec) -> WorkloadSpec:
        """The workload with its secrets and registry password decrypted (raises SecretError)."""
        if self._key is None:
            raise SecretError("desired state", "the agent's key is not loaded")
        encrypted = desired.encrypted_secrets.get(workload.name, {})
        password = desired.encrypted_registry_passwords.get(workload.name)
        return dataclasses.replace(
            workload,
            secrets=self._key.decrypt_all(encrypted),
            registry_auth=with_password(
                workload.registry_auth, self._key.decrypt("registry password", password) if password else ""
            ),
        )

    def drift_of(self, status: ContainerStatus) -> str | None:
        """``drift: …`` when a container differs from what Berth deployed, else ``None``."""
        found = self._desired_workload(status.ref)
        if found is None or status.state is ContainerState.REMOVED:
            return None
        desired, workload = found
        # the file keeps secret names only in the encrypted map: the hash covers the names
        names = desired.encrypted_secrets.get(workload.name, {})
        workload = dataclasses.replace(workload, secrets={key: SecretValue("") for key in names})
        problems = []
        if status.image_tag != (workload.tag or "latest") or not status.image_name.endswith(
            workload.image_name
        ):
            problems.append(
                f"image {status.image_name}:{status.image_tag}, deployed {workload.image_name}:{workload.tag}"
            )
        deployed_hash = status.labels.get(SPEC_HASH_LABEL)
        if deployed_hash is not None and deployed_hash != spec_hash(workload):
            problems.append("configuration differs from the deployment")
        return f"drift: {'; '.join(problems)}" if problems else None

    def _desired_workload(self, ref: ContainerRef) -> tuple[DesiredDeployment, WorkloadSpec] | None:
        for desired in self.snapshot.values():
            for workload in desired.deployment.workloads:
                if workload.ref.key == ref.key:
                    return desired, workload
        return None


class DesiredStateRuntime:
    """The runtime, keeping the desired state true to what the platform commands and marking
    drift on the state stream. Other attributes (optional capabilities) pass through."""

    def __init__(self, inner: Runtime, desired: DesiredState) -> None:
        self._inner = inner
        self._desired = desired

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def preflight(self) -> Any:
        return await self._inner.preflight()

    async def deploy(self, deployment: DeploymentSpec, events: Any) -> None:
        await self._inner.deploy(deployment, events)

    async def start(self, ref: ContainerRef) -> None:
        await self._inner.start(ref)
        await self._desired.mark(ref, stopped=False)

    async def stop(self, ref: ContainerRef) -> None:
        await self._inner.stop(ref)
        await self._desired.mark(ref, stopped=True)

    async def restart(self, ref: ContainerRef) -> None:
        await self._inner.restart(ref)
        await self._desired.mark(ref, stopped=False)

    async def delete(self, target: Target) -> DeleteOutcome:
        outcome = await self._inner.delete(target)
        await self._desired.forget(target)
        return outcome

    async def inspect(self, ref: ContainerRef) -> str:
        return await self._inner.inspect(ref)

    def logs(self, ref: ContainerRef, *, follow: bool, tail_lines: int) -> Any:
        return self._inner.logs(ref, follow=follow, tail_lines=tail_lines)

    async def watch(self, prefix: str | None) -> AsyncIterator[StateUpdate]:
        updates = self._inner.watch(prefix)
        try:
            async for update in updates:
                yield self._marked(update)
        finally:
            await updates.aclose()  # type: ignore[attr-defined]

    async def list_state(self, prefix: str | None) -> StateUpdate:
        return self._marked(await self._inner.list_state(prefix))

    async def secret_keys(self, target: Target) -> list[str]:
        return await self._inner.secret_keys(target)

    async def aclose(self) -> None:
        await self._inner.aclose()

    def _marked(self, update: StateUpdate) -> StateUpdate:
        items = []
        for item in update.items:
            drift = self._desired.drift_of(item)
            items.append(dataclasses.replace(item, reason=drift) if drift else item)
        return dataclasses.replace(update, items=tuple(items))


class LoggedEvents:
    """DeployEvents for a reconciliation: there is no platform to tell, so the agent's log is
    where each step goes."""

    def __init__(self, prefix: str) -> None:
        self._log = log.bind(prefix=prefix)

    async def log(self, level: LogLevel, *lines: str) -> None:
        for line in lines:
            self._log.info("reconcile_step", level=level.name, line=line)

    async def instance(
        self, workload_id: str, state: ContainerState, reason: str, level: LogLevel = LogLevel.INFO
    ) -> None:
        self._log.info("reconcile_instance", workload_id=workload_id, state=state.name, reason=reason)

    async def progress(self, workload_id: str, status: str, fraction: float) -> None:
        return None


class Reconciler:
    """Brings the node back to its desired state once, without the platform."""

    def __init__(self, runtime: Runtime, desired: DesiredState, *, fix_drift: bool) -> None:
        self._runtime = runtime
        self._desired = desired
        self._fix_drift = fix_drift

    async def run(self) -> dict[str, int]:
        counts = {"recreated": 0, "started": 0, "drifted": 0, "failed": 0}
        for desired in list(self._desired.snapshot.values()):
            try:
                current = await self._runtime.list_state(desired.prefix)
            except BerthError as err:
                log.warning("reconcile_failed", prefix=desired.prefix, error=str(err))
                counts["failed"] += 1
                continue
            by_name = {item.ref.name: item for item in current.items}
            for workload in desired.deployment.workloads:
                outcome = await self._one(desired, workload, by_name.get(workload.name))
                if outcome:
                    counts[outcome] += 1
        log.info("reconcile_finished", **counts)
        return counts

    async def _one(
        self, desired: DesiredDeployment, workload: WorkloadSpec, item: ContainerStatus | None
    ) -> str:
        ref = workload.ref
        try:
            if item is None:
                log.warning("reconcile_recreating", container=ref.key, reason="missing")
                await self._redeploy(desired, workload)
                log.info("reconcile_recreated", container=ref.key)
                return "recreated"
            drift = self._desired.drift_of(item)
            if drift is not None:
                log.warning("drift_detected", container=ref.key, drift=drift, fixing=self._fix_drift)
                if self._fix_drift:
                    await self._redeploy(desired, workload)
                    log.info("drift_fixed", container=ref.key)
                return "drifted"
            if item.state is not ContainerState.RUNNING and self._should_run(desired, workload):
                log.warning("reconcile_starting", container=ref.key, state=item.state.name)
                await self._runtime.start(ref)
                log.info("reconcile_started", container=ref.key)
                return "started"
        except BerthError as err:
            log.error("reconcile_action_failed", container=ref.key, error=str(err))
            return "failed"
        return ""

    @staticmethod
    def _should_run(desired: DesiredDeployment, workload: WorkloadSpec) -> bool:
        expected = workload.docker.expected_state or ExpectedState()
        wants_running = expected.state in (ContainerState.RUNNING, ContainerState.UNSPECIFIED)
        return wants_running and workload.name not in desired.stopped

    async def _redeploy(self, desired: DesiredDeployment, workload: WorkloadSpec) -> None:
        spec = DeploymentSpec(
            id=f"reconcile-{desired.deployment.id}",
            prefix=desired.prefix,
            workloads=(self._desired.runnable(desired, workload),),
        )
        await self._runtime.deploy(spec, LoggedEvents(desired.prefix))
