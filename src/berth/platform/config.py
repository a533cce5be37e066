"""Settings of ``berth platform serve``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from berth.settings import PROTOCOL_VERSION

DEFAULT_TEAM: Final = "default"
PLATFORM_VERSION: Final = PROTOCOL_VERSION  # the platform release whose protocol this one speaks


@dataclass(frozen=True)
class PlatformConfig:
    data_dir: Path
    grpc_listen: str = "0.0.0.0:5000"
    http_listen: str = "127.0.0.1:8000"
    advertise: str = "127.0.0.1:5000"  # host:port written into every JWT's iss; agents dial it
    insecure: bool = False  # plaintext gRPC (otherwise TLS with the platform's own CA)
    public_url: str = ""  # base URL of the HTTP API in install commands; default http://<http-listen>
    install_window_s: float = 600.0
    callback_timeout_s: float = 5.0
    update_window_s: float = 300.0
    agent_image: str = "berth/agent:0.1"
    install_scripts_dir: Path | None = None
    team: str = DEFAULT_TEAM
    max_body_bytes: int = 1024 * 1024  # a larger request body is answered 413
    max_json_depth: int = 32  # deeper JSON is answered 400
    max_instances: int = 500  # per deployment

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.http_listen}").rstrip("/")

    @property
    def agent_tag(self) -> str:
        _, sep, tag = self.agent_image.rpartition(":")
        return tag if sep and "/" not in tag else "latest"
