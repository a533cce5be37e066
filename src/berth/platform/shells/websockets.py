"""The WebSocket feeds: live container states of a node (by prefix), live logs of a container,
and a deployment's events (history first, then live). Each relays one viewer's bounded queue
until the feed ends or the client leaves."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

from starlette.websockets import WebSocket, WebSocketDisconnect

from berth.platform.problems import ApiProblem
from berth.platform.services import Services
from berth.platform.services.connections import AgentConnection, Feed, LogFeed, StateFeed, Viewer
from berth.platform.shells.console_auth import ConsoleSessions, same_origin
from berth.platform.shells.requests import int_query, path_param

F = TypeVar("F", bound=Feed)
WS_POLICY_VIOLATION: Final = 1008
DEFAULT_TAIL: Final = 100


class WebSocketFeeds:
    def __init__(self, services: Services, api_token: str, sessions: ConsoleSessions) -> None:
        self._s = services
        self._api_token = api_token
        self._console_sessions = sessions

    def _authorized(self, websocket: WebSocket) -> bool:
        header = websocket.headers.get("authorization")
        presented = ""
        if header and header.lower().startswith("bearer "):
            presented = header[7:].strip()
        else:
            presented = websocket.query_params.get("token") or ""
        if presented:
            return hmac.compare_digest(presented.encode(), self._api_token.encode())
        # the console: its session cookie, from a page of this very server
        return same_origin(websocket) and self._console_sessions.authorizes(websocket, "GET")

    async def _open(self, websocket: WebSocket) -> bool:
        """Checks the bearer and the team; refuses the handshake otherwise."""
        if not self._authorized(websocket) or websocket.path_params.get("team") != self._s.config.team:
            await websocket.close(code=WS_POLICY_VIOLATION)
            return False
        return True

    @staticmethod
    async def _problem(websocket: WebSocket, problem: ApiProblem) -> None:
        await websocket.accept()
        await websocket.send_json({"type": "error", "status": problem.status, "message": problem.message})
        await websocket.close(code=4000 + problem.status)

    @staticmethod
    async def _relay(websocket: WebSocket, viewer: Viewer, skip_until: float | None = None) -> None:
        async def _forward() -> None:
            while True:
                item = await viewer.queue.get()
                if item is None:
                    await websocket.send_json({"type": "end"})
                    return
                created = item.get("createdAt")
                if skip_until is not None and isinstance(created, float) and created <= skip_until:
                    continue
                await websocket.send_json(item)

        async def _until_closed() -> None:
            try:
                while True:
                    await websocket.receive_text()
            except WebSocketDisconnect:
                return

        forward = asyncio.create_task(_forward(), name="platform-ws-forward")
        closed = asyncio.create_task(_until_closed(), name="platform-ws-closed")
        try:
            await asyncio.wait([forward, closed], return_when=asyncio.FIRST_COMPLETED)
            client_gone = closed.done()
        finally:
            for task in (forward, closed):
                task.cancel()
            await asyncio.gather(forward, closed, return_exceptions=True)
        if not client_gone:
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await websocket.close()

    async def _serve_feed(
        self,
        websocket: WebSocket,
        watch: Callable[[], Awaitable[tuple[AgentConnection, F, Viewer]]],
        unwatch: Callable[[AgentConnection, F, Viewer], None],
    ) -> None:
        """Opens the agent feed (answering a problem instead when it cannot), relays it, and
        leaves it when the client goes or the feed ends."""
        if not await self._open(websocket):
            return
        try:
            connection, feed, viewer = await watch()
        except ApiProblem as problem:
            await self._problem(websocket, problem)
            return
        try:
            await websocket.accept()
            await self._relay(websocket, viewer)
        finally:
            unwatch(connection, feed, viewer)

    async def states(self, websocket: WebSocket) -> None:
        containers = self._s.containers

        async def watch() -> tuple[AgentConnection, StateFeed, Viewer]:
            prefix = websocket.query_params.get("prefix", "")
            return await containers.watch_states(path_param(websocket, "node_id"), prefix)

        await self._serve_feed(websocket, watch, containers.unwatch_states)

    async def logs(self, websocket: WebSocket) -> None:
        containers = self._s.containers

        async def watch() -> tuple[AgentConnection, LogFeed, Viewer]:
            node_id, prefix, name = (path_param(websocket, k) for k in ("node_id", "prefix", "name"))
            tail = int_query(websocket, "tail", DEFAULT_TAIL, maximum=10_000)
            return await containers.watch_logs(node_id, prefix, name, tail)

        await self._serve_feed(websocket, watch, containers.unwatch_logs)

    async def deployment(self, websocket: WebSocket) -> None:
        if not await self._open(websocket):
            return
        deployments = self._s.deployments
        try:
            deployment_id = path_param(websocket, "deployment_id")
            feed, viewer, history = await deployments.watch(deployment_id)
        except ApiProblem as problem:
            await self._problem(websocket, problem)
            return
        try:
            await websocket.accept()
            for event in history:
                await websocket.send_json(event)
            deployment = await deployments.get(deployment_id)
            await websocket.send_json({"type": "snapshot", "status": deployment.status})
            last = history[-1]["createdAt"] if history else None
            await self._relay(websocket, viewer, skip_until=last)
        except (WebSocketDisconnect, ApiProblem):
            pass
        finally:
            deployments.unwatch(deployment_id, feed, viewer)
