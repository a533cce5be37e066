"""Command → its route (``routing.py``, declared by each kind in ``commands.py``) → handler.
``replaceToken`` and ``close`` run inline; every other command runs concurrently: one lane per
container (or prefix) keeps a target's commands in order, a global bound limits the work in
flight, and long-lived streams are kept one per prefix / container.

The life-cycle handler is there from the start; the runtime-backed handlers are awaited (and so
built, by the agent's setup) when the first command that needs them arrives, before the next
command is read (so the commands keep their order): a token or life-cycle command never waits
for the runtime.

This is the only place that catches broadly: a failing handler never ends the session, and a
failing callback is answered with ``CommandError`` (5 when not found, 13 otherwise).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, assert_never

import structlog

from berth.agent.commands import Command
from berth.agent.handlers import Handlers, LifecycleHandler
from berth.agent.metrics import AgentMetrics
from berth.agent.ports import PlatformLink
from berth.agent.routing import Ignored, Inline, OnLifecycle, Queued, Route, Stream, Supersede
from berth.errors import BerthError, NotFound

log = structlog.get_logger("berth.agent.dispatcher")

NOT_FOUND_STATUS = 5
INTERNAL_STATUS = 13


def _needs_runtime(route: Route) -> bool:
    return not isinstance(route.serve, OnLifecycle) and not isinstance(route.lane, Ignored)


class Dispatcher:
    def __init__(
        self,
        lifecycle: LifecycleHandler,
        handlers: Handlers | Callable[[], Awaitable[Handlers]],
        link: PlatformLink,
        *,
        max_concurrent: int = 64,
        metrics: AgentMetrics | None = None,
    ) -> None:
        """``handlers``, when not built yet, is awaited by the first command that needs them."""
        self._lifecycle = lifecycle
        self._handlers = handlers if isinstance(handlers, Handlers) else None
        self._setup = None if isinstance(handlers, Handlers) else handlers
        self._link = link
        self._bound = asyncio.Semaphore(max_concurrent)
        self._metrics = metrics
        self._lanes: dict[str, deque[Route]] = {}
        self._streams: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepting = True

    # -- intake ------------------------------------------------------------------------------------

    async def dispatch(self, command: Command) -> None:
        """Called by the session's receive loop for each command; returns quickly except for the
        inline commands (replaceToken, close) and the first that needs the runtime."""
        route = command.route()
        if self._handlers is None and self._accepting and _needs_runtime(route):
            assert self._setup is not None
            self._handlers = await self._setup()
        if not self._accepting:
            log.warning("command_refused", kind=route.kind, reason="shutting down")
            return
        if route.supersedes is not None:
            self._supersede_waits(route.supersedes)
        match route.lane:
            case Inline():
                await self._run_one(route)
            case Queued(key=key):
                self._enqueue(key, route)
            case Stream(key=key):
                self._start_stream(key, route)
            case Ignored(reason=reason):
                log.warning("command_ignored", kind=route.kind, reason=reason, **route.context)
                self._count(route.kind, "ignored", 0.0)
            case _:
                assert_never(route.lane)

    def _supersede_waits(self, supersede: Supersede) -> None:
        """A newer command for a workload or prefix a deploy is waiting on ends that wait now,
        so the command runs at once instead of queueing behind a rollout timeout (before the
        runtime is built no deploy waits)."""
        waits = self._handlers.waits if self._handlers is not None else None
        if waits is None:
            return
        if supersede.prefix is None:
            waits.supersede_all(supersede.by)
        else:
            waits.supersede(supersede.prefix, supersede.names, supersede.by)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _enqueue(self, lane_key: str, route: Route) -> None:
        lane = self._lanes.get(lane_key)
        if lane is not None:
            lane.append(route)
            return
        self._lanes[lane_key] = deque([route])
        self._spawn(self._run_lane(lane_key), name=f"lane:{lane_key}")

    async def _run_lane(self, lane_key: str) -> None:
        lane = self._lanes[lane_key]
        try:
            while lane:
                route = lane.popleft()
                async with self._bound:
                    await self._run_one(route)
        finally:
            self._lanes.pop(lane_key, None)

    def _start_stream(self, key: str, route: Route) -> None:
        previous = self._streams.pop(key, None)
        if previous is not None and not previous.done():
            log.info("stream_replaced", stream=key)
            previous.cancel()
        task = self._spawn(self._run_one(route), name=f"stream:{key}")
        self._streams[key] = task
        task.add_done_callback(lambda done: self._forget_stream(key, done))

    def _forget_stream(self, key: str, task: asyncio.Task[None]) -> None:
        if self._streams.get(key) is task:
            del self._streams[key]

    # -- execution ---------------------------------------------------------------------------------

    async def _serve(self, route: Route) -> str:
        if isinstance(route.serve, OnLifecycle):
            return await route.serve.serve(self._lifecycle)
        assert self._handlers is not None  # awaited by ``dispatch``
        return await route.serve(self._handlers)

    async def _run_one(self, route: Route) -> None:
        kind = route.kind
        started = time.monotonic()
        bound = log.bind(kind=kind, **route.context)
        outcome = "error"
        try:
            with structlog.contextvars.bound_contextvars(command=kind, **route.context):
                outcome = await self._serve(route)
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except NotFound as err:
            outcome = "not_found"
            await self._answer_error(route, NOT_FOUND_STATUS, str(err), bound)
        except BerthError as err:
            outcome = "failed"
            await self._answer_error(route, INTERNAL_STATUS, str(err), bound)
        except Exception as err:
            outcome = "crashed"
            bound.exception("command_crashed")
            await self._answer_error(
                route, INTERNAL_STATUS, f"internal agent error ({type(err).__name__})", bound
            )
        finally:
            duration = time.monotonic() - started
            self._count(kind, outcome, duration)
            bound.info("command_finished", outcome=outcome, duration_ms=round(duration * 1000, 1))

    async def _answer_error(self, route: Route, status: int, message: str, bound: Any) -> None:
        if route.answer is None:
            bound.warning("command_failed", error=message)
            return
        try:
            await self._link.command_error(route.answer.kind, route.answer.target, status, message)
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
        if self._handlers is not None and self._handlers.waits is not None:
            self._handlers.waits.supersede_all("the agent shutting down")
        self.cancel_streams()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
            for task in pending:
                log.warning("command_cancelled_at_shutdown", task=task.get_name())
                task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
