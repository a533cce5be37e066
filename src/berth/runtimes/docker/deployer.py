"""The deploy command on Docker (§6): validate, pull, create, run import/init containers, start,
wait for the expected state, and never leave the node worse off on a failed redeploy."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import docker
import docker.errors
import structlog

from berth.desired_state import SPEC_HASH_LABEL, spec_hash
from berth.errors import InvalidSpec, PermanentCommandError, PersistenceError, RuntimeFailure
from berth.imageref import ImageReference
from berth.model import (
    MANAGED_LABEL,
    PREFIX_LABEL,
    ContainerState,
    DeploymentSpec,
    ExpectedState,
    InitContainer,
    LogLevel,
    RegistryAuth,
    WorkloadSpec,
)
from berth.names import checked_label
from berth.runtimes.base import DeployEvents
from berth.runtimes.docker.compat import honoured_notes, ignored_fields, resource_limits
from berth.runtimes.docker.container_spec import (
    ContainerPlan,
    environment_list,
    plan_container,
    restart_policy_name,
)
from berth.runtimes.docker.disk import DiskGuard, enospc_failure
from berth.runtimes.docker.engine import Engine, status_code, translated
from berth.runtimes.docker.guard import ContainerGuard
from berth.runtimes.docker.health_gate import HealthGate
from berth.runtimes.docker.mounts import MountPlan, plan_mounts
from berth.runtimes.docker.pruning import Deployed, ImagePruner
from berth.runtimes.docker.pull import ImagePuller
from berth.runtimes.docker.pulls import PullSet
from berth.runtimes.docker.records import write_release_record, write_shared_secrets
from berth.runtimes.docker.status import state_of
from berth.runtimes.docker.validation import check_workload
from berth.settings import DockerSettings

log = structlog.get_logger(__name__)

ASIDE_SUFFIX: Final = "-berth-previous"
_STOPPABLE: Final = frozenset({"running", "paused", "restarting"})
_REPLACEABLE: Final = _STOPPABLE | {"created", "exited", "dead"}
_POLL_START_S: Final = 0.02
_POLL_MAX_S: Final = 0.5


class _Listing:
    """The names in use, listed once per deployment when its first workload needs them (a failed
    listing then fails that workload, and is reported against it, like any lookup)."""

    def __init__(self, names: Callable[[], Awaitable[frozenset[str]]]) -> None:
        self._list = names
        self._names: frozenset[str] | None = None

    async def get(self) -> frozenset[str]:
        if self._names is None:
            self._names = await self._list()
        return self._names


@dataclass
class _HelperImages:
    """The images of a workload's helper containers, requested from the pull set early."""

    inits: list[ImageReference]
    importer: ImageReference | None = None


class Deployer:
    def __init__(self, engine: Engine, settings: DockerSettings, guard: ContainerGuard | None = None) -> None:
        self._engine = engine
        self._settings = settings
        self._guard = guard or ContainerGuard(
            traefik_enabled=settings.traefik_enabled, managed_only=settings.managed_only
        )
        self.disk = DiskGuard(settings.resilience)
        self._puller = ImagePuller(engine, before_pull=self.disk.check_before_pull)
        self._health = HealthGate(engine, settings.resilience)
        self.pruner = ImagePruner(engine, settings)

    async def deploy(self, deployment: DeploymentSpec, events: DeployEvents) -> None:
        seen: set[str] = set()
        images: dict[str, ImageReference] = {}
        for workload in deployment.workloads:
            try:
                check_workload(workload)
                resource_limits(workload)  # an invalid quantity fails before anything changes
                if workload.ref.key in seen:
                    raise InvalidSpec("container name", f"{workload.ref.key!r} appears twice")
                seen.add(workload.ref.key)
                images[workload.id] = self._main_image(workload)
            except RuntimeFailure as err:
                await self._report_failure(workload, err, events)
                raise
        if deployment.shared_secrets:
            checked_label("prefix", deployment.prefix)  # it names a folder
            await self._persist(
                "shared secrets",
                lambda: write_shared_secrets(
                    self._settings.internal_mount_path, deployment.prefix, deployment.shared_secrets
                ),
            )
        pulls = PullSet(self._puller, events)
        try:
            for workload in deployment.workloads:
                pulls.request(images[workload.id], workload.registry_auth, workload.id)
            in_use = _Listing(lambda: self._names_in_use(deployment.workloads))
            for workload in deployment.workloads:
                await self._deploy_workload(workload, images[workload.id], pulls, in_use, events)
            deployed = _deployed(deployment, images, pulls)
        finally:
            await pulls.aclose()
        if deployed and _names_a_folder(deployment.prefix):
            await self.pruner.after_success(deployment.prefix, deployed, events)
        if deployment.version_name and deployment.workloads:
            names = [w.ref.key for w in deployment.workloads]
            checked_label("prefix", deployment.prefix)
            await self._persist(
                "the release record",
                lambda: write_release_record(
                    self._settings.internal_mount_path,
                    deployment.prefix,
                    deployment.version_name,
                    deployment.release_notes,
                    names,
                ),
            )

    @staticmethod
    async def _persist(what: str, write: Callable[[], object]) -> None:
        try:
            await asyncio.to_thread(write)
        except (PersistenceError, OSError) as err:
            raise PermanentCommandError(f"cannot write {what}: {err}") from err

    def _main_image(self, workload: WorkloadSpec) -> ImageReference:
        return ImageReference.from_request(
            workload.registry,
            workload.image_name,
            workload.tag,
            default_registry=self._settings.default_registry,
            default_tag=self._settings.default_tag,
        )

    @staticmethod
    async def _report_failure(workload: WorkloadSpec, err: BaseException, events: DeployEvents) -> None:
        await events.instance(workload.id, ContainerState.UNSPECIFIED, str(err), LogLevel.ERROR)

    async def _names_in_use(self, workloads: tuple[WorkloadSpec, ...]) -> frozenset[str]:
        """The names of every container whose name starts with a workload's ``<prefix>-``, from
        one listing for the whole deployment: a workload's previous container, or one left aside,
        is then inspected only when it exists (two lookups by name for each of 500 workloads cost
        more than the create they precede on a busy engine). Containers of another prefix or
        without a label are listed too: a name is what the create would collide with."""
        prefixes = sorted({workload.prefix for workload in workloads})  # RFC 1123 labels (checked)

        def names(client: docker.DockerClient) -> frozenset[str]:
            found: set[str] = set()
            for prefix in prefixes:
                # the engine matches ``name`` as a regular expression, with or without the ``/``
                for summary in client.api.containers(all=True, filters={"name": f"^/?{prefix}-"}):
                    found.update(str(name).lstrip("/") for name in summary.get("Names") or ())
            return frozenset(found)

        return await self._engine.call("list containers", names) if prefixes else frozenset()

    # -- one workload -------------------------------------------------------------------------

    async def _deploy_workload(
        self,
        workload: WorkloadSpec,
        image: ImageReference,
        pulls: PullSet,
        in_use: _Listing,
        events: DeployEvents,
    ) -> None:
        name = workload.ref.key
        await events.log(LogLevel.INFO, f"Deploying container: {name}", f"Using image: {image}")
        await events.log(
            LogLevel.INFO, f"Using restart policy: {restart_policy_name(workload.docker.restart_policy)}"
        )
        await self._report_compatibility(workload, events)
        try:
            await self._apply(workload, image, pulls, in_use, events)
        except RuntimeFailure as err:
            clear = enospc_failure(f"deploying {name}", str(err))
            await self._report_failure(workload, clear or err, events)
            if clear is not None:
                raise clear from err
            raise
        await events.log(LogLevel.INFO, f"Container deployed: {name}")

    async def _report_compatibility(self, workload: WorkloadSpec, events: DeployEvents) -> None:
        """Nothing is ignored silently: every field Docker does not honour is named (WARNING)."""
        try:
            ignored = ignored_fields(workload, self._settings)
            honoured = honoured_notes(workload)
        except RuntimeFailure as err:
            await self._report_failure(workload, err, events)
            raise
        if ignored:
            await events.log(LogLevel.WARNING, *ignored)
        if honoured:
            await events.log(LogLevel.INFO, *honoured)

    async def _apply(
        self,
        workload: WorkloadSpec,
        image: ImageReference,
        pulls: PullSet,
        in_use: _Listing,
        events: DeployEvents,
    ) -> None:
        outcome = await pulls.result(image, workload.registry_auth, workload.id)
        for note in outcome.notes:
            await events.log(LogLevel.WARNING, note)
        helpers = self._request_helper_images(workload, image, pulls)
        mounts = await self._prepare_mounts(workload)
        plan = plan_container(workload, self._settings, image, outcome.labels, mounts)
        plan.create["labels"][SPEC_HASH_LABEL] = spec_hash(workload)  # drift is judged against it
        for network in plan.networks:
            await self._engine.call(f"network {network}", _network_ensurer(network))
        old, aside, new_id = await self._make_room_and_create(workload, plan, await in_use.get(), events)
        try:
            await self._run_helpers(
                workload, image=image, helpers=helpers, pulls=pulls, plan=plan, mounts=mounts, events=events
            )
            may_check_health = outcome.healthcheck or "healthcheck" in plan.create
            await self._start(workload, new_id, plan.name, events, may_check_health=may_check_health)
        except BaseException as err:
            await self._undo(
                workload, name=plan.name, new_id=new_id, aside=aside, old=old, events=events, cause=err
            )
            raise
        if aside is not None:
            await self._remove_aside(aside, old, events)

    def _request_helper_images(
        self, workload: WorkloadSpec, image: ImageReference, pulls: PullSet
    ) -> _HelperImages:
        """Start pulling the init containers' and the import container's images now."""
        helpers = _HelperImages(inits=[self._init_image(init) for init in workload.init_containers])
        for init_image in helpers.inits:
            pulls.request(init_image, self._auth_for(workload, image, init_image), workload.id)
        if workload.import_container is not None:
            helpers.importer = ImageReference.parse(self._settings.import_container_image)
            pulls.request(helpers.importer, None, workload.id)
        return helpers

    async def _prepare_mounts(self, workload: WorkloadSpec) -> MountPlan:
        def prepare() -> MountPlan:
            mounts = plan_mounts(self._settings, workload.prefix, workload.name, workload.volumes)
            mounts.ensure_directories()
            return mounts

        try:
            return await asyncio.to_thread(prepare) if workload.volumes else MountPlan()
        except OSError as err:
            raise PermanentCommandError(f"cannot create the volume folders of {workload.ref}: {err}") from err

    async def _make_room_and_create(
        self, workload: WorkloadSpec, plan: ContainerPlan, in_use: frozenset[str], events: DeployEvents
    ) -> tuple[dict[str, Any] | None, str | None, str]:
        """Set the previous container aside, then create the new one: the previous container,
        its aside name and the new id. On a failed create the previous one is restored."""
        old, aside = await self._previous(workload, plan, in_use, events)
        if old is None:
            try:
                return None, None, await self._engine.call(f"create {plan.name}", lambda c: _create(c, plan))
            except RuntimeFailure as err:
                if status_code(err) != 409:
                    raise
                # The name was taken after the deployment's listing: look again, by name.
                log.info("deploy_name_taken_since_listing", container=plan.name)
                old, aside = await self._previous(workload, plan, None, events)
        try:
            return old, aside, await self._engine.call(f"create {plan.name}", lambda c: _create(c, plan))
        except BaseException as err:
            await self._undo(
                workload, name=plan.name, new_id=None, aside=aside, old=old, events=events, cause=err
            )
            raise

    async def _previous(
        self, workload: WorkloadSpec, plan: ContainerPlan, in_use: frozenset[str] | None, events: DeployEvents
    ) -> tuple[dict[str, Any] | None, str | None]:
        """The container being replaced, set aside (stopped and renamed), and its aside name.
        ``in_use``: the names the deployment's listing found (``None``: ask the engine for both)."""
        if in_use is None or plan.name in in_use:
            old = await self._engine.call(f"inspect {plan.name}", lambda c: _exact(c, plan.name))
            if old is not None:
                return old, await self._set_aside(workload, old, events)
        # An interrupted redeploy (the agent stopped mid-way) left the previous one aside.
        leftover = f"{plan.name}{ASIDE_SUFFIX}"
        if in_use is not None and leftover not in in_use:
            return None, None
        old = await self._engine.call(f"inspect {leftover}", lambda c: _exact(c, leftover))
        if old is None:
            return None, None
        await events.log(
            LogLevel.WARNING,
            f"Found the previous container kept aside as {leftover}; kept until the new one runs",
        )
        return old, leftover

    async def _run_helpers(
        self,
        workload: WorkloadSpec,
        *,
        image: ImageReference,
        helpers: _HelperImages,
        pulls: PullSet,
        plan: ContainerPlan,
        mounts: MountPlan,
        events: DeployEvents,
    ) -> None:
        """The import container, then the init containers, each once its image is there."""
        if workload.import_container is not None and helpers.importer is not None:
            await pulls.result(helpers.importer, None, workload.id)
            await self._run_import(workload, helpers.importer, mounts, events)
        for init, init_image in zip(workload.init_containers, helpers.inits, strict=True):
            await pulls.result(init_image, self._auth_for(workload, image, init_image), workload.id)
            await self._run_init(workload, init, image=init_image, parent=plan, mounts=mounts, events=events)

    async def _start(
        self, workload: WorkloadSpec, cid: str, name: str, events: DeployEvents, *, may_check_health: bool
    ) -> None:
        """Start the new container and wait for its expected state and health."""
        await self._engine.call(f"start {name}", lambda c: c.api.start(cid))
        if self._running_suffices(workload, may_check_health=may_check_health):
            # The engine answers a start once the process runs: an inspect would only say so again.
            await events.instance(workload.id, ContainerState.RUNNING, "running")
            await events.log(LogLevel.INFO, f"Started container: {name}")
            return
        attrs = await self._engine.call(f"inspect {name}", lambda c: c.api.inspect_container(cid))
        raw = str(attrs["State"]["Status"])
        await events.instance(workload.id, state_of(raw), raw)
        await events.log(LogLevel.INFO, f"Started container: {name}")
        await self._wait_expected(workload, cid, name, attrs)
        if _expects_running(workload):
            await self._health.wait(workload.id, cid, name, events, attrs)

    def _running_suffices(self, workload: WorkloadSpec, *, may_check_health: bool) -> bool:
        """Whether a successful start already meets the deployment's expectation: RUNNING is
        expected, no health check may gate it, and the restart policy is not ``no`` (with ``no``,
        a process that exits right away stays down, so its state is read back once)."""
        if may_check_health and self._settings.resilience.health_gate:
            return False
        return _expects_running(workload) and restart_policy_name(workload.docker.restart_policy) != "no"

    async def _remove_aside(self, aside: str, old: dict[str, Any] | None, events: DeployEvents) -> None:
        try:
            await self._engine.call(f"remove {aside}", lambda c: c.api.remove_container(aside, v=False))
        except RuntimeFailure as err:  # the new container runs: the deployment succeeded
            await events.log(LogLevel.WARNING, f"Could not remove the previous container {aside}: {err}")
        else:
            await events.log(LogLevel.INFO, f"Removed previous container: {old_id12(old)}")

    # -- redeploy safety ----------------------------------------------------------------------

    async def _set_aside(self, workload: WorkloadSpec, old: dict[str, Any], events: DeployEvents) -> str:
        """Stop the existing container and rename it aside; it stays recoverable."""
        await self._engine.call(f"check {workload.ref}", lambda c: self._guard.check_now(c, old, "replace"))
        owner = (old.get("Config") or {}).get("Labels", {}).get(PREFIX_LABEL)
        if owner is not None and owner != workload.prefix:
            # <p>+"b-c" and <p>-b+"c" share a name: never take over another prefix's container.
            raise PermanentCommandError(
                f"container {workload.ref} already exists and belongs to prefix {owner!r}"
            )
        raw = str(old["State"]["Status"])
        await events.instance(workload.id, state_of(raw), raw)
        if raw not in _REPLACEABLE:
            raise PermanentCommandError(f"container {workload.ref} is {raw} and cannot be replaced")
        cid = str(old["Id"])
        if raw in _STOPPABLE:
            await events.log(LogLevel.INFO, f"Stopping container: {cid[:12]}")
            await self._engine.call(f"stop {workload.ref}", lambda c: c.api.stop(cid))
        aside = f"{workload.ref.key}{ASIDE_SUFFIX}"
        taken = await self._engine.call(f"inspect {aside}", lambda c: _exact(c, aside))
        if taken is not None:
            aside = f"{aside}-{int(time.time())}"
        try:
            await self._engine.call(f"rename {workload.ref}", lambda c: c.api.rename(cid, aside))
        except RuntimeFailure:
            if raw in _STOPPABLE:  # put it back as it was before failing
                await self._engine.call(f"start {workload.ref}", lambda c: c.api.start(cid))
            raise
        await events.instance(workload.id, ContainerState.WAITING, "replacing")
        await events.log(
            LogLevel.INFO, f"Previous container {cid[:12]} stopped and kept as {aside} until the new one runs"
        )
        return aside

    async def _undo(
        self,
        workload: WorkloadSpec,
        *,
        name: str,
        new_id: str | None,
        aside: str | None,
        old: dict[str, Any] | None,
        events: DeployEvents,
        cause: BaseException,
    ) -> None:
        """Remove the new container; restore and restart the previous one. Never raises (the
        original failure is what the deployment reports); a failed restore is said loudly."""
        try:
            if new_id is not None:
                nid = new_id
                await self._engine.call(f"remove {name}", lambda c: c.api.remove_container(nid, force=True))
                await events.log(LogLevel.WARNING, f"Removed the new container {name} after the failure")
            if aside is not None and old is not None:
                oid = str(old["Id"])
                await self._engine.call(f"rename {aside}", lambda c: c.api.rename(oid, name))
                if str(old["State"]["Status"]) in _STOPPABLE:
                    await self._engine.call(f"start {name}", lambda c: c.api.start(oid))
                raw = await self._engine.call(f"inspect {name}", lambda c: _raw_state(c, oid))
                await events.instance(workload.id, state_of(raw), raw)
                await events.log(
                    LogLevel.WARNING, f"Restored the previous container {name} ({oid[:12]}), {raw}"
                )
        except (RuntimeFailure, OSError) as err:
            log.error("redeploy_restore_failed", container=name, error=str(err), cause=str(cause))
            await events.log(LogLevel.ERROR, f"Could not restore the previous container of {name}: {err}")

    # -- expected state -----------------------------------------------------------------------

    async def _wait_expected(
        self, workload: WorkloadSpec, cid: str, name: str, attrs: dict[str, Any]
    ) -> None:
        expected = workload.docker.expected_state or ExpectedState()
        want = expected.state if expected.state != ContainerState.UNSPECIFIED else ContainerState.RUNNING
        timeout_s = expected.timeout_s or self._settings.default_expected_timeout_s
        want_code = expected.exit_code if expected.exit_code is not None else 0
        policy = restart_policy_name(workload.docker.restart_policy)
        deadline = time.monotonic() + timeout_s
        interval = _POLL_START_S
        while True:
            raw = str(attrs["State"]["Status"])
            state = state_of(raw)
            code = int(attrs["State"].get("ExitCode", 0))
            if want is ContainerState.EXITED and state is ContainerState.EXITED:
                if code != want_code:
                    raise PermanentCommandError(f"{name} exited with code {code}, expected {want_code}")
                return
            if want is not ContainerState.EXITED and state is want:
                return
            if want is ContainerState.RUNNING and state is ContainerState.EXITED and policy == "no":
                raise PermanentCommandError(f"{name} exited with code {code} instead of running")
            if time.monotonic() >= deadline:
                raise PermanentCommandError(
                    f"{name} did not reach the expected state {want.name} within {timeout_s} s (it is {raw})"
                )
            await asyncio.sleep(interval)
            interval = min(interval * 2, _POLL_MAX_S)
            attrs = await self._engine.call(f"inspect {name}", lambda c: c.api.inspect_container(cid))

    # -- import and init containers (§6.4) ----------------------------------------------------

    def _init_image(self, init: InitContainer) -> ImageReference:
        return ImageReference.parse(init.image, default_tag=self._settings.default_tag)

    @staticmethod
    def _auth_for(workload: WorkloadSpec, main: ImageReference, other: ImageReference) -> RegistryAuth | None:
        return workload.registry_auth if other.registry == main.registry else None

    async def _run_import(
        self, workload: WorkloadSpec, image: ImageReference, mounts: MountPlan, events: DeployEvents
    ) -> None:
        spec = workload.import_container
        assert spec is not None
        bind = next((b for b in mounts.binds if spec.volume in b.host_path), None)
        if bind is None:
            raise InvalidSpec("importContainer volume", f"{spec.volume!r} is not a volume of {workload.ref}")
        await events.log(LogLevel.INFO, "Spawning importer container to load assets")
        name = f"{workload.ref.key}-import"
        create = {
            "name": name,
            "command": [part for part in spec.command.split(" ") if part],
            "environment": [f"{k}={v}" for k, v in spec.environment.items()],
            "labels": {PREFIX_LABEL: workload.prefix, MANAGED_LABEL: "true"},
            "detach": True,
        }
        host = {"binds": [f"{bind.host_path}:/data/output:rw"]}
        await self._run_to_completion(
            name, image=str(image), create=create, host=host, networks=(), events=events
        )
        await events.log(LogLevel.INFO, "Loading assets was successful.")

    async def _run_init(
        self,
        workload: WorkloadSpec,
        init: InitContainer,
        *,
        image: ImageReference,
        parent: ContainerPlan,
        mounts: MountPlan,
        events: DeployEvents,
    ) -> None:
        name = f"{workload.ref.key}-{init.name}"
        binds: list[str] = []
        for link in init.volumes:
            if not init.use_parent_config:
                raise InvalidSpec(
                    "init container volume", f"{init.name} links {link.name!r} without useParentConfig"
                )
            bind = mounts.bind_for_link(link.name)
            if bind is None:
                raise InvalidSpec("init container volume", f"{link.name!r} is not a volume of {workload.ref}")
            binds.append(f"{bind.host_path}:{link.path}:rw")
        env: dict[str, str] = {}
        if init.use_parent_config:
            env.update(item.split("=", 1) for item in environment_list(workload))  # type: ignore[misc]
        env.update(init.environment)
        create: dict[str, Any] = {
            "name": name,
            "environment": [f"{k}={v}" for k, v in env.items()],
            "labels": {PREFIX_LABEL: workload.prefix, MANAGED_LABEL: "true"},
            "detach": True,
        }
        if init.command:
            create["entrypoint"] = list(init.command)
        if init.args:
            create["command"] = list(init.args)
        networks = parent.networks if init.use_parent_config else ()
        await events.log(LogLevel.INFO, f"Running init container: {name}")
        await self._run_to_completion(
            name, image=str(image), create=create, host={"binds": binds}, networks=networks, events=events
        )

    async def _run_to_completion(
        self,
        name: str,
        *,
        image: str,
        create: dict[str, Any],
        host: dict[str, Any],
        networks: tuple[str, ...],
        events: DeployEvents,
    ) -> None:
        """Create, start and wait for a helper container; log its output; remove it. A non-zero
        exit fails the deployment."""
        timeout_s = self._settings.default_expected_timeout_s

        def start() -> str:
            client = self._engine.client()
            with translated(f"run {name}"):
                stale = _exact(client, name)
                if stale is not None:
                    client.api.remove_container(stale["Id"], force=True)
                hc = client.api.create_host_config(**host)
                cid = str(client.api.create_container(image, host_config=hc, **create)["Id"])
                for network in networks:
                    client.api.connect_container_to_network(cid, network)
                client.api.start(cid)
                return cid

        cid = await self._engine.threads.call(start)
        try:

            def wait() -> tuple[int, bytes]:
                client = self._engine.client()
                with translated(f"wait for {name}"):
                    result = client.api.wait(cid, timeout=timeout_s)
                    output: bytes = client.api.logs(cid, stdout=True, stderr=True)
                    return int(result.get("StatusCode", -1)), output

            try:
                code, output = await self._engine.in_stream_pool(wait)
            except RuntimeFailure as err:
                if "timed out" in str(err).lower() or "read timeout" in str(err).lower():
                    raise PermanentCommandError(f"{name} did not finish within {timeout_s} s") from err
                raise
            lines = output.decode(errors="replace").splitlines()
            if lines:
                await events.log(LogLevel.INFO, *(f"{name}: {line}" for line in lines[-200:]))
            if code != 0:
                raise PermanentCommandError(f"{name} exited with code {code}")
            await events.log(LogLevel.INFO, f"{name} exited with code 0")
        finally:
            await self._engine.call(f"remove {name}", lambda c: c.api.remove_container(cid, force=True))


# -- blocking helpers (run in threads through the engine) -------------------------------------


def _names_a_folder(prefix: str) -> bool:
    try:
        checked_label("prefix", prefix)
    except InvalidSpec:
        return False
    return True


def _deployed(
    deployment: DeploymentSpec, images: dict[str, ImageReference], pulls: PullSet
) -> list[Deployed]:
    deployed = []
    for workload in deployment.workloads:
        outcome = pulls.finished(images[workload.id], workload.registry_auth)
        if outcome is not None and outcome.image_id:
            deployed.append(Deployed(workload.name, images[workload.id], outcome.image_id, outcome.pulled))
    return deployed


def _expects_running(workload: WorkloadSpec) -> bool:
    expected = workload.docker.expected_state
    return expected is None or expected.state in (ContainerState.RUNNING, ContainerState.UNSPECIFIED)


def old_id12(old: dict[str, Any] | None) -> str:
    return str((old or {}).get("Id", ""))[:12]


def _exact(client: docker.DockerClient, name: str) -> dict[str, Any] | None:
    try:
        attrs: dict[str, Any] = client.api.inspect_container(name)
    except docker.errors.NotFound:
        return None
    return attrs if str(attrs.get("Name", "")).lstrip("/") == name else None


def _raw_state(client: docker.DockerClient, cid: str) -> str:
    return str(client.api.inspect_container(cid)["State"]["Status"])


def _network_ensurer(name: str) -> Callable[[docker.DockerClient], None]:
    return lambda client: _ensure_network(client, name)


def _ensure_network(client: docker.DockerClient, name: str) -> None:
    try:
        client.api.inspect_network(name)
    except docker.errors.NotFound:
        try:
            client.api.create_network(name, driver="bridge", labels={MANAGED_LABEL: "true"})
        except docker.errors.APIError as err:
            if err.status_code != 409:  # created concurrently: fine
                raise


def _create(client: docker.DockerClient, plan: ContainerPlan) -> str:
    host_config = client.api.create_host_config(**plan.host)
    created = client.api.create_container(plan.image, host_config=host_config, **plan.create)
    cid = str(created["Id"])
    try:
        for network in plan.networks:
            client.api.connect_container_to_network(cid, network, aliases=list(plan.aliases))
    except BaseException:
        client.api.remove_container(cid, force=True)
        raise
    return cid
