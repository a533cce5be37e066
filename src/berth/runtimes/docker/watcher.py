"""containerState on Docker: the full list, then live changes from the engine's event stream
(not polling), a periodic resync that repairs missed events, and a fresh subscription with a full
``initial=True`` list after the engine restarts (§7, §18)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, Final

import docker
import structlog

from berth.errors import RuntimeFailure, TemporaryCommandError
from berth.model import PREFIX_LABEL, ContainerState, ContainerStatus, StateUpdate
from berth.runtimes.docker.backoff import Backoff
from berth.runtimes.docker.bridge import EngineBridge
from berth.runtimes.docker.status import status_from_summary

log = structlog.get_logger(__name__)

EVENT_QUEUE_SIZE: Final = 1024
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
    def __init__(self, bridge: EngineBridge, prefix: str | None, resync_interval_s: float) -> None:
        self._bridge = bridge
        self._prefix = prefix or None
        self._resync_interval_s = resync_interval_s
        self._known: dict[str, ContainerStatus] = {}

    async def updates(self) -> AsyncIterator[StateUpdate]:
        backoff = Backoff()
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
        current = await self._bridge.call("list containers", lambda c: list_statuses(c, self._prefix))
        return StateUpdate(tuple(current.values()), initial=True)

    # -- one subscription ---------------------------------------------------------------------

    async def _session(self) -> AsyncGenerator[StateUpdate]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue(EVENT_QUEUE_SIZE)
        overflowed = False

        def offer(item: object) -> None:
            nonlocal overflowed
            try:
                queue.put_nowait(item)
            except asyncio.QueueFull:
                overflowed = True  # a full resync replaces what was dropped
                if item is _END:
                    queue.get_nowait()
                    queue.put_nowait(_END)

        filters = {"type": "container", **label_filters(self._prefix)}
        stream = await self._bridge.call(
            "subscribe to container events", lambda c: c.api.events(decode=True, filters=filters)
        )
        self._bridge.track(stream)

        def pump() -> None:
            try:
                for event in stream:
                    if _action(event) in WATCHED_ACTIONS:
                        loop.call_soon_threadsafe(offer, event)
            except Exception as err:  # the engine went away mid-read
                log.debug("docker_events_read_failed", error=str(err))
            finally:
                loop.call_soon_threadsafe(offer, _END)

        pumping = asyncio.wrap_future(self._bridge.submit_stream(pump))
        try:
            current = await self._bridge.call("list containers", lambda c: list_statuses(c, self._prefix))
            current_refs = {status.ref for status in current.values()}
            vanished = [s.ref for s in self._known.values() if s.ref not in current_refs]
            self._known = current
            yield StateUpdate(tuple(current.values()), initial=True)
            if vanished:  # removed while the subscription was down (after an engine restart)
                yield StateUpdate(tuple(ContainerStatus.removed(ref) for ref in vanished))
            next_resync = time.monotonic() + self._resync_interval_s
            while True:
                first = await next_event(queue, max(0.0, next_resync - time.monotonic()))
                if first is _END:
                    raise TemporaryCommandError("the Docker event stream ended")
                if first is None or overflowed:
                    overflowed = False
                    next_resync = time.monotonic() + self._resync_interval_s
                    changes = await self._resync()
                else:
                    batch = [first]
                    while not queue.empty():
                        batch.append(queue.get_nowait())
                    ended = any(item is _END for item in batch)
                    changes = await self._apply_events([e for e in batch if isinstance(e, dict)])
                    if ended:
                        if changes:
                            yield StateUpdate(tuple(changes))
                        raise TemporaryCommandError("the Docker event stream ended")
                if changes:
                    yield StateUpdate(tuple(changes))
        finally:
            self._bridge.untrack(stream)
            await asyncio.gather(pumping, return_exceptions=True)

    async def _resync(self) -> list[ContainerStatus]:
        current = await self._bridge.call("list containers", lambda c: list_statuses(c, self._prefix))
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
        current = await self._bridge.call("list containers", _lister(self._prefix, ids))
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


async def next_event(queue: asyncio.Queue[object], timeout_s: float) -> object | None:
    """The next queued item, or None once ``timeout_s`` has passed. ``asyncio.timeout``, not
    ``wait_for``: on Python 3.11 a cancel that lands as an item arrives is swallowed by
    ``wait_for``, and the watch then ran on, its event stream open, after its consumer stopped."""
    try:
        async with asyncio.timeout(timeout_s):
            return await queue.get()
    except TimeoutError:
        return None


def _lister(
    prefix: str | None, ids: list[str]
) -> Callable[[docker.DockerClient], dict[str, ContainerStatus]]:
    return lambda client: list_statuses(client, prefix, ids)
