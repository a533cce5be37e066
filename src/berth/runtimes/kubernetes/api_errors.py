"""Kubernetes API errors translated into Berth's error tree at the boundary (§17, issue 5).

404 → NotFound, 409 → conflict, 422 → InvalidSpec naming the field, 403 → the missing RBAC
permission named (verb, resource, group, namespace), 5xx / 429 / connection errors → temporary.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from berth.errors import (
    InvalidSpec,
    NotFound,
    PermanentCommandError,
    RuntimeFailure,
    TemporaryCommandError,
)
from berth.runtimes.kubernetes.resources import Kind


@dataclass(frozen=True, slots=True)
class ApiStatus:
    """What the API server answered when it refused a request (a ``Status`` object)."""

    code: int
    reason: str
    message: str
    causes: tuple[tuple[str, str], ...] = ()  # (field, message)

    @classmethod
    def parse(cls, code: int, body: bytes | str | None) -> ApiStatus:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
        try:
            status: Any = json.loads(text) if text else {}
        except ValueError:
            status = {}
        if not isinstance(status, dict):
            status = {}
        details = status.get("details") or {}
        causes = tuple(
            (str(c.get("field", "")), str(c.get("message", "")))
            for c in (details.get("causes") or [])
            if isinstance(c, dict)
        )
        return cls(
            code=int(status.get("code") or code),
            reason=str(status.get("reason") or ""),
            message=str(status.get("message") or text[:300]),
            causes=causes,
        )


@dataclass(frozen=True, slots=True)
class Request:
    """The request an error belongs to, so that the message can name it."""

    verb: str  # RBAC verb: get, list, watch, create, patch, delete
    kind: Kind
    namespace: str | None = None
    name: str | None = None


class Forbidden(PermanentCommandError):
    """403: the agent's service account lacks a permission (named in the message)."""


class Gone(TemporaryCommandError):
    """410: the resource version is too old (a watch must re-list)."""


def permission_text(request: Request) -> str:
    group = request.kind.group or "core"
    where = f" in namespace {request.namespace}" if request.namespace and request.kind.namespaced else ""
    resource = request.kind.plural
    if request.name and "/" in request.name:  # a subresource such as pods/log
        resource = f"{resource}/{request.name.rsplit('/', 1)[1]}"
    return f"{request.verb} {resource} (API group {group}){where}"


def translate(status: ApiStatus, request: Request) -> RuntimeFailure:
    target = request.kind.describe(request.namespace, request.name)
    match status.code:
        case 404:
            return NotFound(f"{target} not found")
        case 409:
            return PermanentCommandError(f"conflict on {target}: {status.message}")
        case 422 | 400 if status.causes:
            field, problem = status.causes[0]
            return InvalidSpec(f"{request.kind.kind}.{field}" if field else request.kind.kind, problem)
        case 422 | 400:
            return InvalidSpec(request.kind.kind, status.message)
        case 403:
            return Forbidden(
                f"forbidden: the agent's service account lacks the permission to "
                f"{permission_text(request)} ({status.message})"
            )
        case 401:
            return PermanentCommandError("the API server refused the agent's credentials (401)")
        case 410:
            return Gone(f"{target}: resource version expired (410 Gone)")
        case code if code == 429 or code >= 500 or code == 0:
            return TemporaryCommandError(f"API server unavailable for {target}: {status.message}", 2.0)
        case _:
            return PermanentCommandError(f"{target}: {status.code} {status.reason} {status.message}".strip())


def unreachable(request: Request, err: BaseException) -> TemporaryCommandError:
    target = request.kind.describe(request.namespace, request.name)
    return TemporaryCommandError(f"API server unreachable ({type(err).__name__}) for {target}", 2.0)
