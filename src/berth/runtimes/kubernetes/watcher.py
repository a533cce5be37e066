"""State of Deployments as a stream: list, then watch Deployments, Pods and Services from the
list's resourceVersion; re-list on 410 Gone and every ``resync_interval_s`` (sending only what
changed); REMOVED when a Deployment goes away (§15.7, §17 #40-#42, §18)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Final

import structlog

from berth.errors import RuntimeFailure
from berth.model import ContainerRef, ContainerStatus, StateUpdate
from berth.runtimes.common.backoff import Backoff
from berth.runtimes.common.bridge import ThreadBridge
from berth.runtimes.common.deadlines import next_item
from berth.runtimes.kubernetes import resources
from berth.runtimes.kubernetes.api import KubeApi
from berth.runtimes.kubernetes.api_errors import Gone, Request
from berth.runtimes.kubernetes.state import app_of, derive
from berth.runtimes.kubernetes.streams import OpenStreams

log = structlog.get_logger(__name__)
Obj = dict[str, Any]
Key = tuple[str, str]
WatchEvent = tuple[str, str, Obj]  # kind, event type, object
WATCHED: Final = (resources.DEPLOYMENT, resources.POD, resources.SERVICE)
QUEUE_SIZE: Final = 1024
BACKOFF_INITIAL_S: Final = 1.0
BACKOFF_MAX_S: Final = 30.0
RELIST: Final = "relist"


def _key(obj: Obj) -> Key:
    meta = obj["metadata"]
    return meta.get("namespace", ""), meta["name"]


@dataclass
class Snapshot:
    """The watched objects by kind, then (namespace, name)."""

    objects: dict[str, dict[Key, Obj]] = field(default_factory=lambda: {k.kind: {} for k in WATCHED})
    versions: dict[str, str] = field(default_factory=dict)

    def status(self, key: Key) -> ContainerStatus | None:
        deployment = self.objects[resources.DEPLOYMENT.kind].get(key)
        if deployment is None:
            return None
        ns, name = key
        pods = [
            p for (pns, _), p in self.objects[resources.POD.kind].items() if pns == ns and app_of(p) == name
        ]
        return derive(deployment, pods, self.objects[resources.SERVICE.kind].get(key))

    def all(self) -> dict[ContainerRef, ContainerStatus]:
        result = {}
        for key in self.objects[resources.DEPLOYMENT.kind]:
            status = self.status(key)
            if status is not None:
                result[status.ref] = status
        return result

    def apply(self, kind: str, event_type: str, obj: Obj) -> Key | None:
        """Record one watch event; the Deployment key it affects."""
        key = _key(obj)
        if event_type == "DELETED":
            self.objects[kind].pop(key, None)
        else:
            self.objects[kind][key] = obj
        if kind == resources.POD.kind:
            app = app_of(obj)
            return (key[0], app) if app else None
        return key


@dataclass
class Channel:
    """What the watch threads of one cycle share with the loop."""

    queue: asyncio.Queue[WatchEvent | str]
    loop: asyncio.AbstractEventLoop
    streams: OpenStreams = field(default_factory=OpenStreams)

    def refused(self, task: asyncio.Task[None]) -> None:
        """A watch that could not start (every stream thread taken) ends the cycle as an error."""
        if task.cancelled() or task.exception() is None:
            return
        log.warning("kube_watch_not_started", error=str(task.exception()))
        with contextlib.suppress(asyncio.QueueFull):  # a full queue: events flow, the resync repairs
            self.queue.put_nowait("error")

    def put(self, item: WatchEvent | str) -> None:
        """From a watch thread: wait for room in the queue, unless the cycle stops meanwhile."""
        future = asyncio.run_coroutine_threadsafe(self.queue.put(item), self.loop)
        while not self.streams.stop.is_set():
            try:
                future.result(timeout=0.5)
                return
            except TimeoutError:
                continue
        future.cancel()


class StateWatcher:
    def __init__(
        self, api: KubeApi, bridge: ThreadBridge, namespace: str | None, resync_interval_s: float
    ) -> None:
        self._api = api
        self._bridge = bridge
        self._namespace = namespace or None
        self._resync_s = max(resync_interval_s, 1.0)

    async def snapshot(self) -> Snapshot:
        snap = Snapshot()
        for kind in WATCHED:
            listed = await self._bridge.call(self._api.list, kind, self._namespace)
            snap.versions[kind.kind] = str(listed.get("metadata", {}).get("resourceVersion", ""))
            for item in listed.get("items") or []:
                snap.objects[kind.kind][_key(item)] = item
        return snap

    async def updates(self) -> AsyncIterator[StateUpdate]:
        """The full list first; then changes. After the API server was unreachable the full list
        is sent again (``initial=True``); a re-list after 410 Gone or the periodic resync sends
        only what changed."""
        emitted: dict[ContainerRef, ContainerStatus] = {}
        full_list = True
        backoff = Backoff(BACKOFF_INITIAL_S, BACKOFF_MAX_S)
        while True:
            try:
                snap = await self.snapshot()
            except RuntimeFailure as err:
                full_list = True
                delay = backoff.next_delay_s()
                log.warning(
                    "kube_state_list_failed",
                    namespace=self._namespace,
                    error=str(err),
                    retry_s=round(delay, 2),
                )
                await asyncio.sleep(delay)
                continue
            current = snap.all()
            if full_list:
                yield StateUpdate(tuple(current.values()), initial=True)
                full_list = False
            else:
                changes = _diff(emitted, current)
                if changes:
                    yield StateUpdate(tuple(changes))
            emitted = current
            outcome = "resync"
            # closed here, not by the garbage collector: closing this stream must end the watches
            async with contextlib.aclosing(self._watch(snap, emitted)) as watching:
                async for update in watching:
                    if isinstance(update, StateUpdate):
                        yield update
                    else:
                        outcome = update
            if outcome == RELIST:
                log.info("kube_watch_relist", namespace=self._namespace, reason="410 Gone")
            elif outcome == "error":
                full_list = True
                await asyncio.sleep(backoff.next_delay_s())
            else:
                backoff.reset()

    async def _watch(
        self, snap: Snapshot, emitted: dict[ContainerRef, ContainerStatus]
    ) -> AsyncGenerator[StateUpdate | str]:
        """Watch until the resync deadline, a 410 (re-list) or an error. ``emitted`` is updated."""
        loop = asyncio.get_running_loop()
        channel = Channel(asyncio.Queue(QUEUE_SIZE), loop)
        tasks = [
            asyncio.create_task(
                self._bridge.stream(self._watch_blocking, kind, snap.versions[kind.kind], channel),
                name=f"kube-watch-{kind.plural}-{self._namespace or 'all'}",
            )
            for kind in WATCHED
        ]
        for task in tasks:
            task.add_done_callback(channel.refused)
        deadline = loop.time() + self._resync_s
        try:
            while (remaining := deadline - loop.time()) > 0:
                first = await next_item(channel.queue, remaining)
                if first is None:
                    return
                affected, end = _apply_batch(snap, _drain(channel.queue, first))
                changes = _changes(snap, emitted, affected)
                if changes:
                    yield StateUpdate(tuple(changes))
                if end is not None:
                    yield end
                    return
        finally:
            channel.streams.shutdown()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _watch_blocking(self, kind: resources.Kind, version: str, channel: Channel) -> None:
        """One watch, resumed from the last resourceVersion when the server ends it; ends the
        cycle with ``relist`` on 410 Gone or ``error`` on anything else."""
        stop = channel.streams.stop
        while not stop.is_set():
            end, version = self._read_watch(kind, version, channel)
            if end is not None:
                if not stop.is_set():
                    channel.put(end)
                return

    def _read_watch(self, kind: resources.Kind, version: str, channel: Channel) -> tuple[str | None, str]:
        """One watch request: how the cycle ends (``None``: the server ended it, resume) and the
        last resourceVersion seen."""
        query = [
            ("watch", "true"),
            ("resourceVersion", version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(int(self._resync_s) + 5)),
        ]
        streams = channel.streams
        try:
            request = Request("watch", kind, self._namespace)
            with streams.open(self._api, request, kind.path(self._namespace), query) as lines:
                for line in lines:
                    event = json.loads(line)
                    event_type, obj = event.get("type"), event.get("object") or {}
                    if event_type == "ERROR":
                        return _watch_error(kind, obj), version
                    version = str(obj.get("metadata", {}).get("resourceVersion") or version)
                    if event_type != "BOOKMARK":
                        channel.put((kind.kind, str(event_type), obj))
        except Gone:
            return RELIST, version
        except RuntimeFailure as err:  # the watch could not be opened
            if not streams.stop.is_set():
                log.warning("kube_watch_failed", kind=kind.kind, error=str(err))
            return "error", version
        except Exception as err:  # a closed or broken connection: any urllib3/ssl/socket error
            if not streams.stop.is_set():
                log.warning("kube_watch_broken", kind=kind.kind, error=type(err).__name__)
            return "error", version
        return None, version


def _watch_error(kind: resources.Kind, obj: Obj) -> str:
    """An ERROR event in the stream: 410 Gone asks for a re-list, anything else is an error."""
    if obj.get("code") == 410:
        return RELIST
    log.warning("kube_watch_error", kind=kind.kind, message=obj.get("message"))
    return "error"


def _drain(queue: asyncio.Queue[WatchEvent | str], first: WatchEvent | str) -> list[WatchEvent | str]:
    """``first`` and what else is queued already, up to the queue's size."""
    batch = [first]
    while not queue.empty() and len(batch) < QUEUE_SIZE:
        batch.append(queue.get_nowait())
    return batch


def _apply_batch(snap: Snapshot, batch: list[WatchEvent | str]) -> tuple[set[Key], str | None]:
    """Apply the events up to the first end marker: the Deployments they affect, and the end."""
    affected: set[Key] = set()
    for event in batch:
        if isinstance(event, str):
            return affected, event
        kind, event_type, obj = event
        key = snap.apply(kind, event_type, obj)
        if key is not None:
            affected.add(key)
    return affected, None


def _changes(
    snap: Snapshot, emitted: dict[ContainerRef, ContainerStatus], affected: set[Key]
) -> list[ContainerStatus]:
    """The statuses of ``affected`` that differ from what was emitted; ``emitted`` is updated."""
    changes = []
    for key in sorted(affected):
        ref = ContainerRef(*key)
        status = snap.status(key)
        if status is None:
            if emitted.pop(ref, None) is not None:
                changes.append(ContainerStatus.removed(ref))
        elif emitted.get(ref) != status:
            emitted[ref] = status
            changes.append(status)
    return changes


def _diff(
    before: dict[ContainerRef, ContainerStatus], after: dict[ContainerRef, ContainerStatus]
) -> list[ContainerStatus]:
    changes = [status for ref, status in after.items() if before.get(ref) != status]
    changes.extend(ContainerStatus.removed(ref) for ref in before if ref not in after)
    return changes
