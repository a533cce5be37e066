"""Settings of ``berth platform serve``."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from berth.imageref import split_name_tag
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
    webhooks: tuple[str, ...] = ()  # "[generic|slack|discord=]URL" each
    webhook_attempts: int = 4  # deliveries per notification and webhook, then it is given up
    webhook_backoff_s: float = 1.0  # first retry delay; doubles, capped, jittered

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.http_listen}").rstrip("/")

    @property
    def agent_tag(self) -> str:
        return split_name_tag(self.agent_image)[1]


def _host(address: str) -> str:
    return address.rpartition(":")[0].strip("[]")


def _kind(host: str) -> str:
    """``loopback``, ``unspecified`` or ``other`` (a name other than localhost counts as other)."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return "loopback"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return "other"
    return "loopback" if ip.is_loopback else "unspecified" if ip.is_unspecified else "other"


def reachability_warnings(config: PlatformConfig) -> list[str]:
    """What a new user gets wrong on the way to a connected node, said at start rather than
    discovered as an agent retrying "connection refused" forever."""
    warnings = []
    advertise = _host(config.advertise)
    listen = _host(config.grpc_listen)
    if _kind(advertise) == "loopback":
        warnings.append(
            f"agents are told to dial {config.advertise}, a loopback address: only an agent on this "
            "machine's own network can reach it. The install script runs the agent container with "
            "host networking for such an address; an agent on another machine, or a container on "
            "Docker's bridge network, gets 'connection refused'. For remote nodes, advertise an "
            "address they can reach: --advertise <this machine's IP or name>:<port>."
        )
    elif _kind(advertise) == "unspecified":
        warnings.append(
            f"--advertise {config.advertise} is not an address anyone can dial: advertise this "
            "machine's IP address or name (agents connect to exactly what is advertised)."
        )
    elif _kind(listen) == "loopback":
        warnings.append(
            f"agents are told to dial {config.advertise}, but gRPC listens only on {config.grpc_listen}: "
            "remote agents will be refused. Listen on 0.0.0.0 or on the advertised address."
        )
    if (
        not config.public_url
        and _kind(_host(config.http_listen)) == "loopback"
        and _kind(advertise) != "loopback"
    ):
        warnings.append(
            f"install commands download their script from {config.base_url}, which only this machine "
            "can reach: pass --public-url with an address the nodes can reach (a reverse proxy in front "
            "of the HTTP listener), or copy the script by hand."
        )
    return warnings
