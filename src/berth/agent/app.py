"""The composition root of the node agent and its life cycle.

``Agent(settings).run()`` builds the credential store, key, token keeper, runtime (imported lazily:
an agent only pays for the SDK it uses), health endpoints, session and dispatcher; runs until the
platform or a signal ends it; then stops intake, lets in-flight work finish under
``shutdown_grace_s``, cancels the rest and closes everything in reverse order.

Start-up is ordered for the first ``Connect``: it waits only for what ``AgentInfo`` and the
"engine is up" rule need (key, token, an engine check, the own container's name). On a local
Docker socket that check needs no SDK (``berth.runtimes.docker.probe``), so the runtime, its SDK,
the desired state and the runtime-backed command handlers are built when the first command that
needs them arrives (or when the desired state must be reconciled without the platform): a
connected agent with nothing to do never loads them, and that command waits for them once (a few
hundred milliseconds). Token and life-cycle commands (a fresh install's ``replaceToken``, a
revoke, a shutdown) need only the token keeper and the platform link: they never build them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import TYPE_CHECKING, Final, Protocol

import structlog

from berth.agent.credentials import AgentKey, FileCredentialStore
from berth.agent.health import HealthSocket, HealthState, HttpEndpoint
from berth.agent.metrics import AgentMetrics
from berth.agent.session import AgentIdentity, Session, reconnect_backoff
from berth.agent.tokens import NoToken, TokenKeeper
from berth.errors import BerthError, ConfigError, TemporaryCommandError
from berth.model import RuntimeInfo
from berth.runtimes.base import (
    CredentialStore,
    ReportsDiskFigures,
    Runtime,
    SelfScaler,
    SelfUpdater,
    SupersedableWaits,
)
from berth.runtimes.common.backoff import Backoff
from berth.settings import AgentSettings

if TYPE_CHECKING:  # imported when built, after the first Connect is on its way
    from berth.agent.commands import Command
    from berth.agent.desired import DesiredState
    from berth.agent.dispatcher import Dispatcher
    from berth.agent.handlers import Handlers
    from berth.runtimes.docker.probe import EngineProbe

log = structlog.get_logger("berth.agent")

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1


def build_runtime(settings: AgentSettings) -> Runtime:
    match settings.runtime:
        case "docker":
            from berth.runtimes.docker import DockerRuntime

            runtime: Runtime = DockerRuntime(settings.docker)
            return runtime
        case "kubernetes":
            from berth.runtimes.kubernetes import KubernetesRuntime

            kube_runtime: Runtime = KubernetesRuntime(settings.kubernetes)
            return kube_runtime
        case "memory":
            from berth.runtimes.memory import MemoryRuntime

            return MemoryRuntime()
    raise ConfigError("BERTH_RUNTIME", "expected one of docker, kubernetes, memory")


def build_store(settings: AgentSettings) -> CredentialStore:
    if settings.runtime == "kubernetes":
        from berth.runtimes.kubernetes import KubernetesCredentialStore

        store: CredentialStore = KubernetesCredentialStore(settings.kubernetes)
        return store
    return FileCredentialStore(settings.data_dir)


def build_updater(settings: AgentSettings) -> SelfUpdater | None:
    """Self-update is optional; without an updater ``update`` is answered with AbortUpdate.
    A systemd installation replaces its virtual environment; a container replaces itself."""
    if settings.install_method == "systemd":
        from berth.agent.updater_systemd import SystemdSelfUpdater

        systemd: SelfUpdater = SystemdSelfUpdater(settings)
        return systemd
    if settings.runtime != "docker":
        return None
    try:
        from berth.runtimes.docker.selfupdate import DockerSelfUpdater
    except ImportError:
        return None
    updater: SelfUpdater = DockerSelfUpdater(settings.docker)
    return updater


def build_self_scaler(settings: AgentSettings) -> SelfScaler | None:
    """On Kubernetes, SHUTDOWN scales the agent's own Deployment to 0 first (§13.3)."""
    if settings.runtime != "kubernetes":
        return None
    from berth.runtimes.kubernetes.selfscale import KubernetesSelfScaler

    scaler: SelfScaler = KubernetesSelfScaler(settings.kubernetes)
    return scaler


def build_engine_probe(settings: AgentSettings) -> EngineProbe | None:
    """The SDK-free engine check that gates the first Connect in place of the runtime's own
    preflight: Docker on a local unix socket, without Traefik (which the preflight starts)."""
    if settings.runtime != "docker" or settings.docker.traefik_enabled:
        return None
    from berth.runtimes.docker.probe import EngineProbe

    return EngineProbe.for_environment()


class Preflight(Protocol):
    async def preflight(self) -> RuntimeInfo: ...


async def _cancel_and_wait(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class _Unset:
    pass


UNSET: Final = _Unset()


class Agent:
    """One node agent. Tests pass ``runtime``/``store``/``updater`` and short timings."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        runtime: Runtime | None = None,
        store: CredentialStore | None = None,
        updater: SelfUpdater | _Unset | None = UNSET,
        accept_after_s: float = 3.0,
        backoff: Backoff | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = AgentMetrics()
        self.health = HealthState(self.metrics)
        self._runtime = runtime
        self._store = store
        self._updater = updater
        self._accept_after_s = accept_after_s
        self._backoff = backoff
        self._stop = asyncio.Event()
        self._exit_code = EXIT_OK
        self.exit_reason = ""
        self.session: Session | None = None
        self.dispatcher: Dispatcher | None = None
        self.runtime: Runtime | None = None
        self.keeper: TokenKeeper | None = None
        self.key: AgentKey | None = None
        self.endpoint: HttpEndpoint | None = None
        self._ready: asyncio.Future[Handlers] | None = None
        self._setup: asyncio.Task[None] | None = None
        self._updater_built: SelfUpdater | _Unset | None = UNSET
        self._updater_lock = asyncio.Lock()
        self._desired: DesiredState | None = None
        self._opened: Runtime | None = None  # closed last, whoever built it

    # -- Lifecycle port ------------------------------------------------------------------------

    def request_exit(self, code: int, reason: str) -> None:
        if not self._stop.is_set():
            log.info("agent_exit_requested", exit_code=code, reason=reason)
            self._exit_code = code
            self.exit_reason = reason
            self._stop.set()

    def request_shutdown(self) -> None:
        """SIGTERM/SIGINT: stop intake, drain, exit 0."""
        self.request_exit(EXIT_OK, "signal")

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # -- run -------------------------------------------------------------------------------------

    async def _preflight(self, target: Preflight) -> RuntimeInfo | None:
        """The engine may still be starting (or restarting) when the agent starts: wait for it
        with backoff instead of exiting; an unsupported engine is a permanent error."""
        conn = self.settings.connection
        backoff = reconnect_backoff(conn)
        while True:
            try:
                return await target.preflight()
            except TemporaryCommandError as err:
                delay_s = backoff.next_delay_s()
                log.warning(
                    "runtime_waiting",
                    runtime=self.settings.runtime,
                    reason=str(err),
                    retry_in_s=round(delay_s, 2),
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay_s):
                    await self._stop.wait()
            if self._stop.is_set():
                return None

    async def _load_credentials(self, store: CredentialStore) -> bool:
        settings = self.settings

        def load() -> tuple[AgentKey, TokenKeeper]:  # the store may be an API: one trip to a thread
            key = AgentKey.load_or_create(store)
            keeper = TokenKeeper.select(
                store, settings.connection.grpc_token, skew_s=settings.connection.iat_skew_s
            )
            return key, keeper

        try:
            self.key, self.keeper = await asyncio.to_thread(load)
        except NoToken as err:
            log.error("agent_no_token", reason=str(err))
            return False
        except BerthError as err:
            log.error("agent_credentials_failed", reason=str(err))
            return False
        return True

    async def _open_runtime(self) -> Runtime:
        """The runtime, built (the SDK import is the slow part: off the loop, which serves the
        session meanwhile) and, on Docker, wrapped to keep the desired state. It is closed by
        ``_close_runtime``."""
        settings = self.settings
        runtime = (
            self._runtime if self._runtime is not None else await asyncio.to_thread(build_runtime, settings)
        )
        self.runtime = self._opened = runtime
        desired = await self._desired_state(settings)
        if desired is not None:
            from berth.agent.desired import DesiredStateRuntime

            runtime = DesiredStateRuntime(runtime, desired)
            self.runtime = runtime
        self._desired = desired
        if isinstance(runtime, ReportsDiskFigures):
            self.metrics.disk = runtime.disk_figures
        return runtime

    async def _checked(self, target: Preflight) -> RuntimeInfo | None:
        """``_preflight`` and its warnings logged; ``None`` when stopped meanwhile."""
        info = await self._preflight(target)
        for warning in info.warnings if info is not None else ():
            log.warning("runtime_warning", detail=warning)
        return info

    def _log_starting(self, info: RuntimeInfo) -> None:
        assert self.keeper is not None and self.key is not None
        log.info(
            "agent_starting",
            node=self.settings.node_name,
            node_id=self.keeper.current.sub,
            platform=self.keeper.current.iss,
            runtime=info.kind,
            runtime_version=info.version,
            version=self.settings.connection.version,
            key_fingerprint=self.key.fingerprint,
        )

    async def run(self) -> int:
        settings = self.settings
        store = self._store if self._store is not None else build_store(settings)
        # What gates the first Connect: a cheap engine check when the runtime has one (run, with
        # the own container's lookup, while the key and token load), else the runtime itself,
        # built and checked (an injected runtime always is).
        probe = build_engine_probe(settings) if self._runtime is None else None
        early = (
            asyncio.create_task(self._probe_engine(probe), name="agent-engine-probe")
            if probe is not None
            else None
        )
        try:
            if not await self._load_credentials(store):
                return EXIT_FAILURE
            assert self.key is not None and self.keeper is not None
            container_name: str | None = None
            try:
                if early is not None:
                    info, container_name = await early
                else:
                    info = await self._checked(await self._open_runtime())
            except BerthError as err:
                log.error("runtime_unavailable", runtime=settings.runtime, reason=str(err))
                await self._close_runtime()
                return EXIT_FAILURE
        finally:
            if early is not None and not early.done():
                early.cancel()
                await asyncio.gather(early, return_exceptions=True)
        if info is None:  # stopped while waiting for the engine
            await self._close_runtime()
            return EXIT_OK
        self._log_starting(info)
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(self._close_runtime)
            await self._start_health(stack)
            if probe is None:
                if isinstance(self._updater, _Unset):  # built now: it finds the own container
                    self._updater_built = build_updater(settings)
                container_name = await self._own_container_name(None, self._updater_built)
            identity = AgentIdentity(
                version=settings.connection.version,
                public_key=self.key.public_key,
                container_name=container_name,
            )
            session = Session(
                settings.connection,
                self.keeper,
                identity,
                self.health,
                metrics=self.metrics,
                accept_after_s=self._accept_after_s,
                backoff=self._backoff,
            )
            self.session = session
            stack.push_async_callback(session.channel.aclose)
            session_task = asyncio.create_task(
                session.run(self._dispatch, self._new_session), name="agent-session"
            )
            stack.push_async_callback(self._stop_setup)
            release = asyncio.create_task(self._release_startup_memory(), name="agent-release-startup-memory")
            stack.push_async_callback(_cancel_and_wait, release)
            if settings.runtime == "docker" and settings.docker.resilience.reconcile_at_start:
                reconcile = asyncio.create_task(self._reconcile_if_away(), name="agent-reconcile-at-start")
                stack.push_async_callback(_cancel_and_wait, reconcile)
            exit_code = await self._run_until_stopped(session_task)
            if self.dispatcher is not None:
                log.info(
                    "agent_draining", in_flight=self.dispatcher.in_flight, grace_s=settings.shutdown_grace_s
                )
                await self.dispatcher.drain(settings.shutdown_grace_s)
        log.info("agent_stopped", exit_code=exit_code, reason=self.exit_reason)
        return exit_code

    async def _probe_engine(self, probe: EngineProbe) -> tuple[RuntimeInfo | None, str | None]:
        """The engine check, then (the engine answering) the own container's name."""
        info = await self._checked(probe)
        if info is None:
            return None, None
        return info, await self._own_container_name(probe, None)

    async def _own_container_name(
        self, probe: EngineProbe | None, updater: SelfUpdater | _Unset | None
    ) -> str | None:
        """AgentInfo.containerName: the self-updater finds its own container (a blocking SDK
        call: off the loop); before the updater is built, the engine probe does the same."""
        if not isinstance(self._updater, _Unset):
            updater = self._updater
        elif probe is not None and self.settings.install_method != "systemd":
            from berth.runtimes.docker.probe import own_container_hints

            hints = await asyncio.to_thread(own_container_hints, os.environ)
            try:
                return await probe.own_container_name(hints)
            except TemporaryCommandError as err:
                log.info("own_container_unknown", reason=str(err))
                return None
        if updater is None or isinstance(updater, _Unset):
            return None
        return await asyncio.to_thread(updater.own_container_name)

    # -- what commands need, built when the first one arrives -----------------------------------

    def _command_dispatcher(self) -> Dispatcher:
        """The dispatcher, made by the first command: it has the life-cycle handler at once and
        awaits the runtime-backed handlers (``_handlers``) for the commands that need them."""
        if self.dispatcher is None:
            from berth.agent.dispatcher import Dispatcher
            from berth.agent.handlers import LifecycleHandler

            session = self.session
            assert self.keeper is not None and session is not None
            scaler = build_self_scaler(self.settings)
            lifecycle = LifecycleHandler(self.keeper, session.link, self, self._self_updater, scaler)
            self.dispatcher = Dispatcher(
                lifecycle,
                self._handlers,
                session.link,
                max_concurrent=self.settings.max_concurrent_commands,
                metrics=self.metrics,
            )
        return self.dispatcher

    async def _handlers(self) -> Handlers:
        return await asyncio.shield(self._ensure_setup())

    async def _self_updater(self) -> SelfUpdater | None:
        """The self-updater, built (off the loop: the Docker one loads the SDK) on first need."""
        if not isinstance(self._updater, _Unset):
            return self._updater
        async with self._updater_lock:
            if isinstance(self._updater_built, _Unset):
                self._updater_built = await asyncio.to_thread(build_updater, self.settings)
            return self._updater_built

    def _ensure_setup(self) -> asyncio.Future[Handlers]:
        """The runtime-backed handlers, built once by the ``agent-setup`` task (started on first
        need). When the setup fails the agent exits (``_setup_ended``); the future then stays
        pending."""
        if self._ready is None:
            self._ready = asyncio.get_running_loop().create_future()
            self._setup = asyncio.create_task(self._complete_setup(self._ready), name="agent-setup")
            self._setup.add_done_callback(self._setup_ended)
        return self._ready

    async def _complete_setup(self, ready: asyncio.Future[Handlers]) -> None:
        """Everything runtime commands need and an idle, connected agent does not: the runtime
        (when only the engine probe ran), its SDK, the desired state, the opened key, the
        handlers."""
        session = self.session
        assert self.key is not None and session is not None
        runtime = self.runtime if self.runtime is not None else await self._open_runtime()
        await asyncio.to_thread(self.key.open)  # deploys decrypt on the event loop
        from berth.agent.handlers import (
            CallbackHandler,
            DeployHandler,
            Handlers,
            LogStreamHandler,
            StateWatchHandler,
        )

        ready.set_result(
            Handlers(
                deploy=DeployHandler(runtime, self.key, session.link, self._desired),
                state=StateWatchHandler(runtime, session.link),
                log_stream=LogStreamHandler(runtime, session.link),
                callbacks=CallbackHandler(runtime, session.link, self.key.public_key),
                waits=runtime.waits if isinstance(runtime, SupersedableWaits) else None,
            )
        )

    def _setup_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if isinstance(error, BerthError):
            log.error("runtime_unavailable", runtime=self.settings.runtime, reason=str(error))
            self.request_exit(EXIT_FAILURE, "runtime unavailable")
        elif error is not None:
            log.error("agent_setup_failed", error=repr(error), exc_info=error)
            self.request_exit(EXIT_FAILURE, "setup failed")

    async def _stop_setup(self) -> None:
        if self._setup is not None:
            self._setup.cancel()
            # its failure, if any, was handled by ``_setup_ended``
            await asyncio.gather(self._setup, return_exceptions=True)

    async def _dispatch(self, command: Command) -> None:
        """The session's command callback."""
        await self._command_dispatcher().dispatch(command)

    def _new_session(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.cancel_streams()

    async def _close_runtime(self) -> None:
        runtime, self._opened = self._opened, None
        if runtime is not None:
            await runtime.aclose()

    async def _release_startup_memory(self) -> None:
        """Once accepted while idle, give start-up's garbage and free heap pages back. Not when
        a runtime command came first (the setup started): the collection holds the GIL (and the
        trim the allocator) for tens of milliseconds, which that command would wait for, and its
        work reuses the pages. A fresh install's replaceToken builds nothing: the release still
        happens (releasing again after the swap was measured to give nothing back)."""
        from berth.agent.footprint import release_memory

        await self.health.wait_accepted()
        if self._setup is None:
            await asyncio.to_thread(release_memory)

    async def _desired_state(self, settings: AgentSettings) -> DesiredState | None:
        """Docker only: a cluster keeps its own desired state."""
        if settings.runtime != "docker" or not settings.docker.resilience.desired_state or self.key is None:
            return None
        from berth.agent.desired import DesiredState
        from berth.desired_state import DesiredStateStore

        desired = DesiredState(DesiredStateStore(settings.data_dir), self.key)
        try:
            await desired.load()
        except BerthError as err:
            log.warning("desired_state_unreadable", error=str(err))
        return desired

    async def _reconcile_if_away(self) -> None:
        """No accepted session within ``reconcile_after_s``: bring the node to its desired state
        without the platform (once per start)."""
        resilience = self.settings.docker.resilience
        try:
            await asyncio.wait_for(self.health.wait_accepted(), resilience.reconcile_after_s)
        except TimeoutError:
            await asyncio.shield(self._ensure_setup())
            if self._desired is None or self.runtime is None:
                return
            from berth.agent.desired import Reconciler

            log.warning("platform_unreachable_reconciling", after_s=resilience.reconcile_after_s)
            await Reconciler(self.runtime, self._desired, fix_drift=resilience.fix_drift).run()

    async def _start_health(self, stack: contextlib.AsyncExitStack) -> None:
        socket = HealthSocket(self.settings.health_socket, self.health)
        try:
            await socket.start()
        except OSError as err:
            log.warning(
                "health_socket_unavailable", path=str(self.settings.health_socket), error=err.strerror
            )
        else:
            stack.push_async_callback(socket.close)
        if self.settings.metrics_address:
            endpoint = HttpEndpoint(self.settings.metrics_address, self.health, self.metrics)
            await endpoint.start()
            self.endpoint = endpoint
            stack.push_async_callback(endpoint.close)
            log.info("metrics_endpoint_listening", address=f"{endpoint.host}:{endpoint.port}")

    async def _run_until_stopped(self, session_task: asyncio.Task[int]) -> int:
        stop_task = asyncio.create_task(self._stop.wait(), name="agent-stop-wait")
        try:
            await asyncio.wait({session_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_task.cancel()
            if not session_task.done():
                session_task.cancel()
            results = await asyncio.gather(session_task, stop_task, return_exceptions=True)
        outcome = results[0]
        if self._stop.is_set():
            return self._exit_code
        if isinstance(outcome, BaseException):
            raise outcome
        self.exit_reason = "token refused"
        return outcome
