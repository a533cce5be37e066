"""The deploy pipeline (§15.2 order, §17 corrections): namespace first, then per workload the
ConfigMap, PVCs, Secret, Service, pull secret, Deployment, Ingress and ServiceMonitor, each a
server-side apply; objects the new request no longer produces are removed (§17 #53); then the
rollout wait (§17 #45) unless switched off."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog

from berth.errors import PermanentCommandError, RuntimeFailure
from berth.model import ContainerState, DeploymentSpec, LogLevel, WorkloadSpec
from berth.names import check_unique
from berth.runtimes.base import DeployEvents
from berth.runtimes.common.bridge import ThreadBridge
from berth.runtimes.kubernetes import manifests, resources
from berth.runtimes.kubernetes.api import KubeApi
from berth.runtimes.kubernetes.api_errors import Forbidden
from berth.runtimes.kubernetes.compat import ignored_fields, rollout_timeout_s
from berth.runtimes.kubernetes.manifests import APP_LABEL, MANAGED, WorkloadObjects
from berth.runtimes.kubernetes.permissions import require_apply_permissions
from berth.runtimes.kubernetes.rollback import roll_back
from berth.runtimes.kubernetes.rollout import wait_for_rollout
from berth.runtimes.waits import Superseded, WaitBoard
from berth.settings import KubernetesSettings

log = structlog.get_logger(__name__)
Obj = dict[str, Any]
MONITORING_API = "monitoring.coreos.com/v1"


class Deployer:
    def __init__(
        self, api: KubeApi, bridge: ThreadBridge, settings: KubernetesSettings, waits: WaitBoard | None = None
    ) -> None:
        self._api = api
        self._bridge = bridge
        self._settings = settings
        self._waits = waits or WaitBoard()

    async def deploy(self, deployment: DeploymentSpec, events: DeployEvents) -> None:
        started = time.monotonic()
        try:
            await self._deploy(deployment, events)
        except RuntimeFailure as err:
            await events.log(LogLevel.ERROR, f"Deployment failed: {err}")
            log.warning("kube_deploy_failed", deployment_id=deployment.id, error=str(err))
            raise
        log.info(
            "kube_deploy_finished",
            deployment_id=deployment.id,
            workloads=len(deployment.workloads),
            duration_s=round(time.monotonic() - started, 3),
        )

    async def _deploy(self, deployment: DeploymentSpec, events: DeployEvents) -> None:
        # check and build every object first: an invalid request changes nothing in the cluster
        check_unique("workload name", (w.ref.key for w in deployment.workloads))
        built = [(w, manifests.build(w, deployment.id, self._settings)) for w in deployment.workloads]
        monitoring = await self._prepare(deployment, built, events)
        total = max(len(built), 1)
        rolled: set[str] = set()  # workloads whose template this deploy changed
        for index, (workload, objects) in enumerate(built):
            if await self._apply_workload(workload, objects, events, monitoring):
                rolled.add(workload.id)
            await events.progress(workload.id, "applied", (index + 1) / total * 0.5)
        if not self._settings.wait_for_rollout:
            for workload, _ in built:
                await events.instance(workload.id, ContainerState.WAITING, "applied; rollout wait is off")
                await events.progress(workload.id, "applied", 1.0)
            return
        await self._wait_all(deployment.prefix, [w for w, _ in built], rolled, events)

    async def _prepare(
        self,
        deployment: DeploymentSpec,
        built: list[tuple[WorkloadSpec, WorkloadObjects]],
        events: DeployEvents,
    ) -> bool:
        """Check the cluster (reachable, permissions, the ServiceMonitor CRD when metrics are
        asked for), apply the namespaces and shared secrets; whether monitoring is installed."""
        version = await self._bridge.call(self._api.version)
        await events.log(LogLevel.INFO, f"Kubernetes API server {version.get('gitVersion', '?')} reachable")
        for workload, _ in built:
            ignored = ignored_fields(workload)
            if ignored:  # nothing is ignored silently
                await events.log(LogLevel.WARNING, f"Workload {workload.ref}:", *ignored)
        namespaces = sorted({deployment.prefix, *(w.prefix for w in deployment.workloads)} - {""})
        await require_apply_permissions(
            self._api, self._bridge, _apply_targets(namespaces, built, deployment)
        )
        for ns in namespaces:
            await self._apply(manifests.namespace(ns), events)
        if deployment.shared_secrets:
            await self._apply(manifests.shared_secret(deployment.prefix, deployment.shared_secrets), events)
        monitoring = bool(await self._bridge.call(self._api.has_api, MONITORING_API))
        if any(objects.service_monitor is not None for _, objects in built) and not monitoring:
            raise PermanentCommandError(
                f"metrics were requested but the ServiceMonitor CRD ({MONITORING_API}) is not installed"
            )
        return monitoring

    async def _wait_all(
        self, prefix: str, workloads: list[WorkloadSpec], rolled: set[str], events: DeployEvents
    ) -> None:
        """Wait for every rollout (a newer command for the same workloads supersedes the wait);
        roll back the workloads this deploy changed when any rollout fails."""
        waits = [
            asyncio.create_task(self._wait(w, events), name=f"kube-rollout-{w.ref.key}") for w in workloads
        ]
        names = frozenset(w.name for w in workloads)
        try:
            outcomes = await self._waits.run(prefix, names, asyncio.gather(*waits, return_exceptions=True))
        except Superseded as err:
            await events.log(LogLevel.WARNING, f"Stopped waiting for the rollout: {err}")
            raise
        finally:
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        failures = [(w, o) for w, o in zip(workloads, outcomes, strict=True) if isinstance(o, BaseException)]
        for workload, _ in failures:
            if workload.id in rolled:
                await self._roll_back(workload, events)
        if failures:
            raise failures[0][1]

    async def _roll_back(self, workload: WorkloadSpec, events: DeployEvents) -> None:
        """A failed rollout goes back to the previous template; a failed rollback is said, and the
        deployment still reports the rollout's own failure."""
        try:
            await roll_back(self._api, self._bridge, workload.prefix, workload.name, events)
        except RuntimeFailure as err:
            await events.log(LogLevel.ERROR, f"Could not roll back {workload.ref}: {err}")

    async def _wait(self, workload: WorkloadSpec, events: DeployEvents) -> None:
        ns, name = workload.prefix, workload.name

        async def fetch() -> tuple[Obj, list[Obj]]:
            dep = await self._bridge.call(self._api.get, resources.DEPLOYMENT, ns, name)
            pods = await self._bridge.call(
                self._api.list, resources.POD, ns, label_selector=f"{APP_LABEL}={name}"
            )
            return dep, list(pods.get("items") or [])

        await events.log(LogLevel.INFO, f"Waiting for the rollout of {ns}/{name}")
        await wait_for_rollout(fetch, events, workload.id, rollout_timeout_s(workload, self._settings))
        await events.progress(workload.id, "rolled out", 1.0)
        await events.log(LogLevel.INFO, f"Rollout of {ns}/{name} complete")

    async def _apply(self, obj: Obj, events: DeployEvents) -> Obj:
        result = await self._bridge.call(self._api.apply, obj)
        meta = obj["metadata"]
        where = f"{meta['namespace']}/{meta['name']}" if "namespace" in meta else meta["name"]
        await events.log(LogLevel.INFO, f"Applied {obj['kind']} {where}")
        return result

    async def _apply_workload(
        self, workload: WorkloadSpec, objects: WorkloadObjects, events: DeployEvents, monitoring: bool
    ) -> bool:
        """Apply every object of the workload, remove the ones it no longer has; ``True`` when an
        existing Deployment changed (a new rollout that can be rolled back)."""
        if objects.config_map is not None:
            await self._apply(objects.config_map, events)
        for pvc in objects.pvcs:
            await self._ensure_pvc(pvc, events)
        await self._apply(objects.secret, events)
        for optional in (objects.service, objects.pull_secret):
            if optional is not None:
                await self._apply(optional, events)
        changed = await self._apply_deployment(workload.prefix, workload.name, objects.deployment, events)
        for optional in (objects.ingress, objects.service_monitor):
            if optional is not None:
                await self._apply(optional, events)
        for kind, obj_name in _stale(objects, workload.name, monitoring=monitoring):
            await self._remove_stale(kind, workload.prefix, obj_name, events)
        return changed

    async def _apply_deployment(self, ns: str, name: str, deployment: Obj, events: DeployEvents) -> bool:
        """Apply the Deployment (first removing what a server-side apply would keep); whether an
        existing one changed."""
        before = await self._bridge.call(self._api.get_or_none, resources.DEPLOYMENT, ns, name)
        removal = manifests.removal_patch(before, deployment) if before is not None else None
        if removal is not None:
            await self._bridge.call(self._api.strategic_patch, resources.DEPLOYMENT, ns, name, removal)
        after = await self._apply(deployment, events)
        if before is None:
            return False
        changed = before["metadata"].get("generation") != after["metadata"].get("generation")
        if not changed:
            await events.log(LogLevel.INFO, f"Deployment {ns}/{name} unchanged (no rollout needed)")
        return bool(changed)

    async def _ensure_pvc(self, pvc: Obj, events: DeployEvents) -> None:
        """PVCs are created once and never resized or replaced (§15.5)."""
        meta = pvc["metadata"]
        existing = await self._bridge.call(
            self._api.get_or_none, resources.PVC, meta["namespace"], meta["name"]
        )
        if existing is None:
            await self._apply(pvc, events)
        else:
            await events.log(LogLevel.INFO, f"PersistentVolumeClaim {meta['namespace']}/{meta['name']} kept")

    async def _remove_stale(self, kind: resources.Kind, ns: str, name: str, events: DeployEvents) -> None:
        try:
            existing = await self._bridge.call(self._api.get_or_none, kind, ns, name)
        except Forbidden as err:  # e.g. dyrector.io's ClusterRole grants no ingresses
            await events.log(LogLevel.WARNING, f"Could not check for a stale {kind.kind} {ns}/{name}: {err}")
            return
        if existing is None:
            return
        labels = existing["metadata"].get("labels") or {}
        if not all(labels.get(k) == v for k, v in MANAGED.items()):
            return  # not ours: leave it alone
        await self._bridge.call(self._api.delete, kind, ns, name)
        await events.log(LogLevel.INFO, f"Removed {kind.kind} {ns}/{name} (no longer part of the workload)")


def _stale(objects: WorkloadObjects, name: str, *, monitoring: bool) -> list[tuple[resources.Kind, str]]:
    """(kind, name) of the optional objects the workload no longer has."""
    stale: list[tuple[resources.Kind, str]] = []
    if objects.config_map is None:
        stale.append((resources.CONFIG_MAP, name))
    if objects.service is None:
        stale.append((resources.SERVICE, name))
    if objects.pull_secret is None:
        stale.append((resources.SECRET, f"{name}-reg"))
    if objects.ingress is None:
        stale.append((resources.INGRESS, name))
    if objects.service_monitor is None and monitoring:
        stale.append((resources.SERVICE_MONITOR, name))
    return stale


def _apply_targets(
    namespaces: list[str], built: list[tuple[WorkloadSpec, WorkloadObjects]], deployment: DeploymentSpec
) -> list[tuple[resources.Kind, str]]:
    """(kind, namespace) of every object the deployment applies."""
    targets = [(resources.NAMESPACE, "")] if namespaces else []
    if deployment.shared_secrets:
        targets.append((resources.SECRET, deployment.prefix))
    for _, objects in built:
        for obj in (
            objects.config_map,
            *objects.pvcs,
            objects.secret,
            objects.service,
            objects.pull_secret,
            objects.deployment,
            objects.ingress,
            objects.service_monitor,
        ):
            if obj is not None:
                targets.append((resources.kind_of(obj), obj["metadata"].get("namespace", "")))
    return targets
