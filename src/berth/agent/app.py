"""The composition root of the node agent and its life cycle.

``Agent(settings).run()`` builds the credential store, key, token keeper, runtime (imported lazily:
an agent only pays for the SDK it uses), health endpoints, session and dispatcher; runs until the
platform or a signal ends it; then stops intake, lets in-flight work finish under
``shutdown_grace_s``, cancels the rest and closes everything in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

import structlog

from berth.agent.credentials import AgentKey, FileCredentialStore
from berth.agent.desired import DesiredState, DesiredStateRuntime, Reconciler
from berth.agent.dispatcher import Dispatcher
from berth.agent.footprint import release_once_accepted
from berth.agent.handlers import (
    CallbackHandler,
    DeployHandler,
    Handlers,
    LifecycleHandler,
    LogStreamHandler,
    StateWatchHandler,
)
from berth.agent.health import HealthSocket, HealthState, HttpEndpoint
from berth.agent.metrics import AgentMetrics
from berth.agent.session import AgentIdentity, Session, reconnect_backoff
from berth.agent.tokens import NoToken, TokenKeeper
from berth.desired_state import DesiredStateStore
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

    async def _preflight(self, runtime: Runtime) -> RuntimeInfo | None:
        """The engine may still be starting (or restarting) when the agent starts: wait for it
        with backoff instead of exiting; an unsupported engine is a permanent error."""
        conn = self.settings.connection
        backoff = reconnect_backoff(conn)
        while True:
            try:
                return await runtime.preflight()
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

    async def run(self) -> int:
        settings = self.settings
        store = self._store if self._store is not None else build_store(settings)
        try:
            self.key = await asyncio.to_thread(AgentKey.load_or_create, store)
            self.keeper = await asyncio.to_thread(
                TokenKeeper.select,
                store,
                settings.connection.grpc_token,
                skew_s=settings.connection.iat_skew_s,
            )
        except NoToken as err:
            log.error("agent_no_token", reason=str(err))
            return EXIT_FAILURE
        except BerthError as err:
            log.error("agent_credentials_failed", reason=str(err))
            return EXIT_FAILURE
        runtime = self._runtime if self._runtime is not None else build_runtime(settings)
        desired = await self._desired_state(settings)
        if desired is not None:
            runtime = DesiredStateRuntime(runtime, desired)
        self.runtime = runtime
        updater = build_updater(settings) if isinstance(self._updater, _Unset) else self._updater
        try:
            info = await self._preflight(runtime)
        except BerthError as err:
            log.error("runtime_unavailable", runtime=settings.runtime, reason=str(err))
            await runtime.aclose()
            return EXIT_FAILURE
        if info is None:  # stopped while waiting for the engine
            await runtime.aclose()
            return EXIT_OK
        for warning in info.warnings:
            log.warning("runtime_warning", detail=warning)
        log.info(
            "agent_starting",
            node=settings.node_name,
            node_id=self.keeper.current.sub,
            platform=self.keeper.current.iss,
            runtime=info.kind,
            runtime_version=info.version,
            version=settings.connection.version,
            key_fingerprint=self.key.fingerprint,
        )
        if isinstance(runtime, ReportsDiskFigures):
            self.metrics.disk = runtime.disk_figures
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(runtime.aclose)
            await self._start_health(stack)
            # Self-discovery asks the engine (a blocking SDK call): off the loop.
            container_name = (
                await asyncio.to_thread(updater.own_container_name) if updater is not None else None
            )
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
            release = asyncio.create_task(
                release_once_accepted(self.health), name="agent-release-startup-memory"
            )
            stack.push_async_callback(_cancel_and_wait, release)
            if desired is not None and settings.docker.resilience.reconcile_at_start:
                reconcile = asyncio.create_task(
                    self._reconcile_if_away(runtime, desired), name="agent-reconcile-at-start"
                )
                stack.push_async_callback(_cancel_and_wait, reconcile)
            handlers = Handlers(
                deploy=DeployHandler(runtime, self.key, session.link, desired),
                state=StateWatchHandler(runtime, session.link),
                log_stream=LogStreamHandler(runtime, session.link),
                callbacks=CallbackHandler(runtime, session.link, self.key.public_key),
                lifecycle=LifecycleHandler(
                    self.keeper, session.link, self, updater, build_self_scaler(settings)
                ),
            )
            dispatcher = Dispatcher(
                handlers,
                session.link,
                max_concurrent=settings.max_concurrent_commands,
                metrics=self.metrics,
                waits=runtime.waits if isinstance(runtime, SupersedableWaits) else None,
            )
            self.dispatcher = dispatcher
            exit_code = await self._run_until_stopped(session, dispatcher)
            log.info("agent_draining", in_flight=dispatcher.in_flight, grace_s=settings.shutdown_grace_s)
            await dispatcher.drain(settings.shutdown_grace_s)
        log.info("agent_stopped", exit_code=exit_code, reason=self.exit_reason)
        return exit_code

    async def _desired_state(self, settings: AgentSettings) -> DesiredState | None:
        """Docker only: a cluster keeps its own desired state."""
        if settings.runtime != "docker" or not settings.docker.resilience.desired_state or self.key is None:
            return None
        desired = DesiredState(DesiredStateStore(settings.data_dir), self.key)
        try:
            await desired.load()
        except BerthError as err:
            log.warning("desired_state_unreadable", error=str(err))
        return desired

    async def _reconcile_if_away(self, runtime: Runtime, desired: DesiredState) -> None:
        """No accepted session within ``reconcile_after_s``: bring the node to its desired state
        without the platform (once per start)."""
        resilience = self.settings.docker.resilience
        try:
            await asyncio.wait_for(self.health.wait_accepted(), resilience.reconcile_after_s)
        except TimeoutError:
            log.warning("platform_unreachable_reconciling", after_s=resilience.reconcile_after_s)
            await Reconciler(runtime, desired, fix_drift=resilience.fix_drift).run()

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

    async def _run_until_stopped(self, session: Session, dispatcher: Dispatcher) -> int:
        session_task = asyncio.create_task(
            session.run(dispatcher.dispatch, dispatcher.cancel_streams), name="agent-session"
        )
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
