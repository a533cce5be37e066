"""The platform under test: a real server on 127.0.0.1 ports, an authenticated API client."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx

from berth.platform.app import PlatformServer, Started
from berth.platform.config import PlatformConfig

TEMPLATES = {
    "install-docker.sh.tmpl": "#!/bin/sh\nGRPC_TOKEN=@@sh:GRPC_TOKEN@@\nNAME=@@sh:NODE_NAME@@\n"
    "ADDRESS=@@sh:PLATFORM_ADDRESS@@\nINSECURE=@@sh:INSECURE@@\nIMAGE=@@sh:IMAGE@@\nDATA=@@sh:DATA_DIR@@\n"
    "CA=@@sh:CA_PEM@@\n",
    "install-docker.ps1.tmpl": "$env:GRPC_TOKEN=@@ps1:GRPC_TOKEN@@\n",
}


@dataclass
class Harness:
    server: PlatformServer
    started: Started
    api: httpx.AsyncClient
    data_dir: Path
    templates: Path

    @property
    def grpc_address(self) -> str:
        return self.started.config.advertise

    async def create_node(self, name: str = "node-a") -> str:
        response = await self.api.post("/nodes", json={"name": name})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def install_token(self, node_id: str) -> str:
        response = await self.api.post(
            f"/nodes/{node_id}/script", json={"type": "docker", "scriptType": "shell"}
        )
        assert response.status_code == 201, response.text
        script = await self.api.get(f"/nodes/{node_id}/script", headers={"authorization": ""})
        assert script.status_code == 200, script.text
        line = next(x for x in script.text.splitlines() if x.startswith("GRPC_TOKEN="))
        return line.split("'")[1]


def secret_deployment(
    node_id: str, registry_id: str, shared: str, own: str, *, prefix: str, image: str, name: str
) -> dict[str, object]:
    """A deployment body of one instance from a registry, with a shared secret and its own one."""
    return {
        "nodeId": node_id,
        "prefix": prefix,
        "secrets": {"SHARED": shared},
        "instances": [
            {
                "image": image,
                "registryId": registry_id,
                "config": {"common": {"name": name, "secrets": {"OWN": own}}},
            }
        ],
    }


def make_config(data_dir: Path, templates: Path, **overrides: object) -> PlatformConfig:
    values: dict[str, object] = {
        "data_dir": data_dir,
        "grpc_listen": "127.0.0.1:0",
        "http_listen": "127.0.0.1:0",
        "advertise": "127.0.0.1:0",
        "insecure": True,
        "install_scripts_dir": templates,
        "callback_timeout_s": 2.0,
    }
    values.update(overrides)
    return PlatformConfig(**values)  # type: ignore[arg-type]
