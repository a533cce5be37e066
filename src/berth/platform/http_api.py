"""The HTTP API (JSON, crux-like paths under ``/api/{teamSlug}/...``) and its WebSocket feeds.

Every route but the health check and the install-script download needs ``Authorization: Bearer
<api token>`` (WebSockets may pass ``?token=`` instead). Operations raise ``ApiProblem``s, which
become their status code with ``{"message", "property"}``: 400 names the failing field, 404 an
unknown id, 409 a node that is not connected, 412 a node that is updating or outdated.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Final

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from berth.platform.connections import Viewer
from berth.platform.control import ControlPlane
from berth.platform.deployments import Deployments
from berth.platform.problems import ApiProblem, InvalidInput, UnknownEntity
from berth.platform.records import RegistryRecord

log = structlog.get_logger(__name__)

Handler = Callable[[Request], Awaitable[Response]]
MAX_TAKE: Final = 10_000
WS_POLICY_VIOLATION: Final = 1008


def _no_content() -> Response:
    return Response(status_code=204)


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        payload = json.loads(raw)
    except ValueError:
        raise InvalidInput("body", "is not valid JSON") from None
    if not isinstance(payload, dict):
        raise InvalidInput("body", "must be a JSON object")
    return payload


def _text_field(payload: dict[str, Any], key: str, *, required: bool = False, default: str = "") -> str:
    value = payload.get(key)
    if value is None:
        if required:
            raise InvalidInput(key, "is required")
        return default
    if not isinstance(value, str) or (required and not value.strip()):
        raise InvalidInput(key, "must be a non-empty string" if required else "must be a string")
    return value


def _int_query(request: Request, key: str, default: int, maximum: int = MAX_TAKE) -> int:
    raw = request.query_params.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(key, "must be an integer") from None
    if not 0 <= value <= maximum:
        raise InvalidInput(key, f"must be between 0 and {maximum}")
    return value


class HttpApi:
    def __init__(self, plane: ControlPlane, deployments: Deployments, api_token: str) -> None:
        self._plane = plane
        self._deployments = deployments
        self._api_token = api_token
        self._team = plane.config.team

    # -- plumbing ------------------------------------------------------------------------------

    def _authorized(self, header: str | None, query_token: str | None = None) -> bool:
        presented = ""
        if header and header.lower().startswith("bearer "):
            presented = header[7:].strip()
        elif query_token:
            presented = query_token
        return bool(presented) and hmac.compare_digest(presented.encode(), self._api_token.encode())

    def _guard(self, handler: Handler, *, public: bool = False) -> Handler:
        async def guarded(request: Request) -> Response:
            if not public and not self._authorized(request.headers.get("authorization")):
                return JSONResponse({"message": "Unauthorized"}, status_code=401)
            if request.path_params.get("team", self._team) != self._team:
                return JSONResponse({"message": "Team not found"}, status_code=404)
            try:
                return await handler(request)
            except ApiProblem as problem:
                return JSONResponse(problem.body(), status_code=problem.status)

        return guarded

    def routes(self) -> list[BaseRoute]:
        g = self._guard
        api = "/api/{team}"
        node = api + "/nodes/{node_id}"
        container = node + "/{prefix}/containers/{name}"
        deployment = api + "/deployments/{deployment_id}"
        return [
            Route("/api/health", self._health, methods=["GET"]),
            Route("/api/ca.pem", self._ca, methods=["GET"]),
            Route(api + "/nodes", g(self._list_nodes), methods=["GET"]),
            Route(api + "/nodes", g(self._create_node), methods=["POST"]),
            Route(node, g(self._get_node), methods=["GET"]),
            Route(node, g(self._update_node), methods=["PUT"]),
            Route(node, g(self._delete_node), methods=["DELETE"]),
            Route(node + "/script", g(self._generate_script), methods=["POST"]),
            Route(node + "/script", g(self._get_script, public=True), methods=["GET"]),
            Route(node + "/script", g(self._discard_script), methods=["DELETE"]),
            Route(node + "/token", g(self._revoke_token), methods=["DELETE"]),
            Route(node + "/update", g(self._update_agent), methods=["POST"]),
            Route(node + "/kick", g(self._kick), methods=["POST"]),
            Route(node + "/audit", g(self._node_audit), methods=["GET"]),
            Route(node + "/containers", g(self._list_all_containers), methods=["GET"]),
            Route(node + "/{prefix}/containers", g(self._list_containers), methods=["GET"]),
            Route(node + "/{prefix}/containers", g(self._delete_prefix), methods=["DELETE"]),
            Route(container, g(self._delete_container), methods=["DELETE"]),
            Route(container + "/start", g(self._container_op("start")), methods=["POST"]),
            Route(container + "/stop", g(self._container_op("stop")), methods=["POST"]),
            Route(container + "/restart", g(self._container_op("restart")), methods=["POST"]),
            Route(container + "/inspect", g(self._inspect), methods=["GET"]),
            Route(container + "/log", g(self._log), methods=["GET"]),
            Route(container + "/secrets", g(self._secrets), methods=["GET"]),
            Route(api + "/registries", g(self._list_registries), methods=["GET"]),
            Route(api + "/registries", g(self._create_registry), methods=["POST"]),
            Route(api + "/registries/{registry_id}", g(self._get_registry), methods=["GET"]),
            Route(api + "/registries/{registry_id}", g(self._update_registry), methods=["PUT"]),
            Route(api + "/registries/{registry_id}", g(self._delete_registry), methods=["DELETE"]),
            Route(api + "/deployments", g(self._list_deployments), methods=["GET"]),
            Route(api + "/deployments", g(self._create_deployment), methods=["POST"]),
            Route(deployment, g(self._get_deployment), methods=["GET"]),
            Route(deployment, g(self._delete_deployment), methods=["DELETE"]),
            Route(deployment + "/start", g(self._start_deployment), methods=["POST"]),
            Route(deployment + "/log", g(self._deployment_events), methods=["GET"]),
            Route(deployment + "/instances/{instance_id}", g(self._get_instance), methods=["GET"]),
            Route(deployment + "/instances/{instance_id}", g(self._patch_instance), methods=["PATCH"]),
            WebSocketRoute(api + "/ws/nodes/{node_id}/containers", self._ws_states),
            WebSocketRoute(api + "/ws/nodes/{node_id}/{prefix}/containers/{name}/log", self._ws_logs),
            WebSocketRoute(api + "/ws/deployments/{deployment_id}/events", self._ws_deployment),
        ]

    def app(self) -> Starlette:
        return Starlette(routes=self.routes())

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "agents": len(self._plane.connections.all())})

    async def _ca(self, request: Request) -> Response:
        ca_pem = self._plane.scripts.ca_pem
        if not ca_pem:
            return JSONResponse({"message": "The platform runs without TLS (--insecure)"}, status_code=404)
        return PlainTextResponse(ca_pem, media_type="application/x-pem-file")

    # -- nodes ---------------------------------------------------------------------------------

    async def _list_nodes(self, request: Request) -> Response:
        nodes = await self._plane.store.list_nodes()
        return JSONResponse([self._plane.node_view(n) for n in nodes])

    async def _create_node(self, request: Request) -> Response:
        payload = await _body(request)
        node = await self._plane.create_node(
            _text_field(payload, "name", required=True),
            _text_field(payload, "description"),
            _text_field(payload, "icon"),
        )
        return JSONResponse(self._plane.node_view(node, detailed=True), status_code=201)

    async def _get_node(self, request: Request) -> Response:
        node = await self._plane.get_node(request.path_params["node_id"])
        return JSONResponse(self._plane.node_view(node, detailed=True))

    async def _update_node(self, request: Request) -> Response:
        payload = await _body(request)
        changes = {"name": _text_field(payload, "name", required=True)}
        for key in ("description", "icon"):
            if key in payload:
                changes[key] = _text_field(payload, key)
        await self._plane.update_node(request.path_params["node_id"], changes)
        return _no_content()

    async def _delete_node(self, request: Request) -> Response:
        await self._plane.delete_node(request.path_params["node_id"])
        return _no_content()

    async def _generate_script(self, request: Request) -> Response:
        payload = await _body(request)
        view = await self._plane.generate_script(
            request.path_params["node_id"],
            _text_field(payload, "type", default="docker"),
            _text_field(payload, "scriptType", default="shell"),
            _text_field(payload, "rootPath"),
        )
        return JSONResponse(view, status_code=201)

    async def _get_script(self, request: Request) -> Response:
        text, media_type = await self._plane.render_script(request.path_params["node_id"])
        return PlainTextResponse(text, media_type=media_type)

    async def _discard_script(self, request: Request) -> Response:
        await self._plane.discard_script(request.path_params["node_id"])
        return _no_content()

    async def _revoke_token(self, request: Request) -> Response:
        await self._plane.revoke_token(request.path_params["node_id"])
        return _no_content()

    async def _update_agent(self, request: Request) -> Response:
        node_id = request.path_params["node_id"]
        await self._plane.update_agent(node_id, self._deployments.running_on(node_id))
        return _no_content()

    async def _kick(self, request: Request) -> Response:
        await self._plane.kick(request.path_params["node_id"])
        return _no_content()

    async def _node_audit(self, request: Request) -> Response:
        skip = _int_query(request, "skip", 0, maximum=10**9)
        take = _int_query(request, "take", 100)
        return JSONResponse(await self._plane.node_events(request.path_params["node_id"], skip, take))

    # -- containers ----------------------------------------------------------------------------

    async def _list_all_containers(self, request: Request) -> Response:
        prefix = request.query_params.get("prefix", "")
        return JSONResponse(await self._plane.list_containers(request.path_params["node_id"], prefix))

    async def _list_containers(self, request: Request) -> Response:
        params = request.path_params
        return JSONResponse(await self._plane.list_containers(params["node_id"], params["prefix"]))

    async def _delete_prefix(self, request: Request) -> Response:
        params = request.path_params
        await self._plane.delete_prefix(params["node_id"], params["prefix"])
        return _no_content()

    async def _delete_container(self, request: Request) -> Response:
        params = request.path_params
        await self._plane.delete_container(params["node_id"], params["prefix"], params["name"])
        return _no_content()

    def _container_op(self, operation: str) -> Handler:
        async def handler(request: Request) -> Response:
            params = request.path_params
            await self._plane.container_command(
                params["node_id"], params["prefix"], params["name"], operation
            )
            return _no_content()

        return handler

    async def _inspect(self, request: Request) -> Response:
        params = request.path_params
        return JSONResponse(
            await self._plane.inspect_container(params["node_id"], params["prefix"], params["name"])
        )

    async def _log(self, request: Request) -> Response:
        params = request.path_params
        take = _int_query(request, "take", 100)
        lines = await self._plane.container_logs(params["node_id"], params["prefix"], params["name"], take)
        return JSONResponse({"logs": lines})

    async def _secrets(self, request: Request) -> Response:
        params = request.path_params
        return JSONResponse(
            await self._plane.list_secrets(params["node_id"], params["prefix"], params["name"])
        )

    # -- registries ----------------------------------------------------------------------------

    async def _registry(self, request: Request) -> RegistryRecord:
        registry = await self._plane.store.get_registry(request.path_params["registry_id"])
        if registry is None:
            raise UnknownEntity("Registry not found")
        return registry

    @staticmethod
    def _registry_fields(payload: dict[str, Any], registry: RegistryRecord) -> None:
        registry.name = _text_field(payload, "name", required=True)
        url = _text_field(payload, "url", required=True).strip()
        if " " in url or url.startswith("/"):
            raise InvalidInput(
                "url", "must be a registry address such as 127.0.0.1:5000 or https://host/path"
            )
        registry.url = url
        registry.user = _text_field(payload, "user")
        registry.description = _text_field(payload, "description")
        if "password" in payload:
            registry.password = _text_field(payload, "password")
        if bool(registry.user) != bool(registry.password):
            raise InvalidInput("password" if registry.user else "user", "user and password go together")

    async def _list_registries(self, request: Request) -> Response:
        return JSONResponse([r.public() for r in await self._plane.store.list_registries()])

    async def _create_registry(self, request: Request) -> Response:
        payload = await _body(request)
        registry = RegistryRecord(id=str(uuid.uuid4()), name="", url="", created_at=time.time())
        self._registry_fields(payload, registry)
        await self._plane.store.put_registry(registry)
        return JSONResponse(registry.public(), status_code=201)

    async def _get_registry(self, request: Request) -> Response:
        return JSONResponse((await self._registry(request)).public())

    async def _update_registry(self, request: Request) -> Response:
        registry = await self._registry(request)
        self._registry_fields(await _body(request), registry)
        await self._plane.store.put_registry(registry)
        return _no_content()

    async def _delete_registry(self, request: Request) -> Response:
        registry = await self._registry(request)
        await self._plane.store.delete_registry(registry.id)
        return _no_content()

    # -- deployments ---------------------------------------------------------------------------

    async def _list_deployments(self, request: Request) -> Response:
        return JSONResponse(await self._deployments.list_all())

    async def _create_deployment(self, request: Request) -> Response:
        deployment = await self._deployments.create(await _body(request))
        node = await self._plane.store.get_node(deployment.node_id)
        return JSONResponse(self._deployments.view(deployment, node.name if node else ""), status_code=201)

    async def _get_deployment(self, request: Request) -> Response:
        deployment = await self._deployments.get(request.path_params["deployment_id"])
        node = await self._plane.store.get_node(deployment.node_id)
        return JSONResponse(self._deployments.view(deployment, node.name if node else ""))

    async def _delete_deployment(self, request: Request) -> Response:
        await self._deployments.delete(request.path_params["deployment_id"])
        return _no_content()

    async def _start_deployment(self, request: Request) -> Response:
        await self._deployments.start(request.path_params["deployment_id"])
        return _no_content()

    async def _deployment_events(self, request: Request) -> Response:
        return JSONResponse({"items": await self._deployments.events(request.path_params["deployment_id"])})

    async def _get_instance(self, request: Request) -> Response:
        deployment = await self._deployments.get(request.path_params["deployment_id"])
        instance_id = request.path_params["instance_id"]
        for instance in deployment.get_instances():
            if instance.id == instance_id:
                return JSONResponse(self._deployments.instance_view(instance))
        raise UnknownEntity("Instance not found")

    async def _patch_instance(self, request: Request) -> Response:
        params = request.path_params
        instance = await self._deployments.patch_instance(
            params["deployment_id"], params["instance_id"], await _body(request)
        )
        return JSONResponse(self._deployments.instance_view(instance))

    # -- WebSocket feeds -----------------------------------------------------------------------

    async def _ws_open(self, websocket: WebSocket) -> bool:
        """Checks the bearer and the team; refuses the handshake otherwise."""
        authorized = self._authorized(
            websocket.headers.get("authorization"), websocket.query_params.get("token")
        )
        if not authorized or websocket.path_params.get("team") != self._team:
            await websocket.close(code=WS_POLICY_VIOLATION)
            return False
        return True

    @staticmethod
    async def _ws_problem(websocket: WebSocket, problem: ApiProblem) -> None:
        await websocket.accept()
        await websocket.send_json({"type": "error", "status": problem.status, "message": problem.message})
        await websocket.close(code=4000 + problem.status)

    @staticmethod
    async def _relay(websocket: WebSocket, viewer: Viewer, skip_until: float | None = None) -> None:
        """Forwards the viewer's items until the feed ends or the client goes away."""

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

    async def _ws_states(self, websocket: WebSocket) -> None:
        if not await self._ws_open(websocket):
            return
        try:
            connection, feed, viewer = await self._plane.watch_states(
                websocket.path_params["node_id"], websocket.query_params.get("prefix", "")
            )
        except ApiProblem as problem:
            await self._ws_problem(websocket, problem)
            return
        try:
            await websocket.accept()
            await self._relay(websocket, viewer)
        finally:
            self._plane.unwatch_states(connection, feed, viewer)

    async def _ws_logs(self, websocket: WebSocket) -> None:
        if not await self._ws_open(websocket):
            return
        params = websocket.path_params
        try:
            tail = int(websocket.query_params.get("tail", "100"))
            if not 0 <= tail <= MAX_TAKE:
                raise ValueError
        except ValueError:
            await self._ws_problem(websocket, InvalidInput("tail", f"must be an integer 0..{MAX_TAKE}"))
            return
        try:
            connection, feed, viewer = await self._plane.watch_logs(
                params["node_id"], params["prefix"], params["name"], tail
            )
        except ApiProblem as problem:
            await self._ws_problem(websocket, problem)
            return
        try:
            await websocket.accept()
            await self._relay(websocket, viewer)
        finally:
            self._plane.unwatch_logs(connection, feed, viewer)

    async def _ws_deployment(self, websocket: WebSocket) -> None:
        if not await self._ws_open(websocket):
            return
        deployment_id = websocket.path_params["deployment_id"]
        try:
            feed, viewer, history = await self._deployments.watch(deployment_id)
        except ApiProblem as problem:
            await self._ws_problem(websocket, problem)
            return
        try:
            await websocket.accept()
            for event in history:
                await websocket.send_json(event)
            deployment = await self._deployments.get(deployment_id)
            await websocket.send_json({"type": "snapshot", "status": deployment.status})
            last = history[-1]["createdAt"] if history else None
            await self._relay(websocket, viewer, skip_until=last)
        except (WebSocketDisconnect, ApiProblem):
            pass
        finally:
            self._deployments.unwatch(deployment_id, feed, viewer)
