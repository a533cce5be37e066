"""The HTTP API (JSON, crux-like paths under ``/api/{teamSlug}/...``): each route reads and checks
its input, calls one service, and answers with a view. Nothing else happens here.

Every route but the health check, the CA and the install-script download needs ``Authorization:
Bearer <api token>``. Problems become their status code with ``{"message", "property"}``: 400
names the failing field, 404 an unknown id, 409 a node that is not connected, 412 a node that is
updating or outdated, 413 a body over the size limit; anything unexpected is a logged 500 that
says nothing more.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Final

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from berth.platform import views
from berth.platform.models import (
    DeploymentCreate,
    DeploymentRecord,
    InstancePatch,
    NodeCreate,
    NodeRecord,
    NodeUpdate,
    RegistryBody,
    ScriptRequest,
)
from berth.platform.problems import ApiProblem, UnknownEntity
from berth.platform.services import Services
from berth.platform.services.containers import MAX_TAIL, Operation
from berth.platform.shells.console_auth import ConsoleSessions
from berth.platform.shells.requests import M, int_query, path_param, read_model
from berth.platform.shells.websockets import WebSocketFeeds

log = structlog.get_logger(__name__)

Handler = Callable[[Request], Awaitable[Response]]
MAX_TAKE: Final = MAX_TAIL


def _no_content() -> Response:
    return Response(status_code=204)


def _no_content_after(action: Callable[[str], Awaitable[object]], param: str) -> Handler:
    """A route that does one thing to the entity its path names and has nothing to answer."""

    async def handler(request: Request) -> Response:
        await action(path_param(request, param))
        return _no_content()

    return handler


def bearer_matches(header: str | None, api_token: str) -> bool:
    presented = header[7:].strip() if header and header.lower().startswith("bearer ") else ""
    return bool(presented) and hmac.compare_digest(presented.encode(), api_token.encode())


class HttpApi:
    def __init__(self, services: Services, api_token: str, ca_pem: str, sessions: ConsoleSessions) -> None:
        self._s = services
        self._api_token = api_token
        self._ca_pem = ca_pem
        self._team = services.config.team
        self._console_sessions = sessions
        self._feeds = WebSocketFeeds(services, api_token, sessions)

    async def _model(self, request: Request, model: type[M]) -> M:
        config = self._s.config
        return await read_model(request, model, config.max_body_bytes, config.max_json_depth)

    # -- plumbing ------------------------------------------------------------------------------

    def _guard(self, handler: Handler, *, public: bool = False) -> Handler:
        async def guarded(request: Request) -> Response:
            if not public and not self._authorized(request):
                return JSONResponse({"message": "Unauthorized"}, status_code=401)
            if request.path_params.get("team", self._team) != self._team:
                return JSONResponse({"message": "Team not found"}, status_code=404)
            try:
                return await handler(request)
            except ApiProblem as problem:
                return JSONResponse(problem.body(), status_code=problem.status)
            except Exception as err:  # the one broad catch: a bug answers 500 and is logged
                log.error(
                    "http_unexpected_error", path=request.url.path, error=type(err).__name__, exc_info=err
                )
                return JSONResponse({"message": "Internal error"}, status_code=500)

        return guarded

    def _authorized(self, request: Request) -> bool:
        """The bearer token, or the console's session cookie with its CSRF header."""
        if bearer_matches(request.headers.get("authorization"), self._api_token):
            return True
        return self._console_sessions.authorizes(request, request.method)

    @staticmethod
    async def _http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return JSONResponse({"message": str(exc.detail)}, status_code=exc.status_code)

    def _on(self, path: str, **handlers: Handler) -> list[BaseRoute]:
        """The guarded routes of one path, one per HTTP method (the keyword)."""
        return [Route(path, self._guard(handler), methods=[m.upper()]) for m, handler in handlers.items()]

    def routes(self) -> list[BaseRoute]:
        on, done, s = self._on, _no_content_after, self._s
        api = "/api/{team}"
        node = api + "/nodes/{node_id}"
        container = node + "/{prefix}/containers/{name}"
        registry = api + "/registries/{registry_id}"
        deployment = api + "/deployments/{deployment_id}"
        instance = deployment + "/instances/{instance_id}"
        return [
            Route("/api/health", self._health, methods=["GET"]),
            Route("/api/ca.pem", self._ca, methods=["GET"]),
            *on(api + "/nodes", get=self._list_nodes, post=self._create_node),
            *on(node, get=self._get_node, put=self._update_node, delete=done(s.nodes.delete, "node_id")),
            *on(node + "/script", post=self._generate_script, delete=done(s.nodes.discard_script, "node_id")),
            Route(node + "/script", self._guard(self._get_script, public=True), methods=["GET"]),
            *on(node + "/token", delete=done(s.nodes.revoke_token, "node_id")),
            *on(node + "/update", post=self._update_agent),
            *on(node + "/kick", post=done(s.nodes.kick, "node_id")),
            *on(node + "/audit", get=self._node_audit),
            *on(node + "/containers", get=self._list_all_containers),
            *on(node + "/{prefix}/containers", get=self._list_containers, delete=self._delete_prefix),
            *on(container, delete=self._delete_container),
            *on(container + "/start", post=self._container_op("start")),
            *on(container + "/stop", post=self._container_op("stop")),
            *on(container + "/restart", post=self._container_op("restart")),
            *on(container + "/inspect", get=self._inspect),
            *on(container + "/log", get=self._log),
            *on(container + "/secrets", get=self._secrets),
            *on(api + "/registries", get=self._list_registries, post=self._create_registry),
            *on(
                registry,
                get=self._get_registry,
                put=self._update_registry,
                delete=done(s.registries.delete, "registry_id"),
            ),
            *on(api + "/deployments", get=self._list_deployments, post=self._create_deployment),
            *on(deployment, get=self._get_deployment, delete=done(s.deployments.delete, "deployment_id")),
            *on(deployment + "/start", post=done(s.deployments.start, "deployment_id")),
            *on(deployment + "/log", get=self._deployment_events),
            *on(deployment + "/copy", post=self._copy_deployment),
            *on(deployment + "/redeploy", post=self._redeploy),
            *on(deployment + "/diff/{other_id}", get=self._diff_deployments),
            *on(node + "/deployments", get=self._node_deployments),
            *on(instance, get=self._get_instance, patch=self._patch_instance),
            WebSocketRoute(api + "/ws/nodes/{node_id}/containers", self._feeds.states),
            WebSocketRoute(api + "/ws/nodes/{node_id}/{prefix}/containers/{name}/log", self._feeds.logs),
            WebSocketRoute(api + "/ws/deployments/{deployment_id}/events", self._feeds.deployment),
        ]

    def app(self, extra_routes: list[BaseRoute] | None = None) -> Starlette:
        return Starlette(
            routes=self.routes() + (extra_routes or []),
            exception_handlers={HTTPException: self._http_error},
        )

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "agents": len(self._s.sessions.connections.all())})

    async def _ca(self, request: Request) -> Response:
        if not self._ca_pem:
            return JSONResponse({"message": "The platform runs without TLS (--insecure)"}, status_code=404)
        return PlainTextResponse(self._ca_pem, media_type="application/x-pem-file")

    # -- nodes ---------------------------------------------------------------------------------

    def _node_view(self, record: NodeRecord, *, detailed: bool = False) -> dict[str, object]:
        nodes = self._s.nodes
        return views.node(record, nodes.live_status(record.id), nodes.install_view(record), detailed=detailed)

    async def _list_nodes(self, request: Request) -> Response:
        return JSONResponse([self._node_view(n) for n in await self._s.nodes.all()])

    async def _create_node(self, request: Request) -> Response:
        node = await self._s.nodes.create(await self._model(request, NodeCreate))
        return JSONResponse(self._node_view(node, detailed=True), status_code=201)

    async def _get_node(self, request: Request) -> Response:
        node = await self._s.nodes.get(path_param(request, "node_id"))
        return JSONResponse(self._node_view(node, detailed=True))

    async def _update_node(self, request: Request) -> Response:
        node_id = path_param(request, "node_id")
        await self._s.nodes.update(node_id, await self._model(request, NodeUpdate))
        return _no_content()

    async def _generate_script(self, request: Request) -> Response:
        node_id = path_param(request, "node_id")
        view, token = await self._s.nodes.generate_script(node_id, await self._model(request, ScriptRequest))
        # the API caller is the administrator: hand over the token for agents started by hand
        return JSONResponse({**views.install(view), "installToken": token}, status_code=201)

    async def _get_script(self, request: Request) -> Response:
        text, media_type = await self._s.nodes.render_script(path_param(request, "node_id"))
        return PlainTextResponse(text, media_type=media_type)

    async def _update_agent(self, request: Request) -> Response:
        node_id = path_param(request, "node_id")
        await self._s.nodes.update_agent(node_id, self._s.deployments.running_on(node_id))
        return _no_content()

    async def _node_audit(self, request: Request) -> Response:
        skip = int_query(request, "skip", 0, maximum=10**9)
        take = int_query(request, "take", 100, maximum=MAX_TAKE)
        total, items = await self._s.nodes.audit(path_param(request, "node_id"), skip, take)
        return JSONResponse({"total": total, "items": items})

    # -- containers ----------------------------------------------------------------------------

    async def _list_all_containers(self, request: Request) -> Response:
        prefix = request.query_params.get("prefix", "")
        return JSONResponse(await self._s.containers.list_states(path_param(request, "node_id"), prefix))

    async def _list_containers(self, request: Request) -> Response:
        node_id, prefix = path_param(request, "node_id"), path_param(request, "prefix")
        return JSONResponse(await self._s.containers.list_states(node_id, prefix))

    async def _delete_prefix(self, request: Request) -> Response:
        await self._s.containers.delete_prefix(path_param(request, "node_id"), path_param(request, "prefix"))
        return _no_content()

    def _target(self, request: Request) -> tuple[str, str, str]:
        return path_param(request, "node_id"), path_param(request, "prefix"), path_param(request, "name")

    async def _delete_container(self, request: Request) -> Response:
        await self._s.containers.delete(*self._target(request))
        return _no_content()

    def _container_op(self, operation: Operation) -> Handler:
        async def handler(request: Request) -> Response:
            await self._s.containers.command(*self._target(request), operation)
            return _no_content()

        return handler

    async def _inspect(self, request: Request) -> Response:
        return JSONResponse(await self._s.containers.inspect(*self._target(request)))

    async def _log(self, request: Request) -> Response:
        take = int_query(request, "take", 100, maximum=MAX_TAKE)
        return JSONResponse({"logs": await self._s.containers.logs(*self._target(request), take)})

    async def _secrets(self, request: Request) -> Response:
        return JSONResponse(await self._s.containers.secrets(*self._target(request)))

    # -- registries ----------------------------------------------------------------------------

    async def _list_registries(self, request: Request) -> Response:
        return JSONResponse([views.registry(r) for r in await self._s.registries.all()])

    async def _create_registry(self, request: Request) -> Response:
        registry = await self._s.registries.create(await self._model(request, RegistryBody))
        return JSONResponse(views.registry(registry), status_code=201)

    async def _get_registry(self, request: Request) -> Response:
        return JSONResponse(views.registry(await self._s.registries.get(path_param(request, "registry_id"))))

    async def _update_registry(self, request: Request) -> Response:
        registry_id = path_param(request, "registry_id")
        await self._s.registries.get(registry_id)
        await self._s.registries.update(registry_id, await self._model(request, RegistryBody))
        return _no_content()

    # -- deployments ---------------------------------------------------------------------------

    async def _deployment_view(self, record: DeploymentRecord) -> dict[str, object]:
        node = await self._s.nodes.get(record.node_id) if record.node_id else None
        instances, states = await self._s.deployments.instances(record.id)
        return views.deployment(record, node.name if node else "", instances, states)

    async def _list_deployments(self, request: Request) -> Response:
        return JSONResponse(await self._deployment_list(None))

    async def _node_deployments(self, request: Request) -> Response:
        node = await self._s.nodes.get(path_param(request, "node_id"))
        return JSONResponse(await self._deployment_list(node.id))

    async def _deployment_list(self, node_id: str | None) -> list[dict[str, object]]:
        names = {n.id: n.name for n in await self._s.nodes.all()}
        items = []
        for record in await self._s.deployments.all(node_id):
            instances, states = await self._s.deployments.instances(record.id)
            items.append(views.deployment(record, names.get(record.node_id, ""), instances, states))
        return items

    async def _create_deployment(self, request: Request) -> Response:
        deployment = await self._s.deployments.create(await self._model(request, DeploymentCreate))
        return JSONResponse(await self._deployment_view(deployment), status_code=201)

    async def _get_deployment(self, request: Request) -> Response:
        deployment = await self._s.deployments.get(path_param(request, "deployment_id"))
        return JSONResponse(await self._deployment_view(deployment))

    async def _copy_deployment(self, request: Request) -> Response:
        copy = await self._s.deployments.copy(path_param(request, "deployment_id"))
        return JSONResponse(await self._deployment_view(copy), status_code=201)

    async def _redeploy(self, request: Request) -> Response:
        """The rollback path: a copy of the deployment, started at once."""
        source = await self._s.deployments.get(path_param(request, "deployment_id"))
        await self._s.sessions.ready_connection(source.node_id)  # refuse before copying
        copy = await self._s.deployments.copy(source.id)
        try:
            await self._s.deployments.start(copy.id)
        except ApiProblem:
            await self._s.deployments.delete(copy.id)
            raise
        return JSONResponse(
            await self._deployment_view(await self._s.deployments.get(copy.id)), status_code=201
        )

    async def _diff_deployments(self, request: Request) -> Response:
        base_id = path_param(request, "deployment_id")
        return JSONResponse(await self._s.deployments.diff(base_id, path_param(request, "other_id")))

    async def _deployment_events(self, request: Request) -> Response:
        return JSONResponse({"items": await self._s.deployments.events(path_param(request, "deployment_id"))})

    async def _get_instance(self, request: Request) -> Response:
        deployment_id = path_param(request, "deployment_id")
        instance_id = path_param(request, "instance_id")
        await self._s.deployments.get(deployment_id)
        instances, states = await self._s.deployments.instances(deployment_id)
        for instance in instances:
            if instance.id == instance_id:
                return JSONResponse(views.instance(instance, states.get(instance.id)))
        raise UnknownEntity("Instance not found")

    async def _patch_instance(self, request: Request) -> Response:
        deployment_id = path_param(request, "deployment_id")
        instance_id = path_param(request, "instance_id")
        await self._s.deployments.get(deployment_id)
        instance = await self._s.deployments.patch_instance(
            deployment_id, instance_id, await self._model(request, InstancePatch)
        )
        states = await self._s.deployments.instances(deployment_id)
        return JSONResponse(views.instance(instance, states[1].get(instance.id)))
