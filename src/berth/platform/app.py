"""Composition root of ``berth platform serve``: data folder, store, TLS, services, then the two
shells (the agents' gRPC service and the HTTP API), started in that order and stopped in reverse.
Nothing else wires objects together.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

import grpc
import structlog
import uvicorn

from berth.errors import ConfigError
from berth.files import write_atomic
from berth.platform.config import PlatformConfig
from berth.platform.datadir import prepare_data_dir
from berth.platform.install_scripts import InstallScripts, find_templates_dir
from berth.platform.secrets import SecretBox
from berth.platform.services import Services
from berth.platform.services.containers import ContainerService
from berth.platform.services.deployments import DeploymentService
from berth.platform.services.nodes import NodeService
from berth.platform.services.notifications import NotificationService, WebhookSender, parse_webhook
from berth.platform.services.registries import RegistryService
from berth.platform.services.sessions import AgentSessions
from berth.platform.shells.agent_grpc import KEEPALIVE_OPTIONS, AgentService
from berth.platform.shells.console import Console
from berth.platform.shells.console_auth import ConsoleSessions
from berth.platform.shells.http_api import HttpApi
from berth.platform.store import JWT_SECRET_KEY, Store
from berth.platform.tls import ensure_server_tls
from berth.platform.tokens import TokenIssuer
from berth.proto import agent_pb2_grpc

log = structlog.get_logger(__name__)

API_TOKEN_FILE: Final = "api-token"
GRPC_STOP_GRACE_S: Final = 2.0


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected host:port, got {address!r}")
    return host.strip("[]"), int(port)


def _load_or_create_api_token(data_dir: Path) -> tuple[str, bool]:
    path = data_dir / API_TOKEN_FILE
    if path.is_file():
        path.chmod(0o600)
        return path.read_text().strip(), False
    token = secrets.token_urlsafe(32)
    write_atomic(path, token + "\n")
    return token, True


def _bind_http(address: str) -> socket.socket:
    host, port = split_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns Nagle off only on sockets whose proto says TCP, and with
    # Nagle on, every answer on a kept-alive connection waited for the client's delayed ACK (40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


@dataclass(frozen=True)
class Started:
    config: PlatformConfig  # with the bound ports filled in
    api_token: str
    first_start: bool
    ca_pem: bytes
    http_url: str


class PlatformServer:
    def __init__(self, config: PlatformConfig) -> None:
        self._config = config
        self._store: Store | None = None
        self._grpc: grpc.aio.Server | None = None
        self._http: uvicorn.Server | None = None
        self._http_task: asyncio.Task[None] | None = None
        self._sessions: AgentSessions | None = None
        self._notifications: WebhookSender | None = None

    async def start(self) -> Started:
        config = self._config
        data_dir = config.data_dir
        await asyncio.to_thread(prepare_data_dir, data_dir)
        box = await asyncio.to_thread(SecretBox.load_or_create, data_dir)
        self._store = store = await Store.open(data_dir / "platform.db", box)
        secret = await store.get_sealed_meta(JWT_SECRET_KEY)
        if secret is None:
            secret = secrets.token_hex(32)
            await store.set_sealed_meta(JWT_SECRET_KEY, secret)
        api_token, first_start = await asyncio.to_thread(_load_or_create_api_token, data_dir)

        server = grpc.aio.server(options=KEEPALIVE_OPTIONS)
        ca_pem = b""
        if config.insecure:
            grpc_port = server.add_insecure_port(config.grpc_listen)
        else:
            advertised_host, _ = split_address(config.advertise)
            tls = await asyncio.to_thread(ensure_server_tls, data_dir / "tls", advertised_host)
            ca_pem = tls.ca_pem
            credentials = grpc.ssl_server_credentials([(tls.key_pem, tls.cert_chain_pem)])
            grpc_port = server.add_secure_port(config.grpc_listen, credentials)
        _, advertise_port = split_address(config.advertise)
        if advertise_port == 0:
            config = replace(config, advertise=f"{config.advertise.rpartition(':')[0]}:{grpc_port}")
        _, listen_port = split_address(config.grpc_listen)
        if listen_port == 0:
            config = replace(config, grpc_listen=f"{config.grpc_listen.rpartition(':')[0]}:{grpc_port}")
        http_socket = _bind_http(config.http_listen)
        http_port = http_socket.getsockname()[1]
        config = replace(config, http_listen=f"{config.http_listen.rpartition(':')[0]}:{http_port}")
        self._config = config

        issuer = TokenIssuer(secret.encode(), config.advertise)
        scripts = InstallScripts(
            templates_dir=find_templates_dir(config.install_scripts_dir),
            base_url=config.base_url,
            team=config.team,
            advertise=config.advertise,
            ca_pem=ca_pem.decode(),
            insecure=config.insecure,
            image=config.agent_image,
        )
        self._sessions = sessions = AgentSessions(config, store, issuer)
        services = Services(
            config=config,
            sessions=sessions,
            nodes=NodeService(config, store, sessions, scripts),
            containers=ContainerService(sessions, config.callback_timeout_s),
            registries=RegistryService(store),
            deployments=DeploymentService(store, sessions, config.max_instances),
        )
        try:
            webhooks = [parse_webhook(spec) for spec in config.webhooks]
        except ValueError as err:
            raise ConfigError("--webhook", str(err)) from None
        self._notifications = WebhookSender(webhooks, config.webhook_attempts, config.webhook_backoff_s)
        NotificationService(store, sessions, services.deployments, self._notifications)
        self._notifications.start()
        await services.deployments.fail_interrupted()
        agent_pb2_grpc.add_AgentServicer_to_server(AgentService(services), server)
        await server.start()
        self._grpc = server

        console_sessions = ConsoleSessions(api_token)
        api = HttpApi(services, api_token, ca_pem.decode(), console_sessions)
        console = Console(services, console_sessions, https=config.base_url.startswith("https://"))
        uv_config = uvicorn.Config(
            api.app(console.routes()),
            ws="websockets-sansio",
            lifespan="off",
            log_level="warning",
            access_log=False,
        )
        self._http = uvicorn.Server(uv_config)
        self._http_task = asyncio.create_task(self._http.serve(sockets=[http_socket]), name="platform-http")
        while not self._http.started:
            if self._http_task.done():
                await self._http_task
                raise RuntimeError("the HTTP server stopped during start")
            await asyncio.sleep(0.02)
        log.info(
            "platform_started",
            grpc=config.grpc_listen,
            advertise=config.advertise,
            http=config.base_url,
            tls=not config.insecure,
            data_dir=str(data_dir),
        )
        return Started(
            config=config,
            api_token=api_token,
            first_start=first_start,
            ca_pem=ca_pem,
            http_url=config.base_url,
        )

    async def stop(self) -> None:
        """Stops intake (HTTP), completes every agent stream, then the gRPC server, then the store."""
        if self._http is not None and self._http_task is not None:
            self._http.should_exit = True
            await self._http_task
        if self._sessions is not None:
            self._sessions.close_all()
        if self._grpc is not None:
            await self._grpc.stop(GRPC_STOP_GRACE_S)
        if self._notifications is not None:
            await self._notifications.aclose()
        if self._store is not None:
            await self._store.close()
        log.info("platform_stopped")
