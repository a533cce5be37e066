"""Waiting for a Deployment's rollout (§17 #45): observed generation, updated and available
replicas, with a timeout; the failure names the reason (a pod stuck in ImagePullBackOff, ...)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from berth.errors import PermanentCommandError
from berth.model import ContainerState, LogLevel
from berth.runtimes.base import DeployEvents
from berth.runtimes.kubernetes.state import newest_pod, pod_state

Obj = dict[str, Any]
POLL_INTERVAL_S: Final = 0.5
# waiting reasons that never heal on their own: fail at once instead of at the timeout
FATAL_REASONS: Final = frozenset(
    {"InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError", "CreateContainerError"}
)


@dataclass(frozen=True, slots=True)
class RolloutProgress:
    done: bool
    summary: str  # "1/1 updated, 0/1 available"
    failure: str | None = None


def assess(deployment: Obj, pods: list[Obj]) -> tuple[RolloutProgress, ContainerState, str]:
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    name = deployment["metadata"]["name"]
    wanted = int(spec.get("replicas", 1))
    generation = int(deployment["metadata"].get("generation", 0))
    observed = int(status.get("observedGeneration", 0))
    updated = int(status.get("updatedReplicas", 0))
    available = int(status.get("availableReplicas", 0))
    total = int(status.get("replicas", 0))
    summary = f"{updated}/{wanted} updated, {available}/{wanted} available"
    pod = newest_pod(pods)
    state, reason = (ContainerState.WAITING, "no pod yet") if pod is None else pod_state(pod, name)
    if wanted == 0:
        state, reason = ContainerState.EXITED, "scaled to 0"
    done = observed >= generation and updated >= wanted and available >= wanted and total <= wanted
    failure = None
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            failure = f"progress deadline exceeded: {condition.get('message', '')}"
    if reason in FATAL_REASONS and pod is not None:
        failure = f"pod {pod['metadata']['name']}: {reason}"
    return RolloutProgress(done=done, summary=summary, failure=failure), state, reason


async def wait_for_rollout(
    fetch: Callable[[], Awaitable[tuple[Obj, list[Obj]]]],
    events: DeployEvents,
    workload_id: str,
    timeout_s: float,
) -> None:
    """Poll until the rollout is complete; raise ``PermanentCommandError`` with the reason."""
    deadline = time.monotonic() + timeout_s
    last: tuple[ContainerState, str] | None = None
    while True:
        deployment, pods = await fetch()
        progress, state, reason = assess(deployment, pods)
        if (state, reason) != last:
            last = (state, reason)
            level = LogLevel.WARNING if state == ContainerState.EXITED else LogLevel.INFO
            await events.instance(workload_id, state, reason, level)
        if progress.done:
            await events.instance(workload_id, ContainerState.RUNNING, "rollout complete")
            return
        if progress.failure:
            raise PermanentCommandError(f"rollout failed: {progress.failure} ({progress.summary})")
        if time.monotonic() >= deadline:
            pod = newest_pod(pods)
            where = (
                f"pod {pod['metadata']['name']} is {state.name} ({reason})" if pod else "no pod was created"
            )
            raise PermanentCommandError(
                f"rollout did not complete within {timeout_s:g} s: {where}; {progress.summary}"
            )
        await asyncio.sleep(POLL_INTERVAL_S)
