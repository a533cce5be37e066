"""A fake dyrector.io platform for tests: the real ``agent.Agent`` service from our proto on a real
``grpc.aio`` server on 127.0.0.1, with the platform's acceptance rules (§3.7), token minting
(HS256 like the platform), the install handshake (§4.3) and a record of every call it receives.

Other test suites drive the agent through it:

    async with PlatformServer() as server:
        token = server.platform.issue_install_token()
        async with running_agent(agent_settings(tmp_path, token), runtime=MemoryRuntime()) as agent:
            await server.platform.wait_accepted()
            await server.platform.send(deploy_command(...))
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import jwt
from waiting import wait_event, wait_for, within

from berth.agent.app import Agent
from berth.proto import agent_pb2, agent_pb2_grpc, common_pb2
from berth.runtimes.memory import MemoryRuntime
from berth.settings import AgentSettings, ConnectionSettings

PLATFORM_SECRET = "fake-platform-jwt-secret-0123456789abcdef"


def mint_token(
    *,
    iss: str,
    sub: str,
    token_type: str = "install",
    nonce: str | None = None,
    iat: float | None = None,
    secret: str = PLATFORM_SECRET,
    version: str | None = "0.1.0",
    **extra: Any,
) -> str:
    """A token as the platform signs it: HS256, claims iat/sub/nonce/version/type/iss, no exp."""
    claims: dict[str, Any] = {
        "iat": int(time.time() if iat is None else iat),
        "sub": sub,
        "nonce": nonce or secrets.token_hex(128),
        "type": token_type,
        "iss": iss,
        **extra,
    }
    if version is not None:
        claims["version"] = version
    return jwt.encode(claims, secret, algorithm="HS256")


async def eventually(predicate: Callable[[], Any], within_s: float = 5.0, interval: float = 0.01) -> Any:
    """Poll a condition nothing notifies about (a file appearing, a counter in the agent)."""
    return await wait_for(predicate, within_s, "the condition to hold", interval_s=interval)


def _forbidden() -> str:
    return json.dumps({"message": "Forbidden resource", "details": {}})


@dataclass
class ConnectRecord:
    info: agent_pb2.AgentInfo
    token: str | None
    status: grpc.StatusCode
    at: float = field(default_factory=time.monotonic)
    ended: bool = False


@dataclass
class UnaryRecord:
    method: str
    metadata: dict[str, str]
    message: Any


@dataclass
class StreamRecord:
    method: str
    metadata: dict[str, str]
    messages: list[Any] = field(default_factory=list)
    half_closed_by_agent: bool = False
    completed_by_platform: bool = False
    finish: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def complete(self) -> None:
        """The platform ends the call (its Empty answer), e.g. the last viewer left."""
        self.finish.set()


class _Connection:
    def __init__(self, token: dict[str, Any]) -> None:
        self.claims = token
        self.queue: asyncio.Queue[agent_pb2.AgentCommand | None] = asyncio.Queue()


class FakePlatform(agent_pb2_grpc.AgentServicer):
    """One node (``node_id``) on a platform whose agent address is ``iss``."""

    def __init__(self, *, node_id: str | None = None, secret: str = PLATFORM_SECRET) -> None:
        self.iss = ""
        self.node_id = node_id or str(uuid.uuid4())
        self.secret = secret
        self.stored_nonce: str | None = None
        self.installer_token: str | None = None
        self.installer_expired = False
        self.pending_connection_token: str | None = None
        self.connects: list[ConnectRecord] = []
        self.unary: list[UnaryRecord] = []
        self.streams: list[StreamRecord] = []
        self.connect_status_override: Callable[[ConnectRecord], tuple[grpc.StatusCode, str] | None] | None = (
            None
        )
        self.complete_deployments_early = False
        self.fail_token_replaced = False
        self._connection: _Connection | None = None
        self._changed = asyncio.Condition()

    # -- tokens --------------------------------------------------------------------------------------

    def mint(self, token_type: str, **claims: Any) -> str:
        return mint_token(iss=self.iss, sub=self.node_id, token_type=token_type, secret=self.secret, **claims)

    def issue_install_token(self) -> str:
        """What the install script carries: an installer exists and the node holds no token."""
        self.installer_token = self.mint("install")
        self.stored_nonce = None
        return self.installer_token

    def issue_connection_token(self) -> str:
        """A node already registered with this token's nonce."""
        token = self.mint("connection")
        self.stored_nonce = self._claims(token)["nonce"]
        return token

    def _claims(self, token: str) -> dict[str, Any]:
        claims: dict[str, Any] = jwt.decode(token, self.secret, algorithms=["HS256"])
        return claims

    def _verify(self, metadata: Mapping[str, str]) -> tuple[grpc.StatusCode, str] | dict[str, Any]:
        token = metadata.get("dyo-node-token")
        if not token:
            return grpc.StatusCode.INVALID_ARGUMENT, "missing dyo-node-token"
        try:
            claims = self._claims(token)
        except jwt.PyJWTError:
            return grpc.StatusCode.UNKNOWN, _forbidden()
        if claims.get("iss") != self.iss:
            return grpc.StatusCode.UNKNOWN, _forbidden()
        return claims

    # -- waiting -------------------------------------------------------------------------------------

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[], Any], within_s: float = 5.0) -> Any:
        async with within(within_s, "the fake platform to see what the test expects"), self._changed:
            await self._changed.wait_for(predicate)
        return predicate()

    async def wait_accepted(self, count: int = 1, within_s: float = 5.0) -> ConnectRecord:
        accepted = lambda: [c for c in self.connects if c.status == grpc.StatusCode.OK]  # noqa: E731
        await self.wait_for(lambda: len(accepted()) >= count, within_s)
        return accepted()[count - 1]

    async def wait_unary(self, method: str, count: int = 1, within_s: float = 5.0) -> UnaryRecord:
        await self.wait_for(lambda: len(self.calls(method)) >= count, within_s)
        return self.calls(method)[count - 1]

    async def wait_stream(self, method: str, count: int = 1, within_s: float = 5.0) -> StreamRecord:
        await self.wait_for(lambda: len(self.streams_of(method)) >= count, within_s)
        return self.streams_of(method)[count - 1]

    def calls(self, method: str) -> list[UnaryRecord]:
        return [c for c in self.unary if c.method == method]

    def streams_of(self, method: str) -> list[StreamRecord]:
        return [s for s in self.streams if s.method == method]

    @property
    def connected(self) -> bool:
        return self._connection is not None

    # -- commands --------------------------------------------------------------------------------------

    async def send(self, command: agent_pb2.AgentCommand) -> None:
        await self.wait_for(lambda: self._connection is not None)
        assert self._connection is not None
        await self._connection.queue.put(command)

    async def end_stream(self) -> None:
        """Complete the command stream (as after ``close``, or a kick)."""
        if self._connection is not None:
            await self._connection.queue.put(None)

    # -- the service ------------------------------------------------------------------------------------

    def _decide(
        self, record: ConnectRecord, request: agent_pb2.AgentInfo
    ) -> tuple[grpc.StatusCode, str] | None:
        if self.connect_status_override is not None:
            override = self.connect_status_override(record)
            if override is not None:
                return override
        verified = self._verify({"dyo-node-token": record.token or ""})
        if isinstance(verified, tuple):
            return verified
        claims = verified
        if "version" not in claims:
            return grpc.StatusCode.INVALID_ARGUMENT, "missing version claim"
        if request.id != claims.get("sub"):
            return grpc.StatusCode.INVALID_ARGUMENT, "Node id mismatch"
        if claims["sub"] != self.node_id:
            return grpc.StatusCode.NOT_FOUND, "Node not found"
        if claims.get("type") == "install":
            return self._decide_install(record)
        if claims.get("type") == "connection":
            return self._decide_connection(claims)
        return grpc.StatusCode.UNAUTHENTICATED, "Invalid token type"

    def _decide_install(self, record: ConnectRecord) -> tuple[grpc.StatusCode, str] | None:
        if self.stored_nonce is not None or self.installer_token is None:
            return grpc.StatusCode.UNAUTHENTICATED, "No installer"
        if self.installer_expired:
            return grpc.StatusCode.FAILED_PRECONDITION, "Installer expired"
        if record.token != self.installer_token:
            return grpc.StatusCode.UNAUTHENTICATED, "Token mismatch"
        return None

    def _decide_connection(self, claims: dict[str, Any]) -> tuple[grpc.StatusCode, str] | None:
        if claims.get("nonce") != self.stored_nonce:
            return grpc.StatusCode.UNAUTHENTICATED, "Invalid token"
        if self._connection is not None:
            return grpc.StatusCode.ALREADY_EXISTS, "Node already connected"
        return None

    async def Connect(  # type: ignore[override]
        self, request: agent_pb2.AgentInfo, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[agent_pb2.AgentCommand]:
        metadata = dict(context.invocation_metadata() or ())
        record = ConnectRecord(info=request, token=metadata.get("dyo-node-token"), status=grpc.StatusCode.OK)
        refusal = self._decide(record, request)
        if refusal is not None:
            record.status = refusal[0]
            self.connects.append(record)
            await self._notify()
            await context.abort(refusal[0], refusal[1])
        claims = self._claims(record.token or "")
        connection = _Connection(claims)
        if claims.get("type") == "install":
            self.installer_token = None
            self.pending_connection_token = self.mint("connection")
            connection.queue.put_nowait(
                agent_pb2.AgentCommand(
                    replaceToken=agent_pb2.ReplaceTokenRequest(token=self.pending_connection_token)
                )
            )
        self._connection = connection
        self.connects.append(record)
        await self._notify()
        try:
            while True:
                command = await connection.queue.get()
                if command is None:
                    return
                yield command
        finally:
            record.ended = True
            if self._connection is connection:
                self._connection = None
            await self._notify()

    async def _record_unary(
        self, method: str, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        metadata = dict(context.invocation_metadata() or ())
        verified = self._verify(metadata)
        if isinstance(verified, tuple):
            await context.abort(verified[0], verified[1])
        self.unary.append(UnaryRecord(method, metadata, request))
        await self._notify()
        return common_pb2.Empty()

    async def TokenReplaced(self, request: common_pb2.Empty, context: Any) -> common_pb2.Empty:  # type: ignore[override]
        if self.fail_token_replaced:
            await context.abort(grpc.StatusCode.INTERNAL, "database unavailable")
        result = await self._record_unary("TokenReplaced", request, context)
        if self.pending_connection_token is not None:
            self.stored_nonce = self._claims(self.pending_connection_token)["nonce"]
            self.pending_connection_token = None
        return result  # type: ignore[no-any-return]

    async def CommandError(self, request: Any, context: Any) -> common_pb2.Empty:  # type: ignore[override]
        return await self._record_unary("CommandError", request, context)  # type: ignore[no-any-return]

    async def AbortUpdate(self, request: Any, context: Any) -> common_pb2.Empty:  # type: ignore[override]
        return await self._record_unary("AbortUpdate", request, context)  # type: ignore[no-any-return]

    async def SecretList(self, request: Any, context: Any) -> common_pb2.Empty:  # type: ignore[override]
        return await self._record_unary("SecretList", request, context)  # type: ignore[no-any-return]

    async def DeleteContainers(self, request: Any, context: Any) -> common_pb2.Empty:  # type: ignore[override]
        return await self._record_unary("DeleteContainers", request, context)  # type: ignore[no-any-return]

    async def ContainerLog(self, request: Any, context: Any) -> common_pb2.Empty:  # type: ignore[override]
        return await self._record_unary("ContainerLog", request, context)  # type: ignore[no-any-return]

    async def ContainerInspect(self, request: Any, context: Any) -> common_pb2.Empty:  # type: ignore[override]
        return await self._record_unary("ContainerInspect", request, context)  # type: ignore[no-any-return]

    async def _record_stream(self, method: str, request_iterator: Any, context: Any) -> common_pb2.Empty:
        metadata = dict(context.invocation_metadata() or ())
        verified = self._verify(metadata)
        if isinstance(verified, tuple):
            await context.abort(verified[0], verified[1])
        record = StreamRecord(method, metadata)
        self.streams.append(record)
        await self._notify()
        if method == "DeploymentStatus" and self.complete_deployments_early:
            record.completed_by_platform = True
            record.done.set()
            await self._notify()
            return common_pb2.Empty()

        async def collect() -> None:
            async for message in request_iterator:
                record.messages.append(message)
                await self._notify()
            record.half_closed_by_agent = True

        reader = asyncio.create_task(collect(), name=f"fake-platform-{method}")
        finisher = asyncio.create_task(record.finish.wait(), name=f"fake-platform-{method}-finish")
        try:
            await asyncio.wait({reader, finisher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, finisher):
                task.cancel()
            await asyncio.gather(reader, finisher, return_exceptions=True)
            # However the call ended: the agent may also cancel it (a stream replaced while it was
            # writing), which cancels this handler and never half-closes.
            record.completed_by_platform = record.finish.is_set() and not record.half_closed_by_agent
            record.done.set()
            await self._notify()
        return common_pb2.Empty()

    async def DeploymentStatus(self, request_iterator: Any, context: Any) -> common_pb2.Empty:  # type: ignore[override]
        return await self._record_stream("DeploymentStatus", request_iterator, context)

    async def ContainerState(self, request_iterator: Any, context: Any) -> common_pb2.Empty:  # type: ignore[override]
        return await self._record_stream("ContainerState", request_iterator, context)

    async def ContainerLogStream(self, request_iterator: Any, context: Any) -> common_pb2.Empty:  # type: ignore[override]
        return await self._record_stream("ContainerLogStream", request_iterator, context)


class PlatformServer:
    """A real ``grpc.aio`` server on 127.0.0.1 serving ``platform``; ``tls`` = (cert PEM, key PEM)
    makes it a TLS server whose ``iss`` is ``localhost:<port>``."""

    def __init__(
        self, platform: FakePlatform | None = None, *, tls: tuple[bytes, bytes] | None = None
    ) -> None:
        self.platform = platform or FakePlatform()
        self.tls = tls
        self.port = 0
        self._server: grpc.aio.Server | None = None

    @property
    def iss(self) -> str:
        host = "localhost" if self.tls else "127.0.0.1"
        return f"{host}:{self.port}"

    async def start(self) -> None:
        server = grpc.aio.server()
        agent_pb2_grpc.add_AgentServicer_to_server(self.platform, server)
        address = f"127.0.0.1:{self.port}"
        if self.tls is not None:
            credentials = grpc.ssl_server_credentials([(self.tls[1], self.tls[0])])
            self.port = server.add_secure_port(address, credentials)
        else:
            self.port = server.add_insecure_port(address)
        await server.start()
        self._server = server
        self.platform.iss = self.iss

    async def stop(self, grace: float | None = None) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def __aenter__(self) -> PlatformServer:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()


def agent_settings(
    data_dir: Path,
    token: str,
    *,
    allow_plaintext: bool = True,
    ca_file: Path | None = None,
    metrics_address: str = "",
    **connection: Any,
) -> AgentSettings:
    """Settings for an in-process agent with test timings (fast backoff, short grace)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    return AgentSettings(
        node_name="test-node",
        runtime="memory",
        data_dir=data_dir,
        health_socket=data_dir / "agenthealth.sock",
        metrics_address=metrics_address,
        shutdown_grace_s=2.0,
        connection=ConnectionSettings(
            grpc_token=token,
            allow_plaintext=allow_plaintext,
            ca_file=ca_file,
            version="0.15.4-berth.test",
            backoff_initial_s=connection.pop("backoff_initial_s", 0.05),
            backoff_max_s=connection.pop("backoff_max_s", 0.3),
            healthy_after_s=connection.pop("healthy_after_s", 60.0),
            **connection,
        ),
    )


@contextlib.asynccontextmanager
async def running_agent(settings: AgentSettings, **agent_options: Any) -> AsyncIterator[RunningAgent]:
    """Run an ``Agent`` in-process; on exit request shutdown and wait for it."""
    agent_options.setdefault("updater", None)
    agent_options.setdefault("accept_after_s", 0.2)
    agent = Agent(settings, **agent_options)
    task = asyncio.create_task(agent.run(), name="test-agent")
    running = RunningAgent(agent, task)
    try:
        yield running
    finally:
        if not task.done():
            agent.request_shutdown()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(task), timeout=10)


@dataclass
class RunningAgent:
    agent: Agent
    task: asyncio.Task[int]

    async def exit_code(self, within_s: float = 5.0) -> int:
        return await wait_event(asyncio.shield(self.task), within_s, "the agent to exit")


@dataclass
class Harness:
    """What the ``harness`` fixture of tests/integration/agent yields: a fake platform and an agent
    connected to it with a connection token, on the in-memory runtime."""

    server: PlatformServer
    platform: FakePlatform
    running: RunningAgent
    runtime: MemoryRuntime
    data_dir: Path
