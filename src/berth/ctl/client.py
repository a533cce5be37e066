"""An async client of the embedded platform's HTTP and WebSocket API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import websockets

from berth.errors import BerthError


class ApiError(BerthError):
    """The platform refused a request (``status`` 0: it could not be reached)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def read_token_file(data_dir: Path) -> str:
    return (data_dir / "api-token").read_text().strip()


class PlatformClient:
    def __init__(self, url: str, token: str, team: str = "default", timeout_s: float = 15.0) -> None:
        self.url = url.rstrip("/")
        self.team = team
        self._token = token
        self._http = httpx.AsyncClient(
            base_url=f"{self.url}/api/{team}",
            headers={"authorization": f"Bearer {token}"},
            timeout=timeout_s,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> PlatformClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as err:
            raise ApiError(0, f"cannot reach the platform at {self.url}: {err}") from None
        if response.status_code >= 400:
            try:
                message = str(response.json().get("message", response.text))
            except ValueError:
                message = response.text
            raise ApiError(response.status_code, message)
        if response.status_code == 204 or not response.content:
            return None
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text

    # -- nodes -----------------------------------------------------------------------------------

    async def nodes(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.request("GET", "/nodes")
        return result

    async def node(self, node_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", f"/nodes/{node_id}")
        return result

    async def resolve_node(self, ref: str) -> dict[str, Any]:
        """A node by id or by name."""
        for node in await self.nodes():
            if ref in (node["id"], node["name"]):
                return node
        raise ApiError(404, f"no node named or with id {ref!r}")

    async def create_node(self, name: str, description: str = "") -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "POST", "/nodes", json={"name": name, "description": description}
        )
        return result

    async def generate_script(
        self, node_id: str, node_type: str = "docker", script_type: str = "shell", root_path: str = ""
    ) -> dict[str, Any]:
        payload = {"type": node_type, "scriptType": script_type, "rootPath": root_path}
        result: dict[str, Any] = await self.request("POST", f"/nodes/{node_id}/script", json=payload)
        return result

    async def script(self, node_id: str) -> str:
        return str(await self.request("GET", f"/nodes/{node_id}/script"))

    # -- registries and deployments --------------------------------------------------------------

    async def registries(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.request("GET", "/registries")
        return result

    async def ensure_registry(self, spec: dict[str, Any]) -> str:
        """The id of the registry with ``spec['name']``, created or updated from ``spec``."""
        for registry in await self.registries():
            if registry["name"] == spec["name"]:
                await self.request("PUT", f"/registries/{registry['id']}", json=spec)
                return str(registry["id"])
        created = await self.request("POST", "/registries", json=spec)
        return str(created["id"])

    async def create_deployment(self, payload: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("POST", "/deployments", json=payload)
        return result

    async def deployments(self, node_id: str | None = None) -> list[dict[str, Any]]:
        path = f"/nodes/{node_id}/deployments" if node_id else "/deployments"
        result: list[dict[str, Any]] = await self.request("GET", path)
        return result

    async def resolve_deployment(self, ref: str) -> dict[str, Any]:
        """A deployment by id or by a unique start of its id (as ``deployments list`` shows it)."""
        matches = [d for d in await self.deployments() if str(d["id"]).startswith(ref)] if ref else []
        exact = [d for d in matches if d["id"] == ref]
        if exact or len(matches) == 1:
            return (exact or matches)[0]
        if matches:
            raise ApiError(400, f"{ref!r} starts {len(matches)} deployment ids: give more of it")
        raise ApiError(404, f"no deployment with id {ref!r}")

    async def redeploy(self, deployment_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("POST", f"/deployments/{deployment_id}/redeploy")
        return result

    async def diff(self, base_id: str, other_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", f"/deployments/{base_id}/diff/{other_id}")
        return result

    async def deployment_log(self, deployment_id: str) -> list[dict[str, Any]]:
        result = await self.request("GET", f"/deployments/{deployment_id}/log")
        return list(result["items"])

    async def start_deployment(self, deployment_id: str) -> None:
        await self.request("POST", f"/deployments/{deployment_id}/start")

    async def deployment(self, deployment_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", f"/deployments/{deployment_id}")
        return result

    # -- containers ------------------------------------------------------------------------------

    async def containers(self, node_id: str, prefix: str) -> list[dict[str, Any]]:
        path = f"/nodes/{node_id}/{prefix}/containers" if prefix else f"/nodes/{node_id}/containers"
        result: list[dict[str, Any]] = await self.request("GET", path)
        return result

    async def container_action(self, node_id: str, prefix: str, name: str, action: str) -> None:
        base = f"/nodes/{node_id}/{prefix}/containers/{name}"
        if action == "delete":
            await self.request("DELETE", base)
        else:
            await self.request("POST", f"{base}/{action}")

    async def inspect(self, node_id: str, prefix: str, name: str) -> Any:
        return await self.request("GET", f"/nodes/{node_id}/{prefix}/containers/{name}/inspect")

    async def delete_prefix(self, node_id: str, prefix: str) -> None:
        await self.request("DELETE", f"/nodes/{node_id}/{prefix}/containers")

    async def logs(self, node_id: str, prefix: str, name: str, take: int) -> list[str]:
        result = await self.request(
            "GET", f"/nodes/{node_id}/{prefix}/containers/{name}/log", params={"take": take}
        )
        return list(result["logs"])

    # -- feeds -----------------------------------------------------------------------------------

    async def feed(self, path: str) -> AsyncIterator[dict[str, Any]]:
        """Yields the JSON messages of a WebSocket feed until it ends; an error message raises."""
        url = self.url.replace("http", "ws", 1) + f"/api/{self.team}{path}"
        headers = {"authorization": f"Bearer {self._token}"}
        try:
            async with websockets.connect(url, additional_headers=headers, open_timeout=10) as ws:
                async for raw in ws:
                    message = json.loads(raw)
                    if message.get("type") == "error":
                        raise ApiError(int(message.get("status", 500)), str(message.get("message")))
                    yield message
                    if message.get("type") == "end" and "status" not in message:
                        return
        except websockets.InvalidStatus as err:
            raise ApiError(err.response.status_code, "the feed was refused (check the API token)") from None

    def follow_logs(self, node_id: str, prefix: str, name: str, tail: int) -> AsyncIterator[dict[str, Any]]:
        return self.feed(f"/ws/nodes/{node_id}/{prefix}/containers/{name}/log?tail={tail}")

    def deployment_events(self, deployment_id: str) -> AsyncIterator[dict[str, Any]]:
        return self.feed(f"/ws/deployments/{deployment_id}/events")

    def container_states(self, node_id: str, prefix: str) -> AsyncIterator[dict[str, Any]]:
        return self.feed(f"/ws/nodes/{node_id}/containers?prefix={prefix}")
