"""KubernetesRuntime: the platform's commands applied to a cluster (crane-compatible, §15)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Final

import structlog

from berth.errors import NotFound, PermanentCommandError
from berth.model import (
    ContainerRef,
    DeleteOutcome,
    DeploymentSpec,
    LogItem,
    PrefixTarget,
    RuntimeInfo,
    StateUpdate,
    Target,
)
from berth.names import checked_label
from berth.runtimes.base import DeployEvents
from berth.runtimes.common.bridge import ThreadBridge
from berth.runtimes.kubernetes import resources
from berth.runtimes.kubernetes.api import KubeApi
from berth.runtimes.kubernetes.api_errors import Forbidden
from berth.runtimes.kubernetes.deploy import Deployer
from berth.runtimes.kubernetes.logs import LogReader
from berth.runtimes.kubernetes.manifests import APP_LABEL, RESTARTED_AT_ANNOTATION
from berth.runtimes.kubernetes.watcher import StateWatcher
from berth.runtimes.waits import WaitBoard
from berth.settings import KubernetesSettings

log = structlog.get_logger(__name__)
# Watches and log follows carry no client timeout (§17 #41): they get their own bounded threads.
STREAM_THREADS: Final = 32

# what deleting one workload removes (PVCs stay, §15.10); NotFound counts as success (§17 #33)
WORKLOAD_OBJECTS = (
    (resources.DEPLOYMENT, ""),
    (resources.SERVICE, ""),
    (resources.INGRESS, ""),
    (resources.CONFIG_MAP, ""),
    (resources.SECRET, ""),
    (resources.SECRET, "-reg"),
    (resources.SERVICE_MONITOR, ""),
)


PROTECTED_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})


def _now() -> str:
    """RFC 3339 with microseconds: two restarts within one second must still differ."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _strip(obj: dict[str, Any]) -> dict[str, Any]:
    obj.get("metadata", {}).pop("managedFields", None)
    return obj


class KubernetesRuntime:
    """Implements ``berth.runtimes.base.Runtime`` on a Kubernetes cluster."""

    def __init__(self, settings: KubernetesSettings) -> None:
        self._settings = settings
        self._api = KubeApi(settings)
        self._bridge = ThreadBridge("kube", STREAM_THREADS)
        self.waits = WaitBoard()  # rollout waits a newer command supersedes (SupersedableWaits)
        self._deployer = Deployer(self._api, self._bridge, settings, self.waits)
        self._logs = LogReader(self._api, self._bridge)

    async def preflight(self) -> RuntimeInfo:
        version = await self._bridge.call(self._api.version)
        return RuntimeInfo(
            kind="kubernetes",
            version=str(version.get("gitVersion", "")),
            api_version=f"{version.get('major', '')}.{version.get('minor', '')}",
        )

    async def deploy(self, deployment: DeploymentSpec, events: DeployEvents) -> None:
        await self._deployer.deploy(deployment, events)

    async def _scale(self, ref: ContainerRef, replicas: int | None) -> None:
        patch: dict[str, Any] = {
            "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT_ANNOTATION: _now()}}}}
        }
        if replicas is not None:
            patch["spec"]["replicas"] = replicas
        await self._bridge.call(self._api.merge_patch, resources.DEPLOYMENT, ref.prefix, ref.name, patch)
        log.info("kube_workload_patched", workload=ref.key, replicas=replicas)

    async def start(self, ref: ContainerRef) -> None:
        await self._scale(ref, 1)

    async def stop(self, ref: ContainerRef) -> None:
        await self._scale(ref, 0)

    async def restart(self, ref: ContainerRef) -> None:
        await self._scale(ref, None)

    async def delete(self, target: Target) -> DeleteOutcome:
        if isinstance(target, PrefixTarget):
            protected = PROTECTED_NAMESPACES | {
                self._settings.secret_namespace,
                self._settings.deployment_namespace,
            }
            if target.prefix in protected:
                raise PermanentCommandError(f"namespace {target.prefix} is protected: Berth never deletes it")
            gone = await self._bridge.call(self._api.delete, resources.NAMESPACE, None, target.prefix)
            note = f"namespace {target.prefix} " + ("deleted" if gone else "was already gone")
            return DeleteOutcome(notes=(note,))
        # an empty name would address the whole collection of each kind in the namespace
        checked_label("container name", target.name)
        notes = []
        for kind, suffix in WORKLOAD_OBJECTS:
            name = f"{target.name}{suffix}"
            try:
                if await self._bridge.call(self._api.delete, kind, target.prefix, name):
                    notes.append(f"deleted {kind.kind} {target.prefix}/{name}")
            except Forbidden as err:  # a narrower ClusterRole (no ingresses): say so, go on
                notes.append(f"could not delete {kind.kind} {target.prefix}/{name}: {err}")
        return DeleteOutcome(notes=tuple(notes) or (f"{target.key} was already gone",))

    async def inspect(self, ref: ContainerRef) -> str:
        deployment = await self._bridge.call(self._api.get, resources.DEPLOYMENT, ref.prefix, ref.name)
        pods = await self._bridge.call(
            self._api.list, resources.POD, ref.prefix, label_selector=f"{APP_LABEL}={ref.name}"
        )
        document = {
            "deployment": _strip(deployment),
            "pods": [_strip(p) for p in pods.get("items") or []],
        }
        return json.dumps(document, indent=2, sort_keys=True)

    def logs(self, ref: ContainerRef, *, follow: bool, tail_lines: int) -> AsyncIterator[LogItem]:
        return self._logs.logs(ref, follow=follow, tail_lines=tail_lines)

    def watch(self, prefix: str | None) -> AsyncIterator[StateUpdate]:
        watcher = StateWatcher(self._api, self._bridge, prefix or None, self._settings.resync_interval_s)
        return watcher.updates()

    async def list_state(self, prefix: str | None) -> StateUpdate:
        watcher = StateWatcher(self._api, self._bridge, prefix or None, self._settings.resync_interval_s)
        snapshot = await watcher.snapshot()
        return StateUpdate(tuple(snapshot.all().values()), initial=True)

    async def secret_keys(self, target: Target) -> list[str]:
        if isinstance(target, PrefixTarget):
            ns, name = target.prefix, f"{target.prefix}-shared"
        else:
            ns, name = target.prefix, target.name
        try:
            secret = await self._bridge.call(self._api.get, resources.SECRET, ns, name)
        except NotFound:
            return []
        return sorted((secret.get("data") or {}).keys())

    async def aclose(self) -> None:
        self._bridge.close()
        await self._bridge.call(self._api.close)
