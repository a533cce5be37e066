"""``DockerRuntime``: the ``berth.runtimes.base.Runtime`` seam on a Docker (or Podman) engine."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Final

import docker
import docker.errors
import structlog

from berth.errors import InvalidSpec, NotFound, PermanentCommandError, RuntimeFailure
from berth.model import SECRET_KEYS_LABEL, ContainerRef, DeleteOutcome, PrefixTarget, RuntimeInfo
from berth.names import checked_label
from berth.runtimes.base import DeployEvents, DiskFigures
from berth.runtimes.docker.engine import Engine, translated
from berth.runtimes.docker.guard import ContainerGuard, mask_secrets
from berth.runtimes.docker.logstream import LogFollower
from berth.runtimes.docker.lookup import find_container, prefix_container_ids
from berth.runtimes.docker.probe import runtime_info
from berth.runtimes.docker.records import read_shared_secret_keys
from berth.runtimes.docker.traefik import TRAEFIK_IMAGE, TRAEFIK_NAME, boot_container_config
from berth.runtimes.docker.watcher import StateWatcher
from berth.settings import DockerSettings

if TYPE_CHECKING:  # names only the signatures use
    from berth.model import DeploymentSpec, LogItem, StateUpdate, Target
    from berth.runtimes.docker.deployer import Deployer

log = structlog.get_logger(__name__)

_STOPPABLE: Final = frozenset({"running", "paused", "restarting"})
_SIGKILL_EXIT: Final = 137


class DockerRuntime:
    """Every platform command applied to the engine at ``base_url`` (default: the environment's
    ``DOCKER_HOST`` or the local socket). The SDK client is created on first use."""

    def __init__(
        self, settings: DockerSettings, *, base_url: str | None = None, own_container: str | None = None
    ) -> None:
        """``own_container`` names the agent's own container (tests); else it is discovered."""
        self._settings = settings
        self._engine = Engine(base_url)
        self._guard = ContainerGuard(
            traefik_enabled=settings.traefik_enabled,
            managed_only=settings.managed_only,
            own_container=own_container,
        )
        self._deployer: Deployer | None = None  # built on the first deploy: an idle agent skips its imports
        self._deployer_built = asyncio.Lock()
        self._logs = LogFollower(self._engine, settings.log_buffer_lines)

    # -- startup ------------------------------------------------------------------------------

    async def preflight(self) -> RuntimeInfo:
        info = runtime_info(await self._engine.call("engine version", lambda c: c.version()))
        await self._engine.call("list containers", lambda c: c.api.containers(limit=1))
        if self._settings.traefik_enabled:
            await self._start_traefik()
        return info

    async def _start_traefik(self) -> None:
        config = boot_container_config(self._settings)
        folders = [self._settings.internal_mount_path / "traefik" / "logs"]
        if self._settings.traefik_tls:
            folders.append(self._settings.internal_mount_path / "traefik" / "letsencrypt")

        def start() -> None:
            for folder in folders:
                folder.mkdir(parents=True, exist_ok=True)
            client = self._engine.client()
            with translated("start Traefik"):
                existing = find_container(client, ContainerRef("", TRAEFIK_NAME))
                if existing is not None:
                    if existing["State"]["Status"] != "running":
                        client.api.start(existing["Id"])
                    return
                try:
                    client.api.inspect_image(TRAEFIK_IMAGE)  # type: ignore[no-untyped-call]
                except docker.errors.ImageNotFound:
                    client.api.pull(TRAEFIK_IMAGE)
                host = client.api.create_host_config(**config["host_config"])
                create = {k: v for k, v in config.items() if k != "host_config"}
                created = client.api.create_container(host_config=host, **create)
                client.api.start(created["Id"])

        await self._engine.threads.call(start)
        log.info("traefik_started", image=TRAEFIK_IMAGE)

    # -- deploy -------------------------------------------------------------------------------

    async def deploy(self, deployment: DeploymentSpec, events: DeployEvents) -> None:
        async with self._deployer_built:
            if self._deployer is None:  # its imports take a while: not on the event loop
                self._deployer = await asyncio.to_thread(self._new_deployer)
        await self._deployer.deploy(deployment, events)

    def _new_deployer(self) -> Deployer:
        from berth.runtimes.docker.deployer import Deployer

        return Deployer(self._engine, self._settings, self._guard)

    # -- container commands -------------------------------------------------------------------

    async def _require(self, ref: ContainerRef) -> dict[str, Any]:
        attrs = await self._engine.call(f"find {ref}", lambda c: find_container(c, ref))
        if attrs is None:
            raise NotFound(f"container not found: {ref}")
        return attrs

    async def _allowed(self, ref: ContainerRef, action: str) -> str:
        """The id of the target, once the guard allows ``action`` on it."""
        attrs = await self._require(ref)
        await self._engine.call(f"check {ref}", lambda c: self._guard.check_now(c, attrs, action))
        return str(attrs["Id"])

    async def start(self, ref: ContainerRef) -> None:
        cid = await self._allowed(ref, "start")
        await self._engine.call(f"start {ref}", lambda c: c.api.start(cid))

    async def stop(self, ref: ContainerRef) -> None:
        cid = await self._allowed(ref, "stop")
        await self._engine.call(f"stop {ref}", lambda c: c.api.stop(cid))

    async def restart(self, ref: ContainerRef) -> None:
        cid = await self._allowed(ref, "restart")
        await self._engine.call(f"restart {ref}", lambda c: c.api.restart(cid))

    async def inspect(self, ref: ContainerRef) -> str:
        attrs = await self._require(ref)
        if self._settings.managed_only:
            await self._engine.call(f"check {ref}", lambda c: self._guard.check_now(c, attrs, "inspect"))
        return json.dumps(mask_secrets(attrs))

    # -- delete -------------------------------------------------------------------------------

    async def delete(self, target: Target) -> DeleteOutcome:
        if isinstance(target, PrefixTarget):
            if not target.prefix:
                raise InvalidSpec("target", "no target container or prefix")
            prefix = target.prefix
            summaries = await self._engine.call(
                f"list prefix {prefix}", lambda c: prefix_container_ids(c, prefix)
            )
            results = await asyncio.gather(
                *(
                    self._delete_one(str(s["Id"]), str((s.get("Names") or ["?"])[0]).lstrip("/"))
                    for s in summaries
                ),
                return_exceptions=True,
            )
            errors = [str(r) for r in results if isinstance(r, BaseException)]
            if errors:
                raise PermanentCommandError("; ".join(errors))
            notes = [note for r in results if isinstance(r, str) and r for note in [r]]
            return DeleteOutcome(tuple(notes))
        if not target.name:
            raise InvalidSpec("target", "no target container or prefix")
        attrs = await self._engine.call(f"find {target}", lambda c: find_container(c, target))
        if attrs is None:
            return DeleteOutcome((f"{target.key} does not exist; nothing to delete",))
        note = await self._delete_one(str(attrs["Id"]), target.key)
        return DeleteOutcome((note,) if note else ())

    async def _delete_one(self, cid: str, name: str) -> str:
        """Stop with a short grace (SIGTERM, then SIGKILL after ``stop_grace_s``) so the answer
        fits the platform's callback window; remove without force, keeping volumes."""
        grace_s = self._settings.stop_grace_s

        def delete() -> str:
            client = self._engine.client()
            note = ""
            with translated(f"delete {name}"):
                try:
                    attrs = client.api.inspect_container(cid)
                    self._guard.check_now(client, attrs, "delete")
                    if attrs["State"]["Status"] in _STOPPABLE:
                        started = time.monotonic()
                        client.api.stop(cid, timeout=max(0, math.ceil(grace_s)))
                        elapsed = time.monotonic() - started
                        after = client.api.inspect_container(cid)["State"]
                        if after.get("ExitCode") == _SIGKILL_EXIT and elapsed >= grace_s * 0.9:
                            note = f"{name} ignored SIGTERM: killed after a {grace_s:g} s grace"
                    client.api.remove_container(cid, v=False)
                except docker.errors.NotFound:
                    return note  # already gone: success
            return note

        return await self._engine.threads.call(delete)

    # -- logs and state -----------------------------------------------------------------------

    def logs(self, ref: ContainerRef, *, follow: bool, tail_lines: int) -> AsyncIterator[LogItem]:
        if self._settings.managed_only:
            return self._checked_logs(ref, follow=follow, tail_lines=tail_lines)
        return self._logs.lines(ref, follow=follow, tail_lines=tail_lines)

    async def _checked_logs(
        self, ref: ContainerRef, *, follow: bool, tail_lines: int
    ) -> AsyncIterator[LogItem]:
        attrs = await self._require(ref)
        await self._engine.call(f"check {ref}", lambda c: self._guard.check_now(c, attrs, "read the logs of"))
        async for item in self._logs.lines(ref, follow=follow, tail_lines=tail_lines):
            yield item

    def watch(self, prefix: str | None) -> AsyncIterator[StateUpdate]:
        return StateWatcher(self._engine, prefix, self._settings.resync_interval_s).updates()

    async def list_state(self, prefix: str | None) -> StateUpdate:
        return await StateWatcher(self._engine, prefix, self._settings.resync_interval_s).list_once()

    # -- secrets ------------------------------------------------------------------------------

    async def secret_keys(self, target: Target) -> list[str]:
        if isinstance(target, PrefixTarget):
            checked_label("prefix", target.prefix)
            root = self._settings.internal_mount_path
            return await asyncio.to_thread(read_shared_secret_keys, root, target.prefix)
        try:
            attrs = await self._engine.call(f"find {target}", lambda c: find_container(c, target))
        except NotFound:
            return []
        if attrs is None:
            return []
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        return [key for key in str(labels.get(SECRET_KEYS_LABEL, "")).split(",") if key]

    def disk_figures(self) -> DiskFigures:
        if self._deployer is None:
            return DiskFigures()
        return DiskFigures(self._deployer.disk.known_free_bytes(), self._deployer.pruner.pruned_bytes_total)

    async def aclose(self) -> None:
        try:
            await self._engine.aclose()
        except RuntimeFailure as err:
            log.warning("docker_runtime_close_failed", error=str(err))
