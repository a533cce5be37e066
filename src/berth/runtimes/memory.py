"""An in-memory Runtime: containers are records, logs are lists, state changes are events.

Used by the tests and by ``BERTH_RUNTIME=memory`` (demo, protocol conformance without an engine).
It follows the Docker agent's naming (``<prefix>-<name>``, the §7 id rule, the §11 lookup) so the
agent-side behaviour it drives is the same as with a real engine.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from berth.errors import InvalidSpec, NotFound, PermanentCommandError
from berth.model import (
    PREFIX_LABEL,
    SECRET_KEYS_LABEL,
    ContainerRef,
    ContainerState,
    ContainerStatus,
    DeleteOutcome,
    DeploymentSpec,
    LogItem,
    LogLevel,
    PrefixTarget,
    RuntimeInfo,
    StateUpdate,
    Target,
    WorkloadSpec,
)
from berth.names import label_problem
from berth.runtimes.base import DeployEvents

_WATCH_QUEUE_SIZE = 1000


@dataclass
class MemoryContainer:
    prefix: str
    name: str
    image: str
    tag: str
    state: ContainerState = ContainerState.RUNNING
    labels: dict[str, str] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    logs: list[str] = field(default_factory=list)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))

    @property
    def full_name(self) -> str:
        return f"{self.prefix}-{self.name}" if self.prefix else self.name

    def status(self, watched_prefix: str | None) -> ContainerStatus:
        if watched_prefix:
            ref = ContainerRef(watched_prefix, self.full_name.removeprefix(f"{watched_prefix}-"))
        else:
            ref = ContainerRef("", self.full_name)
        return ContainerStatus(
            ref=ref,
            state=self.state,
            reason={ContainerState.RUNNING: "running", ContainerState.EXITED: "exited"}.get(
                self.state, "created"
            ),
            image_name=self.image,
            image_tag=self.tag or "latest",
            created_at=self.created_at,
            labels=dict(self.labels),
        )


class _Watcher:
    def __init__(self, prefix: str | None) -> None:
        self.prefix = prefix or None
        self.queue: asyncio.Queue[ContainerStatus] = asyncio.Queue(_WATCH_QUEUE_SIZE)
        self.overflowed = False

    def offer(self, container: MemoryContainer, removed: bool) -> None:
        if self.prefix is not None and container.prefix != self.prefix:
            return
        status = container.status(self.prefix)
        item = ContainerStatus.removed(status.ref) if removed else status
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed = True


class MemoryRuntime:
    """A Runtime whose engine is a dict. Tests may set ``fail_images`` (an image whose deploy fails),
    ``deploy_delay_s`` and read ``deployments`` (every DeploymentSpec received, secrets decrypted)."""

    def __init__(self) -> None:
        self.containers: dict[str, MemoryContainer] = {}
        self.shared_secret_keys: dict[str, list[str]] = {}
        self.deployments: list[DeploymentSpec] = []
        self.operations: list[tuple[str, str]] = []
        self.fail_images: set[str] = set()
        self.deploy_delay_s = 0.0
        self._watchers: set[_Watcher] = set()
        self._log_changed = asyncio.Event()
        self.closed = False

    # -- test conveniences --------------------------------------------------------------------------

    def add_container(
        self,
        prefix: str,
        name: str,
        *,
        image: str = "local/busybox",
        tag: str = "1",
        state: ContainerState = ContainerState.RUNNING,
        logs: list[str] | None = None,
        secret_keys: list[str] | None = None,
    ) -> MemoryContainer:
        labels = {PREFIX_LABEL: prefix} if prefix else {}
        if secret_keys:
            labels[SECRET_KEYS_LABEL] = ",".join(secret_keys)
        container = MemoryContainer(prefix, name, image, tag, state, labels, logs=list(logs or []))
        self._put(container)
        return container

    def append_log(self, ref: ContainerRef, line: str) -> None:
        container = self._find(ref)
        container.logs.append(line)
        self._log_changed.set()
        self._log_changed = asyncio.Event()

    # -- internals ---------------------------------------------------------------------------------

    def _put(self, container: MemoryContainer) -> None:
        self.containers[container.full_name] = container
        self._notify(container, removed=False)

    def _remove(self, container: MemoryContainer) -> None:
        self.containers.pop(container.full_name, None)
        self._notify(container, removed=True)

    def _notify(self, container: MemoryContainer, *, removed: bool) -> None:
        for watcher in self._watchers:
            watcher.offer(container, removed)

    def _find(self, ref: ContainerRef) -> MemoryContainer:
        """§11 lookup: ``("", "p-web")`` and ``("p", "web")`` both name container ``p-web``."""
        container = self.containers.get(ref.key)
        if container is None or (ref.prefix and container.prefix != ref.prefix):
            raise NotFound(f"container not found: {ref.key}")
        return container

    def _set_state(self, ref: ContainerRef, state: ContainerState) -> None:
        container = self._find(ref)
        container.state = state
        self._notify(container, removed=False)

    # -- Runtime -------------------------------------------------------------------------------------

    async def preflight(self) -> RuntimeInfo:
        return RuntimeInfo(kind="memory", version="1")

    async def deploy(self, deployment: DeploymentSpec, events: DeployEvents) -> None:
        self.deployments.append(deployment)
        if deployment.shared_secrets:
            self.shared_secret_keys[deployment.prefix] = sorted(deployment.shared_secrets)
        for workload in deployment.workloads:
            await self._deploy_one(workload, events)

    async def _deploy_one(self, workload: WorkloadSpec, events: DeployEvents) -> None:
        if label_problem(workload.prefix) or label_problem(f"{workload.prefix}-{workload.name}"):
            raise InvalidSpec(
                "prefix/container name", f"{workload.prefix}-{workload.name} is not an RFC 1123 label"
            )
        full_name = f"{workload.prefix}-{workload.name}"
        image = "/".join(p for p in (workload.registry, workload.image_name) if p)
        await events.log(
            LogLevel.INFO, f"Deploying container: {full_name}", f"Using image: {image}:{workload.tag}"
        )
        existing = self.containers.get(full_name)
        if existing is not None:
            await events.instance(workload.id, existing.state, "replacing")
            self._remove(existing)
            await events.instance(workload.id, ContainerState.WAITING, "removed")
        await events.progress(workload.id, "Pulling", 0.0)
        if self.deploy_delay_s:
            await asyncio.sleep(self.deploy_delay_s)
        if workload.image_name in self.fail_images:
            reason = f"image {workload.image_name} cannot be pulled"
            await events.instance(workload.id, ContainerState.UNSPECIFIED, reason, LogLevel.ERROR)
            raise PermanentCommandError(reason)
        await events.progress(workload.id, "Pull complete", 1.0)
        labels = {**workload.docker.labels, PREFIX_LABEL: workload.prefix}
        if workload.secrets:
            labels[SECRET_KEYS_LABEL] = ",".join(sorted(workload.secrets))
        container = MemoryContainer(
            workload.prefix,
            workload.name,
            image,
            workload.tag,
            ContainerState.RUNNING,
            labels,
            environment={**workload.environment, **workload.secrets},
        )
        self._put(container)
        await events.instance(workload.id, ContainerState.RUNNING, "running")
        await events.log(LogLevel.INFO, f"Container deployed: {full_name}")

    async def start(self, ref: ContainerRef) -> None:
        self.operations.append(("start", ref.key))
        self._set_state(ref, ContainerState.RUNNING)

    async def stop(self, ref: ContainerRef) -> None:
        self.operations.append(("stop", ref.key))
        self._set_state(ref, ContainerState.EXITED)

    async def restart(self, ref: ContainerRef) -> None:
        self.operations.append(("restart", ref.key))
        self._set_state(ref, ContainerState.RUNNING)

    async def delete(self, target: Target) -> DeleteOutcome:
        if isinstance(target, PrefixTarget):
            doomed = [c for c in self.containers.values() if c.prefix == target.prefix]
            for container in doomed:
                self._remove(container)
            self.operations.append(("delete_prefix", target.prefix))
            return DeleteOutcome(notes=(f"deleted {len(doomed)} containers",))
        self.operations.append(("delete", target.key))
        try:
            container = self._find(target)
        except NotFound:
            return DeleteOutcome(notes=("not found",))
        self._remove(container)
        return DeleteOutcome()

    async def inspect(self, ref: ContainerRef) -> str:
        container = self._find(ref)
        return json.dumps(
            {
                "Name": f"/{container.full_name}",
                "State": {"Status": container.status(None).reason},
                "Config": {"Image": f"{container.image}:{container.tag}", "Labels": container.labels},
            }
        )

    async def logs(self, ref: ContainerRef, *, follow: bool, tail_lines: int) -> AsyncIterator[LogItem]:
        container = self._find(ref)
        sent = len(container.logs)
        for line in container.logs[max(0, sent - tail_lines) :] if tail_lines > 0 else []:
            yield line
        while follow:
            changed = self._log_changed
            while sent < len(container.logs):
                yield container.logs[sent]
                sent += 1
            await changed.wait()

    async def watch(self, prefix: str | None) -> AsyncIterator[StateUpdate]:
        watcher = _Watcher(prefix)
        self._watchers.add(watcher)
        try:
            yield await self.list_state(prefix)
            while True:
                if watcher.overflowed:
                    watcher.overflowed = False
                    while not watcher.queue.empty():
                        watcher.queue.get_nowait()
                    yield await self.list_state(prefix)
                    continue
                first = await watcher.queue.get()
                batch = [first]
                while not watcher.queue.empty():
                    batch.append(watcher.queue.get_nowait())
                yield StateUpdate(items=tuple(batch))
        finally:
            self._watchers.discard(watcher)

    @property
    def watcher_count(self) -> int:
        return len(self._watchers)

    async def list_state(self, prefix: str | None) -> StateUpdate:
        items = tuple(
            c.status(prefix or None) for c in self.containers.values() if not prefix or c.prefix == prefix
        )
        return StateUpdate(items=items, initial=True)

    async def secret_keys(self, target: Target) -> list[str]:
        if isinstance(target, PrefixTarget):
            return list(self.shared_secret_keys.get(target.prefix, []))
        try:
            container = self._find(target)
        except NotFound:
            return []
        keys = container.labels.get(SECRET_KEYS_LABEL, "")
        return [k for k in keys.split(",") if k]

    async def aclose(self) -> None:
        self.closed = True
