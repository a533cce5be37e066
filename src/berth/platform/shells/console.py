"""The web console: server-rendered pages (Jinja2) over the same services as the API, a little
JavaScript for actions and live feeds. Pages need a console session (see ``console_auth``); the
page's JavaScript calls the JSON API with the session cookie and the CSRF header, and opens the
WebSocket feeds with the cookie from this origin. Static files ship inside the package."""

from __future__ import annotations

import datetime
import json
import secrets
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any, Final

import jinja2
import structlog
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from berth.platform import views
from berth.platform.models import DeploymentRecord
from berth.platform.package_data import CONSOLE, package_folder
from berth.platform.problems import ApiProblem, InvalidInput, PayloadTooLarge
from berth.platform.services import Services
from berth.platform.shells.console_auth import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    SESSION_IDLE_S,
    ConsoleSession,
    ConsoleSessions,
    same,
)
from berth.platform.shells.console_stack import create_from_stack, parse_pasted, stack_from_form
from berth.platform.shells.requests import path_param

log = structlog.get_logger(__name__)

MAX_FORM_BYTES: Final = 1024 * 1024
MAX_FORM_FIELDS: Final = 50
NODE_ACTIVITY_ITEMS: Final = 15
STACK_SKELETON: Final = """node: {node}
prefix: my-app
instances:
  - image: nginx
    tag: "1.27"
    config:
      common: {{name: web, ports: [{{internal: 80, external: 8080}}]}}
      dagent: {{restartPolicy: UNLESS_STOPPED}}
"""
SECURITY_HEADERS: Final = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
STATUS_TONES: Final = {
    "connected": "ok",
    "successful": "ok",
    "running": "ok",
    "waiting": "busy",
    "exited": "idle",
    "in_progress": "busy",
    "updating": "busy",
    "preparing": "idle",
    "obsolete": "idle",
    "unreachable": "bad",
    "failed": "bad",
    "outdated": "warn",
    "downgraded": "warn",
}
Page = Callable[[Request, ConsoleSession], Awaitable[Response]]


def _when(timestamp: float | None) -> str:
    if not timestamp:
        return "\u2013"
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _shown(value: Any) -> str:
    """A configuration value as the user wrote it: text as is, anything else as JSON."""
    if value is None:
        return "\u2013"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _tone(status: str | None) -> str:
    return STATUS_TONES.get(status or "", "idle")


def _label(status: str | None) -> str:
    return (status or "unknown").replace("_", " ")


class Console:
    def __init__(self, services: Services, sessions: ConsoleSessions, https: bool = False) -> None:
        self._s = services
        self._sessions = sessions
        self._secure_cookie = https
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(package_folder(CONSOLE) / "templates"),
            autoescape=True,
        )
        self._env.filters.update(when=_when, tone=_tone, label=_label, shown=_shown)

    # -- plumbing ------------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        p = self._page
        return [
            Route("/", self._root, methods=["GET"]),
            Route("/login", self._login_form, methods=["GET"]),
            Route("/login", self._login, methods=["POST"]),
            Route("/logout", self._logout, methods=["POST"]),
            Route("/nodes", p(self._nodes), methods=["GET"]),
            Route("/nodes/{node_id}", p(self._node), methods=["GET"]),
            Route("/deployments", p(self._deployments), methods=["GET"]),
            Route("/deployments/new", p(self._new_deployment), methods=["GET", "POST"]),
            Route("/deployments/{deployment_id}", p(self._deployment), methods=["GET"]),
            Route("/deployments/{deployment_id}/diff/{other_id}", p(self._diff), methods=["GET"]),
            Route("/registries", p(self._registries), methods=["GET"]),
            Mount("/static", app=StaticFiles(directory=package_folder(CONSOLE) / "static"), name="static"),
        ]

    def _render(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("team", self._s.config.team)
        context.setdefault("section", "")
        html = self._env.get_template(name).render(**context)
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)

    def _page(self, page: Page) -> Callable[[Request], Awaitable[Response]]:
        async def guarded(request: Request) -> Response:
            found = self._sessions.current(request)
            if found is None:
                return RedirectResponse("/login", status_code=303)
            try:
                return await page(request, found[1])
            except ApiProblem as problem:
                return self._render("error.html", problem.status, csrf=found[1].csrf, message=problem.message)
            except Exception as err:  # a bug answers 500 and is logged, like the API
                log.error(
                    "console_unexpected_error", path=request.url.path, error=type(err).__name__, exc_info=err
                )
                return self._render("error.html", 500, csrf=found[1].csrf, message="Internal error")

        return guarded

    async def _form(self, request: Request) -> dict[str, str]:
        """An url-encoded form (the console sends no other kind), bounded in size and fields."""
        if (
            request.headers.get("content-type", "").split(";")[0].strip()
            != "application/x-www-form-urlencoded"
        ):
            raise InvalidInput("body", "must be a form")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                raise PayloadTooLarge("The form is too large")
        try:
            fields = urllib.parse.parse_qsl(
                body.decode(), keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_FORM_FIELDS
            )
        except (UnicodeDecodeError, ValueError):
            raise InvalidInput("body", "is not a valid form") from None
        return dict(fields)

    # -- sign-in -------------------------------------------------------------------------------

    async def _root(self, request: Request) -> Response:
        target = "/nodes" if self._sessions.current(request) else "/login"
        return RedirectResponse(target, status_code=303)

    def _login_page(self, status: int = 200, error: str = "") -> Response:
        login_csrf = secrets.token_urlsafe(32)
        response = self._render("login.html", status, login_csrf=login_csrf, error=error, csrf="")
        response.set_cookie(
            LOGIN_COOKIE,
            login_csrf,
            max_age=1800,
            httponly=True,
            samesite="strict",
            secure=self._secure_cookie,
        )
        return response

    async def _login_form(self, request: Request) -> Response:
        if self._sessions.current(request):
            return RedirectResponse("/nodes", status_code=303)
        return self._login_page()

    async def _login(self, request: Request) -> Response:
        try:
            form = await self._form(request)
        except ApiProblem:
            return self._login_page(400, "The sign-in form could not be read. Please try again.")
        if not same(form.get("csrf", ""), request.cookies.get(LOGIN_COOKIE, "")):
            return self._login_page(403, "The sign-in form expired. Please try again.")
        if self._sessions.throttled():
            log.warning("console_sign_in_throttled")
            return self._login_page(429, "Too many failed sign-ins. Wait a minute and try again.")
        signed_in = self._sessions.sign_in(form.get("token", ""))
        if signed_in is None:
            log.warning("console_sign_in_refused", client=request.client.host if request.client else "")
            return self._login_page(401, "That is not the platform's API token.")
        session_id, _ = signed_in
        log.info("console_signed_in")
        response = RedirectResponse("/nodes", status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            session_id,
            max_age=int(SESSION_IDLE_S),
            httponly=True,
            samesite="strict",
            secure=self._secure_cookie,
        )
        response.delete_cookie(LOGIN_COOKIE)
        return response

    async def _logout(self, request: Request) -> Response:
        """Needs the session's CSRF token: another site cannot sign the user out."""
        found = self._sessions.current(request)
        try:
            form = await self._form(request)
        except ApiProblem:
            form = {}
        if found is None:
            return RedirectResponse("/login", status_code=303)
        if not same(form.get("csrf", ""), found[1].csrf):
            return self._render("error.html", 403, csrf=found[1].csrf, message="The form expired; reload it.")
        self._sessions.sign_out(found[0])
        log.info("console_signed_out")
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="strict", secure=self._secure_cookie)
        return response

    # -- pages ---------------------------------------------------------------------------------

    def _node_view(self, record: Any, detailed: bool = False) -> dict[str, Any]:
        nodes = self._s.nodes
        return views.node(record, nodes.live_status(record.id), nodes.install_view(record), detailed=detailed)

    async def _deployment_views(self, records: list[DeploymentRecord]) -> list[dict[str, Any]]:
        names = {n.id: n.name for n in await self._s.nodes.all()}
        items = []
        for record in sorted(records, key=lambda r: r.created_at, reverse=True):
            instances, states = await self._s.deployments.instances(record.id)
            items.append(views.deployment(record, names.get(record.node_id, ""), instances, states))
        return items

    async def _nodes(self, request: Request, session: ConsoleSession) -> Response:
        nodes = [self._node_view(n) for n in await self._s.nodes.all()]
        return self._render("nodes.html", csrf=session.csrf, nodes=nodes, section="nodes")

    async def _node(self, request: Request, session: ConsoleSession) -> Response:
        record = await self._s.nodes.get(path_param(request, "node_id"))
        deployments = await self._deployment_views(await self._s.deployments.all(record.id))
        _, activity = await self._s.nodes.audit(record.id, 0, NODE_ACTIVITY_ITEMS)
        return self._render(
            "node.html",
            csrf=session.csrf,
            node=self._node_view(record, detailed=True),
            deployments=deployments,
            activity=activity,
            section="nodes",
        )

    async def _deployments(self, request: Request, session: ConsoleSession) -> Response:
        deployments = await self._deployment_views(await self._s.deployments.all())
        return self._render(
            "deployments.html", csrf=session.csrf, deployments=deployments, section="deployments"
        )

    async def _new_deployment(self, request: Request, session: ConsoleSession) -> Response:
        nodes = [self._node_view(n) for n in await self._s.nodes.all()]
        registries = [views.registry(r) for r in await self._s.registries.all()]
        form: dict[str, str] = {"mode": "yaml"}
        chosen = next((n for n in nodes if n["id"] == request.query_params.get("node")), None)
        if chosen is not None:  # from a node's page: its name is filled in
            form.update(node=chosen["id"], stack=STACK_SKELETON.format(node=chosen["name"]))
        error = ""
        if request.method == "POST":
            form = await self._form(request)
            if not same(form.get("csrf", ""), session.csrf):
                return self._render(
                    "error.html", 403, csrf=session.csrf, message="The form expired; reload it."
                )
            try:
                stack = (
                    parse_pasted(form.get("stack", ""))
                    if form.get("mode") == "yaml"
                    else stack_from_form(form)
                )
                deployment = await create_from_stack(self._s, stack)
                if form.get("start"):
                    try:
                        await self._s.deployments.start(deployment.id)
                    except ApiProblem:
                        return RedirectResponse(
                            f"/deployments/{deployment.id}?problem=start", status_code=303
                        )
                return RedirectResponse(f"/deployments/{deployment.id}", status_code=303)
            except ApiProblem as problem:
                error = f"{problem.field}: {problem.message}" if problem.field else problem.message
        return self._render(
            "deployment_new.html",
            status=400 if error else 200,
            csrf=session.csrf,
            nodes=nodes,
            registries=registries,
            form=form,
            error=error,
            section="deployments",
        )

    async def _deployment(self, request: Request, session: ConsoleSession) -> Response:
        record = await self._s.deployments.get(path_param(request, "deployment_id"))
        view = (await self._deployment_views([record]))[0]
        history = [
            d
            for d in await self._deployment_views(await self._s.deployments.all(record.node_id))
            if d["prefix"] == record.prefix
        ]
        events = await self._s.deployments.events(record.id)
        return self._render(
            "deployment.html",
            csrf=session.csrf,
            deployment=view,
            history=history,
            events=events,
            start_problem=request.query_params.get("problem") == "start",
            section="deployments",
        )

    async def _diff(self, request: Request, session: ConsoleSession) -> Response:
        base_id, other_id = path_param(request, "deployment_id"), path_param(request, "other_id")
        diff = await self._s.deployments.diff(base_id, other_id)
        return self._render("diff.html", csrf=session.csrf, diff=diff, section="deployments")

    async def _registries(self, request: Request, session: ConsoleSession) -> Response:
        registries = [views.registry(r) for r in await self._s.registries.all()]
        return self._render("registries.html", csrf=session.csrf, registries=registries, section="registries")
