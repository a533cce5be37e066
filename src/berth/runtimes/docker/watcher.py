"""containerState on Docker: the full list, then live changes from the engine's event stream
(not polling), a periodic resync that repairs missed events, and a fresh subscription with a full
``initial=True`` list after the engine restarts (§7, §18)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from typing import Any, Final

import docker
import structlog

from berth.errors import RuntimeFailure, TemporaryCommandError
from berth.model import PREFIX_LABEL, ContainerState, ContainerStatus, StateUpdate
from berth.runtimes.common.backoff import Backoff
from berth.runtimes.common.deadlines import next_item
from berth.runtimes.docker.engine import Engine
from berth.runtimes.docker.status import status_from_summary

log = structlog.get_logger(__name__)

EVENT_QUEUE_SIZE: Final = 1024
RESUBSCRIBE_INITIAL_S: Final = 0.2
RESUBSCRIBE_CAP_S: Final = 60.0
# Filtered here, not by the engine: Podman filters on its own names ("died") but reports
# Docker's ("die"), and says "remove" where Docker says "destroy".
WATCHED_ACTIONS: Final = frozenset(
    {
        "create",
        "start",
        "restart",
        "stop",
        "die",
        "kill",
        "pause",
        "unpause",
        "destroy",
        "rename",
        "oom",
        "remove",
        "died",
        "health_status",
    }
)
_DIED: Final = frozenset({"die", "died"})
_END: Final = object()


def _action(event: dict[str, Any]) -> str:
    return str(event.get("Action") or event.get("status") or "").split(":", 1)[0]


def _comparable(status: ContainerStatus) -> ContainerStatus:
    """Docker's human ``status`` ("Up 5 seconds") changes every second: not a change."""
    return dataclasses.replace(status, status="")


def label_filters(prefix: str | None) -> dict[str, Any]:
    return {"label": [f"{PREFIX_LABEL}={prefix}"]} if prefix else {}


def list_statuses(
    client: docker.DockerClient, prefix: str | None, ids: list[str] | None = None
) -> dict[str, ContainerStatus]:
    filters = label_filters(prefix)
    if ids is not None:
        filters["id"] = ids
    summaries = client.api.containers(all=True, filters=filters)
    return {str(s["Id"]): status_from_summary(s, prefix) for s in summaries}


class StateWatcher:
    def __init__(self, engine: Engine, prefix: str | None, resync_interval_s: float) -> None:
        self._engine = engine
        self._prefix = prefix or None
        self._resync_interval_s = resync_interval_s
        self._known: dict[str, ContainerStatus] = {}

    async def updates(self) -> AsyncIterator[StateUpdate]:
        backoff = Backoff(RESUBSCRIBE_INITIAL_S, RESUBSCRIBE_CAP_S)
        while True:
            try:
                # closed here, not by the garbage collector: closing this stream ends the subscription
                async with contextlib.aclosing(self._session()) as session:
                    async for update in session:
                        if update.initial:
                            backoff.reset()
                        yield update
            except RuntimeFailure as err:
                log.warning("state_watch_interrupted", prefix=self._prefix or "", error=str(err))
            await asyncio.sleep(backoff.next_delay_s())

    async def list_once(self) -> StateUpdate:
        current = await self._engine.call("list containers", lambda c: list_statuses(c, self._prefix))
        return StateUpdate(tuple(current.values()), initial=True)

    # -- one subscription ---------------------------------------------------------------------

    async def _session(self) -> AsyncGenerator[StateUpdate]:
        feed = _EventFeed(asyncio.get_running_loop())
        filters = {"type": "container", **label_filters(self._prefix)}
        stream = await self._engine.call(
            "subscribe to container events", lambda c: c.api.events(decode=True, filters=filters)
        )
        self._engine.track(stream)
        try:
            pumping = asyncio.wrap_future(self._engine.submit_stream(lambda: feed.pump(stream)))
        except BaseException:
            self._engine.untrack(stream)
            raise
        try:
            for update in await self._full_list():
                yield update
            next_resync = time.monotonic() + self._resync_interval_s
            while True:
                first = await feed.next(max(0.0, next_resync - time.monotonic()))
                if first is _END:
                    raise _stream_ended()
                if first is None or feed.overflowed:  # a full resync replaces what was dropped
                    feed.overflowed = False
                    next_resync = time.monotonic() + self._resync_interval_s
                    changes = await self._resync()
                else:
                    batch = feed.with_queued(first)
                    changes = await self._apply_events([e for e in batch if isinstance(e, dict)])
                    if any(item is _END for item in batch):
                        if changes:
                            yield StateUpdate(tuple(changes))
                        raise _stream_ended()
                if changes:
                    yield StateUpdate(tuple(changes))
        finally:
            self._engine.untrack(stream)
            await asyncio.gather(pumping, return_exceptions=True)

    async def _full_list(self) -> list[StateUpdate]:
        """The full list (``initial``), then REMOVED for what vanished while the subscription was
        down (after an engine restart)."""
        current = await self._engine.call("list containers", lambda c: list_statuses(c, self._prefix))
        current_refs = {status.ref for status in current.values()}
        vanished = [s.ref for s in self._known.values() if s.ref not in current_refs]
        self._known = current
        updates = [StateUpdate(tuple(current.values()), initial=True)]
        if vanished:
            updates.append(StateUpdate(tuple(ContainerStatus.removed(ref) for ref in vanished)))
        return updates

    async def _resync(self) -> list[ContainerStatus]:
        current = await self._engine.call("list containers", lambda c: list_statuses(c, self._prefix))
        return self._diff(current, set(self._known) | set(current))

    async def _apply_events(self, events: list[dict[str, Any]]) -> list[ContainerStatus]:
        last_action: dict[str, str] = {}
        for event in events:
            cid = str(event.get("id") or event.get("Actor", {}).get("ID", ""))
            if cid:
                last_action[cid] = _action(event)
        if not last_action:
            return []
        ids = list(last_action)
        current = await self._engine.call("list containers", _lister(self._prefix, ids))
        for cid, action in last_action.items():
            listed = current.get(cid)
            # Docker emits "die" before its container list shows the exit: the process is gone,
            # so the list's "running" is stale (the later "stop" event would confirm it).
            if action in _DIED and listed is not None and listed.state is ContainerState.RUNNING:
                current[cid] = dataclasses.replace(listed, state=ContainerState.EXITED, reason="exited")
        return self._diff(current, set(ids))

    def _diff(self, current: dict[str, ContainerStatus], scope: set[str]) -> list[ContainerStatus]:
        """Changes within ``scope`` (container ids) against what was last reported; a container
        that vanished is REMOVED, a renamed one is REMOVED under its old name first."""
        changes: list[ContainerStatus] = []
        for cid in scope:
            before = self._known.get(cid)
            after = current.get(cid)
            if after is None:
                if before is not None:
                    changes.append(ContainerStatus.removed(before.ref))
                    del self._known[cid]
                continue
            if before is not None and before.ref != after.ref:
                changes.append(ContainerStatus.removed(before.ref))
            if before is None or _comparable(before) != _comparable(after):
                changes.append(after)
            self._known[cid] = after
        return changes


class _EventFeed:
    """Engine events from the reading thread to the loop, through a bounded queue. On overflow
    events are dropped (``overflowed`` asks for a full resync) but the end marker always gets in."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[object] = asyncio.Queue(EVENT_QUEUE_SIZE)
        self.overflowed = False

    def pump(self, stream: Iterable[dict[str, Any]]) -> None:
        """Blocking, in a stream thread, until the stream ends or is closed."""
        try:
            for event in stream:
                if _action(event) in WATCHED_ACTIONS:
                    self._loop.call_soon_threadsafe(self._offer, event)
        except Exception as err:  # the engine went away mid-read
            log.debug("docker_events_read_failed", error=str(err))
        finally:
            self._loop.call_soon_threadsafe(self._offer, _END)

    def _offer(self, item: object) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed = True
            if item is _END:
                self._queue.get_nowait()
                self._queue.put_nowait(_END)

    async def next(self, timeout_s: float) -> object | None:
        """The next event or the end marker; ``None`` when ``timeout_s`` passes first."""
        return await next_item(self._queue, timeout_s)

    def with_queued(self, first: object) -> list[object]:
        batch = [first]
        while not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return batch


def _stream_ended() -> TemporaryCommandError:
    return TemporaryCommandError("the Docker event stream ended")


def _lister(
    prefix: str | None, ids: list[str]
) -> Callable[[docker.DockerClient], dict[str, ContainerStatus]]:
    return lambda client: list_statuses(client, prefix, ids)
