"""State of Deployments as a stream: list, then watch Deployments, Pods and Services from the
list's resourceVersion; re-list on 410 Gone and every ``resync_interval_s`` (sending only what
changed); REMOVED when a Deployment goes away (§15.7, §17 #40-#42, §18)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Final

import structlog

from berth.errors import RuntimeFailure
from berth.model import ContainerRef, ContainerStatus, StateUpdate
from berth.runtimes.common.backoff import Backoff
from berth.runtimes.kubernetes import resources
from berth.runtimes.kubernetes.api import KubeApi
from berth.runtimes.kubernetes.api_errors import Gone, Request
from berth.runtimes.kubernetes.bridge import Bridge
from berth.runtimes.kubernetes.state import app_of, derive

log = structlog.get_logger(__name__)
Obj = dict[str, Any]
Key = tuple[str, str]
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

    queue: asyncio.Queue[tuple[str, str, Obj] | str]
    loop: asyncio.AbstractEventLoop
    stop: threading.Event = field(default_factory=threading.Event)
    responses: set[Any] = field(default_factory=set)


class StateWatcher:
    def __init__(self, api: KubeApi, bridge: Bridge, namespace: str | None, resync_interval_s: float) -> None:
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
        queue: asyncio.Queue[tuple[str, str, Obj] | str] = asyncio.Queue(QUEUE_SIZE)
        channel = Channel(queue, loop)
        tasks = [
            asyncio.create_task(
                self._bridge.stream(self._watch_blocking, kind, snap.versions[kind.kind], channel),
                name=f"kube-watch-{kind.plural}-{self._namespace or 'all'}",
            )
            for kind in WATCHED
        ]
        deadline = loop.time() + self._resync_s
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return
                try:
                    first = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    return
                batch = [first]
                while not queue.empty() and len(batch) < QUEUE_SIZE:
                    batch.append(queue.get_nowait())
                affected: set[Key] = set()
                end: str | None = None
                for event in batch:
                    if isinstance(event, str):
                        end = event
                        break
                    kind, event_type, obj = event
                    key = snap.apply(kind, event_type, obj)
                    if key is not None:
                        affected.add(key)
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
                if changes:
                    yield StateUpdate(tuple(changes))
                if end is not None:
                    yield end
                    return
        finally:
            channel.stop.set()
            for response in list(channel.responses):
                with contextlib.suppress(OSError):  # it may close itself meanwhile
                    response.shutdown()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _watch_blocking(
        self,
        kind: resources.Kind,
        version: str,
        channel: Channel,
    ) -> None:
        """One watch, resumed from the last resourceVersion when the server ends it; ends the
        cycle with ``relist`` on 410 Gone or ``error`` on anything else."""

        stop, responses = channel.stop, channel.responses

        def put(item: tuple[str, str, Obj] | str) -> None:
            future = asyncio.run_coroutine_threadsafe(channel.queue.put(item), channel.loop)
            while not stop.is_set():
                try:
                    future.result(timeout=0.5)
                    return
                except TimeoutError:
                    continue
            future.cancel()

        request = Request("watch", kind, self._namespace)
        while not stop.is_set():
            query = [
                ("watch", "true"),
                ("resourceVersion", version),
                ("allowWatchBookmarks", "true"),
                ("timeoutSeconds", str(int(self._resync_s) + 5)),
            ]
            try:
                response = self._api.open_stream(request, kind.path(self._namespace), query)
            except Gone:
                put(RELIST)
                return
            except RuntimeFailure as err:
                if not stop.is_set():
                    log.warning("kube_watch_failed", kind=kind.kind, error=str(err))
                    put("error")
                return
            responses.add(response)
            try:
                if stop.is_set():  # stopped while opening: the owner's shutdown() missed it
                    return
                for line in response:
                    if stop.is_set():
                        return
                    event = json.loads(line)
                    event_type, obj = event.get("type"), event.get("object") or {}
                    if event_type == "ERROR":
                        gone = obj.get("code") == 410
                        if not gone:
                            log.warning("kube_watch_error", kind=kind.kind, message=obj.get("message"))
                        put(RELIST if gone else "error")
                        return
                    version = str(obj.get("metadata", {}).get("resourceVersion") or version)
                    if event_type != "BOOKMARK":
                        put((kind.kind, str(event_type), obj))
            except Exception as err:  # a closed or broken connection: any urllib3/ssl/socket error
                if not stop.is_set():
                    log.warning("kube_watch_broken", kind=kind.kind, error=type(err).__name__)
                    put("error")
                return
            finally:
                responses.discard(response)
                response.release_conn()


def _diff(
    before: dict[ContainerRef, ContainerStatus], after: dict[ContainerRef, ContainerStatus]
) -> list[ContainerStatus]:
    changes = [status for ref, status in after.items() if before.get(ref) != status]
    changes.extend(ContainerStatus.removed(ref) for ref in before if ref not in after)
    return changes
