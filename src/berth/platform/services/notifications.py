"""Webhook notifications: a deployment finished (successful or failed), a node connected or
disconnected, an agent update succeeded or was aborted.

Events are queued (bounded; when full, new events are dropped, counted and logged) and delivered
by one named background task, so the platform never waits for a receiver. Each delivery is
retried a bounded number of times with capped, jittered exponential backoff on a connection
error, a timeout, 429 or 5xx; any other answer ends it. Payloads carry ids, names, statuses and
reasons, never a token, a password or a secret value. Webhook URLs (a Slack or Discord URL is
itself a secret) are never logged: only their host is.

Shapes: ``generic`` (``{"event", "at", "text", "data"}``), ``slack`` (``{"text"}``, an incoming
webhook) and ``discord`` (``{"content", "username"}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import random
import urllib.parse
from dataclasses import dataclass
from typing import Any, Final, Literal

import httpx
import structlog

from berth.platform.models import DeploymentRecord
from berth.platform.services.deployments import DeploymentService
from berth.platform.services.sessions import AgentSessions
from berth.platform.store import Store

log = structlog.get_logger(__name__)

Shape = Literal["generic", "slack", "discord"]
SHAPES: Final = ("generic", "slack", "discord")
QUEUE_SIZE: Final = 1_000
BACKOFF_CAP_S: Final = 30.0
RETRY_STATUSES: Final = frozenset({408, 425, 429})


@dataclass(frozen=True)
class Webhook:
    url: str
    shape: Shape = "generic"

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.url).hostname or "?"


def parse_webhook(spec: str) -> Webhook:
    """``URL`` or ``SHAPE=URL`` with SHAPE one of generic, slack, discord."""
    shape, sep, url = spec.partition("=")
    if not sep or shape not in SHAPES:
        shape, url = "generic", spec
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("a webhook is [generic|slack|discord=]http(s)://host/path")
    return Webhook(url=url, shape=shape)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Notification:
    # deployment.successful | deployment.failed | node.connected | node.disconnected
    # | agent.updated | agent.update_failed
    event: str
    text: str  # one line for people
    data: dict[str, Any]
    at: float


def payload(notification: Notification, shape: Shape) -> dict[str, Any]:
    if shape == "slack":
        return {"text": notification.text}
    if shape == "discord":
        return {"content": notification.text[:2000], "username": "Berth"}
    moment = datetime.datetime.fromtimestamp(notification.at, tz=datetime.UTC)
    return {
        "event": notification.event,
        "at": moment.isoformat().replace("+00:00", "Z"),
        "text": notification.text,
        "data": notification.data,
    }


class WebhookSender:
    """One bounded queue and one named delivery task per webhook (so a receiver that hangs
    delays only its own notifications); started and stopped by the composition root."""

    def __init__(
        self, webhooks: list[Webhook], attempts: int, backoff_s: float, timeout_s: float = 5.0
    ) -> None:
        self._webhooks = webhooks
        self._attempts = max(1, attempts)
        self._backoff_s = backoff_s
        self._timeout_s = timeout_s
        self._queues: list[asyncio.Queue[Notification]] = [asyncio.Queue(QUEUE_SIZE) for _ in webhooks]
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None
        self.dropped = 0
        self.delivered = 0
        self.failed = 0

    def submit(self, notification: Notification) -> None:
        for hook, queue in zip(self._webhooks, self._queues, strict=True):
            try:
                queue.put_nowait(notification)
            except asyncio.QueueFull:
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 100 == 0:
                    log.warning("notifications_dropped", webhook_host=hook.host, dropped=self.dropped)

    def start(self) -> None:
        if self._webhooks and not self._tasks:
            self._client = httpx.AsyncClient(timeout=self._timeout_s, follow_redirects=False)
            for index, (hook, queue) in enumerate(zip(self._webhooks, self._queues, strict=True)):
                task = asyncio.create_task(self._run(hook, queue), name=f"platform-notifications-{index}")
                task.add_done_callback(self._exited)
                self._tasks.append(task)

    @staticmethod
    def _exited(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("notifications_task_died", task=task.get_name(), error=repr(task.exception()))

    async def aclose(self, drain_s: float = 2.0) -> None:
        """Lets queued notifications go out for a moment, then stops."""
        if not self._tasks:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(q.join() for q in self._queues)), drain_s)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._client is not None:
            await self._client.aclose()

    async def _run(self, hook: Webhook, queue: asyncio.Queue[Notification]) -> None:
        while True:
            notification = await queue.get()
            try:
                await self._deliver(hook, notification)
            finally:
                queue.task_done()

    async def _deliver(self, hook: Webhook, notification: Notification) -> None:
        assert self._client is not None
        body = payload(notification, hook.shape)
        problem = ""
        for attempt in range(1, self._attempts + 1):
            try:
                response = await self._client.post(hook.url, json=body)
            except httpx.HTTPError as err:
                problem = type(err).__name__
            else:
                if response.status_code < 300:
                    self.delivered += 1
                    return
                problem = f"HTTP {response.status_code}"
                if response.status_code < 500 and response.status_code not in RETRY_STATUSES:
                    break
            if attempt < self._attempts:
                delay = min(self._backoff_s * 2 ** (attempt - 1), BACKOFF_CAP_S)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not crypto
        self.failed += 1
        log.bind(webhook_host=hook.host, shape=hook.shape).warning(
            "notification_not_delivered", notification_event=notification.event, problem=problem
        )


class NotificationService:
    """Turns what happens on the platform into notifications."""

    def __init__(
        self,
        store: Store,
        sessions: AgentSessions,
        deployments: DeploymentService,
        sender: WebhookSender,
    ) -> None:
        self._store = store
        self._sender = sender
        sessions.on_connect(self._node_connected)
        sessions.on_disconnect(self._node_disconnected)
        sessions.on_update_result(self._update_result)
        deployments.on_finish(self._deployment_finished)

    def _now(self) -> float:
        return datetime.datetime.now(tz=datetime.UTC).timestamp()

    async def _node_name(self, node_id: str) -> str:
        node = await self._store.nodes.get(node_id)
        return node.name if node is not None else node_id

    async def _deployment_finished(self, deployment: DeploymentRecord, outcome: str) -> None:
        name = await self._node_name(deployment.node_id)
        verb = "succeeded" if outcome == "successful" else "failed"
        self._sender.submit(
            Notification(
                event=f"deployment.{'successful' if outcome == 'successful' else 'failed'}",
                text=f"Deployment of {deployment.prefix} on {name} {verb}",
                data={
                    "deployment": {"id": deployment.id, "prefix": deployment.prefix, "status": outcome},
                    "node": {"id": deployment.node_id, "name": name},
                },
                at=self._now(),
            )
        )

    async def _node_connected(self, node_id: str) -> None:
        await self._node_event(node_id, "connected")

    async def _node_disconnected(self, node_id: str) -> None:
        await self._node_event(node_id, "disconnected")

    async def _node_event(self, node_id: str, what: str) -> None:
        name = await self._node_name(node_id)
        self._sender.submit(
            Notification(
                event=f"node.{what}",
                text=f"Node {name} {what}",
                data={"node": {"id": node_id, "name": name}},
                at=self._now(),
            )
        )

    async def _update_result(self, node_id: str, succeeded: bool, detail: str) -> None:
        name = await self._node_name(node_id)
        data: dict[str, Any] = {"node": {"id": node_id, "name": name}}
        if succeeded:
            data["version"] = detail
            text = f"Agent of {name} updated to {detail}"
        else:
            data["error"] = detail[:500]
            text = f"Agent update of {name} failed: {detail[:300]}"
        self._sender.submit(
            Notification(
                event="agent.updated" if succeeded else "agent.update_failed",
                text=text,
                data=data,
                at=self._now(),
            )
        )
