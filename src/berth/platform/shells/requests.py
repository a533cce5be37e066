"""Reading a request at the edge: a bounded body, bounded JSON nesting, a typed model; every
violation becomes one problem that names the field."""

from __future__ import annotations

import json
from typing import Any, Final, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import HTTPConnection, Request

from berth import names
from berth.platform.problems import InvalidInput, PayloadTooLarge

M = TypeVar("M", bound=BaseModel)
MAX_PATH_PARAM: Final = 200
MAX_FIELD_NAME: Final = 200


def _depth(value: Any, limit: int) -> bool:
    """True when ``value`` nests deeper than ``limit`` (iterative: no recursion on hostile input)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


async def read_json(request: Request, max_bytes: int, max_depth: int) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"The request body is larger than {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"The request body is larger than {max_bytes} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    try:
        payload = json.loads(raw)
    except RecursionError:
        raise InvalidInput("body", f"nests deeper than {max_depth} levels") from None
    except ValueError:
        raise InvalidInput("body", "is not valid JSON (UTF-8)") from None
    if _depth(payload, max_depth):
        raise InvalidInput("body", f"nests deeper than {max_depth} levels")
    return payload


def field_path(loc: tuple[int | str, ...]) -> str:
    """``("instances", 0, "config", "common")`` -> ``instances[0].config.common``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return names.repair_text(path or "body")[:MAX_FIELD_NAME]


def parse_model(model: type[M], payload: Any) -> M:
    if not isinstance(payload, dict):
        raise InvalidInput("body", "must be a JSON object")
    try:
        return model.model_validate(payload)
    except ValidationError as err:
        first = err.errors(include_url=False, include_input=False)[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        raise InvalidInput(field_path(tuple(first["loc"])), message) from None


async def read_model(request: Request, model: type[M], max_bytes: int, max_depth: int) -> M:
    return parse_model(model, await read_json(request, max_bytes, max_depth))


def path_param(connection: HTTPConnection, key: str) -> str:
    value = str(connection.path_params[key])
    problem = names.text_problem(value)
    if problem or len(value) > MAX_PATH_PARAM:
        raise InvalidInput(key, problem or f"must be at most {MAX_PATH_PARAM} characters")
    return value


def int_query(connection: HTTPConnection, key: str, default: int, maximum: int) -> int:
    raw = connection.query_params.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(key, "must be an integer") from None
    if not 0 <= value <= maximum:
        raise InvalidInput(key, f"must be between 0 and {maximum}")
    return value
