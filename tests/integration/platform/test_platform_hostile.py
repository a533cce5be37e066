"""The platform's HTTP API under hostile input: whatever arrives, the answer is a 2xx or a 4xx that
names the field, a refused create stores nothing, and every list still answers afterwards."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kits.platform_harness import Harness

HOSTILE_TEXT = [
    "\ud800",  # a lone surrogate: not UTF-8 once decoded
    "a\x00b",
    "line\nbreak",
    "esc\x1b[31m",
    "rtl\u202eoverride",
    "x" * 5000,
]


def _json_body(value: Any) -> bytes:
    # ensure_ascii keeps lone surrogates as \ud800 escapes, as a hostile client would send them
    return json.dumps(value, ensure_ascii=True).encode()


async def _post(api: httpx.AsyncClient, path: str, value: Any) -> httpx.Response:
    return await api.post(path, content=_json_body(value), headers={"content-type": "application/json"})


async def _lists_answer(api: httpx.AsyncClient) -> None:
    for path in ("/nodes", "/registries", "/deployments"):
        response = await api.get(path)
        assert response.status_code == 200, (path, response.text)
        response.json()


async def test_hostile_strings_are_refused_and_nothing_is_stored(platform: Harness) -> None:
    api = platform.api
    for text in HOSTILE_TEXT:
        response = await _post(api, "/nodes", {"name": text})
        assert response.status_code == 400, (text[:20], response.text)
        assert response.json()["property"] == "name"
        response = await _post(api, "/registries", {"name": text, "url": "h:5000"})
        assert response.status_code == 400
    assert (await api.get("/nodes")).json() == []
    assert (await api.get("/registries")).json() == []
    await _lists_answer(api)


async def test_body_limits_answer_413_and_400(platform: Harness) -> None:
    api = platform.api
    huge = await _post(api, "/nodes", {"name": "n", "description": "x" * (2 * 1024 * 1024)})
    assert huge.status_code == 413, huge.text
    deep = b'{"name": "n", "description": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    nested = await api.post("/nodes", content=deep)
    assert nested.status_code == 400 and nested.json()["property"] == "body", nested.text
    medium: Any = "leaf"
    for _ in range(40):
        medium = {"a": medium}
    assert (await _post(api, "/nodes", {"name": "n", "x": medium})).status_code == 400
    assert (await api.post("/nodes", content=b"\xff\xfe not json")).status_code == 400
    assert (await api.post("/nodes", content=b"[1]")).status_code == 400
    assert (await _post(api, "/nodes", {"name": "n", "extra": 1})).json()["property"] == "extra"
    await _lists_answer(api)


async def test_deployment_fields_are_checked_as_the_agent_would(platform: Harness) -> None:
    api = platform.api
    node_id = await platform.create_node()

    def deployment(common: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {
            "nodeId": node_id,
            "prefix": "p",
            "instances": [{"image": "i", "config": {"common": common}}],
            **extra,
        }

    cases: list[tuple[dict[str, Any], str, str]] = [
        (deployment({"ports": [{"internal": 70000}]}), "instances[0].config.common", "ports[0].internal"),
        (deployment({"ports": [{"internal": 80, "external": -1}]}), "instances[0].config.common", "external"),
        (
            deployment({"volumes": [{"name": "../../etc", "path": "/x"}]}),
            "instances[0].config.common",
            "escapes",
        ),
        (
            deployment({"volumes": [{"name": "data", "path": "relative"}]}),
            "instances[0].config.common",
            "absolute",
        ),
        (deployment({"name": "Bad_Name"}), "instances[0].config.common", "RFC 1123"),
        (deployment({"environment": {"A": "x\x00y"}}), "instances[0].config.common", "U+0000"),
        (deployment({}, secrets={"BAD KEY": "v"}), "secrets", ""),
        (deployment({}, prefix="a" * 64), "prefix", ""),
        ({"nodeId": node_id, "prefix": "p", "instances": [{"image": "i\nj"}]}, "instances[0].image", ""),
        (
            {"nodeId": node_id, "prefix": "p", "instances": [{"image": "i", "tag": "$(x)"}]},
            "instances[0].tag",
            "",
        ),
    ]
    for body, field, words in cases:
        response = await _post(api, "/deployments", body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["property"].startswith(field), (field, response.json())
        assert words in response.json()["message"], (words, response.json())
    assert (await api.get("/deployments")).json() == []


@pytest.mark.parametrize("platform", [{"max_instances": 3}], indirect=True)
async def test_instances_per_deployment_are_bounded(platform: Harness) -> None:
    node_id = await platform.create_node()
    instances = [{"image": "i", "config": {"common": {"name": f"w{i}"}}} for i in range(4)]
    response = await _post(
        platform.api, "/deployments", {"nodeId": node_id, "prefix": "p", "instances": instances}
    )
    assert response.status_code == 400 and response.json()["property"] == "instances", response.text
    assert "at most 3" in response.json()["message"]


async def test_hostile_path_parameters(platform: Harness) -> None:
    api = platform.api
    for raw in ("%ED%A0%80", "%00", "..%2F..%2Fetc", "x" * 300, "%E2%80%AE"):
        for path in (
            f"/nodes/{raw}",
            f"/registries/{raw}",
            f"/deployments/{raw}",
            f"/nodes/n/{raw}/containers",
        ):
            response = await api.get(path)
            assert response.status_code in (400, 404), (path, response.status_code, response.text)
    await _lists_answer(api)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = st.sampled_from(
    [
        "name",
        "description",
        "icon",
        "url",
        "user",
        "password",
        "nodeId",
        "prefix",
        "instances",
        "secrets",
        "type",
        "scriptType",
        "rootPath",
        "image",
        "tag",
        "config",
        "registryId",
        "note",
    ]
)
BODIES = st.dictionaries(FIELDS, JSON_VALUES, max_size=6) | JSON_VALUES
ROUTES = st.sampled_from(
    [
        ("POST", "/nodes"),
        ("PUT", "/nodes/{node}"),
        ("POST", "/nodes/{node}/script"),
        ("POST", "/registries"),
        ("PUT", "/registries/{registry}"),
        ("POST", "/deployments"),
        ("PATCH", "/deployments/{deployment}/instances/{instance}"),
    ]
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=ROUTES, body=BODIES, segment=st.text(max_size=12))
async def test_any_json_gets_2xx_or_4xx_never_500(
    platform: Harness, route: tuple[str, str], body: Any, segment: str
) -> None:
    api = platform.api
    ids = getattr(platform, "_ids", None)
    if ids is None:
        node = await platform.create_node("fuzz-node")
        registry = (await _post(api, "/registries", {"name": "r", "url": "h:5000"})).json()["id"]
        created = await _post(
            api, "/deployments", {"nodeId": node, "prefix": "fz", "instances": [{"image": "busybox"}]}
        )
        deployment = created.json()
        ids = {
            "node": node,
            "registry": registry,
            "deployment": deployment["id"],
            "instance": deployment["instances"][0]["id"],
        }
        platform._ids = ids  # type: ignore[attr-defined]
    method, template = route
    path = template.format(**ids)
    if segment and segment.isprintable() and "/" not in segment and "?" not in segment and "#" not in segment:
        path = path.replace(ids["node"], segment, 1) if "{node}" in template and len(segment) % 2 else path
    response = await api.request(
        method, path, content=_json_body(body), headers={"content-type": "application/json"}
    )
    assert response.status_code < 500, (method, path, body, response.text)
    if response.status_code == 400:
        assert "property" in response.json()
    await _lists_answer(api)


async def test_a_root_path_the_script_cannot_carry_is_refused_at_generate(platform: Harness) -> None:
    node_id = await platform.create_node()
    for root_path, words in (("/srv/$(id)", "absolute path"), ("relative", "absolute path"), ("/etc", "")):
        response = await _post(
            platform.api, f"/nodes/{node_id}/script", {"type": "docker", "rootPath": root_path}
        )
        assert response.status_code == 400, (root_path, response.text)
        assert response.json()["property"] == "rootPath" and words in response.json()["message"]
    assert (await platform.api.get(f"/nodes/{node_id}")).json()["install"] is None
    ok = await _post(platform.api, f"/nodes/{node_id}/script", {"type": "docker", "rootPath": "/srv/edge"})
    assert ok.status_code == 201, ok.text
