"""Command → handler. ``replaceToken`` and ``close`` run inline; every other command runs
concurrently: one lane per container (or prefix) keeps a target's commands in order, a global
bound limits the work in flight, and long-lived streams are kept one per prefix / container.

This is the only place that catches broadly: a failing handler never ends the session, and a
failing callback is answered with ``CommandError`` (5 when not found, 13 otherwise).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Coroutine
from typing import Any, assert_never

import structlog

from berth.agent import commands as cmd
from berth.agent.commands import CallbackKind, Command, command_kind
from berth.agent.handlers import Handlers
from berth.agent.metrics import AgentMetrics
from berth.agent.ports import PlatformLink
from berth.errors import BerthError, NotFound
from berth.model import CloseReason, ContainerOperation, ContainerRef, PrefixTarget, Target
from berth.runtimes.waits import WaitBoard

log = structlog.get_logger("berth.agent.dispatcher")

NOT_FOUND_STATUS = 5
INTERNAL_STATUS = 13


def _target_key(target: Target | None) -> str:
    if target is None:
        return "none"
    if isinstance(target, PrefixTarget):
        return f"prefix:{target.prefix}"
    return f"container:{target.key}"


def _callback_of(command: Command) -> tuple[CallbackKind, Target | None] | None:
    match command:
        case cmd.ListSecrets(target=target):
            return CallbackKind.LIST_SECRETS, target
        case cmd.DeleteContainers(target=target):
            return CallbackKind.DELETE_CONTAINERS, target
        case cmd.Inspect(ref=ref):
            return CallbackKind.CONTAINER_INSPECT, ref
        case cmd.ContainerLogs(ref=ref, streaming=False):
            return CallbackKind.CONTAINER_LOG, ref
    return None


def _describe(command: Command) -> dict[str, str]:
    match command:
        case cmd.Deploy(deployment=deployment):
            return {"deployment_id": deployment.id, "prefix": deployment.prefix}
        case cmd.WatchState(prefix=prefix):
            return {"prefix": prefix}
        case cmd.ListSecrets(target=target) | cmd.DeleteContainers(target=target):
            return {"target": _target_key(target)}
        case (
            cmd.Inspect(ref=ref)
            | cmd.ContainerLogs(ref=ref)
            | cmd.ContainerCommand(ref=ref)
            | cmd.LegacyDelete(ref=ref)
        ):
            return {"container": ref.key}
        case cmd.Update(tag=tag):
            return {"tag": tag}
        case cmd.Close(reason=reason):
            return {"reason": reason.name}
    return {}


class Dispatcher:
    def __init__(
        self,
        handlers: Handlers,
        link: PlatformLink,
        *,
        max_concurrent: int = 64,
        metrics: AgentMetrics | None = None,
        waits: WaitBoard | None = None,
    ) -> None:
        self._handlers = handlers
        self._waits = waits
        self._link = link
        self._bound = asyncio.Semaphore(max_concurrent)
        self._metrics = metrics
        self._lanes: dict[str, deque[Command]] = {}
        self._streams: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepting = True

    # -- intake ------------------------------------------------------------------------------------

    async def dispatch(self, command: Command) -> None:
        """Called by the session's receive loop for each command; returns quickly except for the
        inline commands (replaceToken, close)."""
        if not self._accepting:
            log.warning("command_refused", kind=command_kind(command), reason="shutting down")
            return
        self._supersede_waits(command)
        match command:
            case cmd.ReplaceToken() | cmd.Close():
                await self._run_one(command)
            case cmd.Unknown(kind=kind):
                log.warning("command_ignored", kind="unknown", detail=kind)
                self._count("unknown", "ignored", 0.0)
            case cmd.LegacyDeploy(request_id=request_id):
                log.warning(
                    "command_ignored",
                    kind="deploy_legacy",
                    request_id=request_id,
                    reason="legacy deploy is not supported",
                )
                self._count("deploy_legacy", "ignored", 0.0)
            case cmd.WatchState(prefix=prefix):
                self._start_stream(f"state:{prefix}", command)
            case cmd.ContainerLogs(ref=ref, streaming=True):
                self._start_stream(f"log:{ref.key}", command)
            case _:
                self._enqueue(self._lane_of(command), command)

    def _supersede_waits(self, command: Command) -> None:
        """A newer command for a workload or prefix a deploy is waiting on ends that wait now,
        so the command runs at once instead of queueing behind a rollout timeout."""
        if self._waits is None:
            return
        match command:
            case cmd.Deploy(deployment=deployment):
                names = frozenset(w.name for w in deployment.workloads)
                self._waits.supersede(deployment.prefix, names, f"deployment {deployment.id}")
            case cmd.DeleteContainers(target=PrefixTarget(prefix=prefix)):
                self._waits.supersede(prefix, None, f"deleteContainers of prefix {prefix}")
            case cmd.DeleteContainers(target=ContainerRef() as ref) | cmd.LegacyDelete(ref=ref):
                self._waits.supersede(ref.prefix, frozenset({ref.name}), f"deleteContainers of {ref.key}")
            case cmd.ContainerCommand(ref=ref, operation=ContainerOperation.STOP):
                self._waits.supersede(ref.prefix, frozenset({ref.name}), f"stop of {ref.key}")
            case cmd.Close(reason=CloseReason.SHUTDOWN | CloseReason.REVOKE_TOKEN as reason):
                self._waits.supersede_all(f"close({reason.name})")

    @staticmethod
    def _lane_of(command: Command) -> str:
        match command:
            case cmd.Deploy(deployment=deployment):
                return f"prefix:{deployment.prefix}"
            case cmd.ListSecrets(target=target) | cmd.DeleteContainers(target=target):
                return _target_key(target)
            case cmd.Inspect(ref=ref) | cmd.ContainerLogs(ref=ref) | cmd.ContainerCommand(ref=ref):
                return _target_key(ref)
            case cmd.LegacyDelete(ref=ref):
                return _target_key(ref)
            case cmd.Update():
                return "agent"
        return "misc"

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _enqueue(self, lane_key: str, command: Command) -> None:
        lane = self._lanes.get(lane_key)
        if lane is not None:
            lane.append(command)
            return
        self._lanes[lane_key] = deque([command])
        self._spawn(self._run_lane(lane_key), name=f"lane:{lane_key}")

    async def _run_lane(self, lane_key: str) -> None:
        lane = self._lanes[lane_key]
        try:
            while lane:
                command = lane.popleft()
                async with self._bound:
                    await self._run_one(command)
        finally:
            self._lanes.pop(lane_key, None)

    def _start_stream(self, key: str, command: Command) -> None:
        previous = self._streams.pop(key, None)
        if previous is not None and not previous.done():
            log.info("stream_replaced", stream=key)
            previous.cancel()
        task = self._spawn(self._run_one(command), name=f"stream:{key}")
        self._streams[key] = task
        task.add_done_callback(lambda done: self._forget_stream(key, done))

    def _forget_stream(self, key: str, task: asyncio.Task[None]) -> None:
        if self._streams.get(key) is task:
            del self._streams[key]

    # -- execution ---------------------------------------------------------------------------------

    async def _handle(self, command: Command) -> str:
        handlers = self._handlers
        match command:
            case cmd.Deploy():
                return await handlers.deploy.handle(command)
            case cmd.WatchState():
                return await handlers.state.handle(command)
            case cmd.ContainerLogs(streaming=True):
                return await handlers.log_stream.handle(command)
            case cmd.ContainerLogs():
                return await handlers.callbacks.container_log(command)
            case cmd.ListSecrets():
                return await handlers.callbacks.list_secrets(command)
            case cmd.DeleteContainers():
                return await handlers.callbacks.delete_containers(command)
            case cmd.Inspect():
                return await handlers.callbacks.inspect(command)
            case cmd.ContainerCommand():
                return await handlers.callbacks.container_command(command)
            case cmd.LegacyDelete():
                return await handlers.callbacks.legacy_delete(command)
            case cmd.ReplaceToken():
                return await handlers.lifecycle.replace_token(command)
            case cmd.Update():
                return await handlers.lifecycle.update(command)
            case cmd.Close():
                return await handlers.lifecycle.close(command)
            case cmd.Unknown() | cmd.LegacyDeploy():
                return "ignored"
            case _:
                assert_never(command)

    async def _run_one(self, command: Command) -> None:
        kind = command_kind(command)
        started = time.monotonic()
        bound = log.bind(kind=kind, **_describe(command))
        outcome = "error"
        try:
            with structlog.contextvars.bound_contextvars(command=kind, **_describe(command)):
                outcome = await self._handle(command)
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except NotFound as err:
            outcome = "not_found"
            await self._answer_error(command, NOT_FOUND_STATUS, str(err), bound)
        except BerthError as err:
            outcome = "failed"
            await self._answer_error(command, INTERNAL_STATUS, str(err), bound)
        except Exception as err:
            outcome = "crashed"
            bound.exception("command_crashed")
            await self._answer_error(
                command, INTERNAL_STATUS, f"internal agent error ({type(err).__name__})", bound
            )
        finally:
            duration = time.monotonic() - started
            self._count(kind, outcome, duration)
            bound.info("command_finished", outcome=outcome, duration_ms=round(duration * 1000, 1))

    async def _answer_error(self, command: Command, status: int, message: str, bound: Any) -> None:
        callback = _callback_of(command)
        if callback is None:
            bound.warning("command_failed", error=message)
            return
        kind, target = callback
        try:
            await self._link.command_error(kind, target, status, message)
        except BerthError as err:
            bound.warning("command_error_not_delivered", error=str(err))

    def _count(self, kind: str, outcome: str, duration_s: float) -> None:
        if self._metrics is not None:
            self._metrics.command_finished(kind, outcome, duration_s)

    # -- streams and shutdown ------------------------------------------------------------------------

    def cancel_streams(self) -> None:
        """A new session started: the platform no longer knows the old watches and follows."""
        for key, task in list(self._streams.items()):
            log.info("stream_orphaned", stream=key)
            task.cancel()
        self._streams.clear()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def drain(self, grace_s: float) -> None:
        """Stop intake, cancel streams, let the rest finish within ``grace_s``, cancel what is left."""
        self._accepting = False
        if self._waits is not None:
            self._waits.supersede_all("the agent shutting down")
        self.cancel_streams()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
            for task in pending:
                log.warning("command_cancelled_at_shutdown", task=task.get_name())
                task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
