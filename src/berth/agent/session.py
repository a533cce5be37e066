"""The gRPC session with the platform: dial the token's ``iss`` (TLS unless plaintext is explicitly
allowed), send ``dyo-node-token`` on every call, keep one ``Connect`` open, hand each command to
the dispatcher, apply the refusal rules and reconnect with jittered backoff. Also the
``PlatformLink`` over gRPC: every answer and outbound stream the handlers use.
"""

from __future__ import annotations

import asyncio
import importlib.util
import ssl
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Final, Generic, TypeVar

import grpc
import grpc.aio
import structlog
from google.protobuf.message import Message

from berth.agent.health import HealthState
from berth.agent.metrics import AgentMetrics
from berth.agent.ports import MAX_MESSAGE_BYTES, OutboundStream
from berth.agent.tokens import RefusalOutcome, TokenKeeper
from berth.errors import InvalidSpec, PlatformUnavailable
from berth.proto import agent_pb2, agent_pb2_grpc, common_pb2
from berth.runtimes.common.backoff import Backoff, HealthyTimer
from berth.settings import KEEPALIVE_MIN_S, ConnectionSettings


def _loaded_on_first_use(name: str) -> ModuleType:
    """``name``, executed when one of its attributes is first read (``importlib.util.LazyLoader``;
    only ever read on the event loop's thread here)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.loader is not None
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


if TYPE_CHECKING:
    from berth.agent import codec
    from berth.agent.commands import CallbackKind, Command, DeploymentMessage
    from berth.model import ContainerRef, StateUpdate, Target
else:  # the command codec (and the command and model classes) is not needed before the first command
    codec = _loaded_on_first_use("berth.agent.codec")

log = structlog.get_logger("berth.agent.session")

T = TypeVar("T")

ANSWER_TIMEOUT_S: Final = 10.0
HALF_CLOSE_WAIT_S: Final = 10.0
REFUSAL_CODES: Final = frozenset(
    {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}
)
SYSTEM_CA_FALLBACKS: Final = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")
# Every reconnect delay is in [ceiling / 4, ceiling]: the floor bounds how often one agent tries
# (once capped, at most one attempt per BERTH_BACKOFF_MAX / 4), the rest of the range spreads a
# fleet that lost its platform at the same moment.
RECONNECT_JITTER: Final = 0.75
# gRPC core reads grpc.min_reconnect_backoff_ms as the shortest time it gives one connection
# attempt (TCP, TLS and HTTP/2 handshakes); a slow link must still fit.
CONNECT_TIMEOUT_S: Final = 4.0


@dataclass(frozen=True)
class AgentIdentity:
    """What goes into AgentInfo besides the node id."""

    version: str
    public_key: str
    container_name: str | None = None

    def agent_info(self, node_id: str) -> agent_pb2.AgentInfo:
        """``Connect``'s request (built here, not by the codec: the first Connect does not wait
        for the command codec's import)."""
        info = agent_pb2.AgentInfo(id=node_id, version=self.version, publicKey=self.public_key)
        if self.container_name is not None:
            info.containerName = self.container_name
        return info


def _system_ca_bundle() -> bytes:
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile, *SYSTEM_CA_FALLBACKS):
        if candidate and Path(candidate).is_file():
            return Path(candidate).read_bytes()
    return b""


def is_refusal(error: grpc.aio.AioRpcError) -> bool:
    """§3.7/§4.4, including the "Forbidden resource" UNKNOWN (bad signature / wrong iss, §17 #1)."""
    code = error.code()
    return code in REFUSAL_CODES or (
        code == grpc.StatusCode.UNKNOWN and "forbidden resource" in (error.details() or "").lower()
    )


def is_header_safe(value: str) -> bool:
    """Printable ASCII, as a gRPC metadata value must be."""
    return all(" " <= char <= "~" for char in value)


def _describe_error(error: grpc.aio.AioRpcError) -> str:
    details = (error.details() or "").strip()
    return f"{error.code().name}: {details}" if details else error.code().name


def reconnect_backoff(settings: ConnectionSettings) -> Backoff:
    """The session's reconnect policy: capped exponential backoff with a floored jitter (a
    BERTH_BACKOFF_MAX below the initial delay lowers that too)."""
    cap_s = settings.backoff_max_s
    return Backoff(min(settings.backoff_initial_s, cap_s), cap_s, jitter=RECONNECT_JITTER)


def reconnect_channel_options(settings: ConnectionSettings) -> list[tuple[str, int]]:
    """Keep gRPC's own reconnect backoff out of the way of ``reconnect_backoff``.

    The session opens a new channel after every failed connection, so the delays are the
    session's alone, provided that (1) the new channel does not inherit the old one's connection
    and its backoff state: gRPC shares connections of channels to the same target through a
    process-wide pool unless told not to (that inherited backoff, growing 1.6x per failure, was
    why reconnects took up to tens of seconds); (2) a channel never retries on its own sooner
    than the session would (its first and longest backoff are the session's cap)."""
    cap_ms = max(100, int(settings.backoff_max_s * 1000))
    return [
        ("grpc.use_local_subchannel_pool", 1),
        ("grpc.initial_reconnect_backoff_ms", cap_ms),
        ("grpc.max_reconnect_backoff_ms", cap_ms),
        ("grpc.min_reconnect_backoff_ms", int(CONNECT_TIMEOUT_S * 1000)),
    ]


class PlatformChannel:
    """One gRPC channel to the platform address of the token in use."""

    def __init__(self, settings: ConnectionSettings) -> None:
        self._settings = settings
        self._channel: grpc.aio.Channel | None = None
        self._key: tuple[str, str] | None = None
        self._trust: bytes | None = None
        self._closing: set[asyncio.Future[None]] = set()

    def _options(self, iss: str) -> list[tuple[str, int | str]]:
        keepalive_ms = int(max(self._settings.keepalive_s, KEEPALIVE_MIN_S) * 1000)
        options: list[tuple[str, int | str]] = [
            ("grpc.keepalive_time_ms", keepalive_ms),
            ("grpc.keepalive_timeout_ms", int(self._settings.keepalive_timeout_s * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
            ("grpc.max_receive_message_length", 4 * 1024 * 1024),
            *reconnect_channel_options(self._settings),
            ("grpc.enable_retries", 0),
        ]
        if self._settings.dial_override and not self._settings.allow_plaintext:
            options.append(("grpc.ssl_target_name_override", iss.rsplit(":", 1)[0]))
        return options

    def _credentials(self) -> grpc.ChannelCredentials:
        if self._trust is None:
            trust = _system_ca_bundle()
            if self._settings.ca_file is not None:
                trust += b"\n" + self._settings.ca_file.read_bytes()
            self._trust = trust
        return grpc.ssl_channel_credentials(root_certificates=self._trust or None)

    def get(self, iss: str) -> grpc.aio.Channel:
        target = self._settings.dial_override or iss
        key = (target, iss)
        if self._channel is not None and self._key == key:
            return self._channel
        self.discard()
        if self._settings.allow_plaintext:
            log.warning("platform_plaintext", target=target, reason="DEBUG=true or BERTH_INSECURE=true")
            self._channel = grpc.aio.insecure_channel(target, options=self._options(iss))
        else:
            self._channel = grpc.aio.secure_channel(target, self._credentials(), options=self._options(iss))
        self._key = key
        return self._channel

    def discard(self) -> None:
        """Forget the channel (a later ``get`` dials anew); ``aclose`` closes it."""
        if self._channel is not None:
            channel = self._channel
            self._channel = None
            self._key = None
            closing = asyncio.create_task(channel.close(None), name="grpc-channel-close")
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        self.discard()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


class ClientStream(Generic[T]):
    """A client-streaming call: ``send`` until the platform completes it, ``close`` once."""

    def __init__(
        self,
        call: grpc.aio.StreamUnaryCall[Message, common_pb2.Empty],
        encode: Callable[[T], Sequence[Message]],
        name: str,
    ) -> None:
        self._call = call
        self._encode = encode
        self._name = name
        self._half_closed = False
        self._done = asyncio.Event()
        call.add_done_callback(lambda _: self._done.set())

    @property
    def completed_by_platform(self) -> bool:
        return self._call.done() and not self._half_closed

    async def send(self, item: T) -> bool:
        if self._half_closed or self._call.done():
            return False
        try:
            for message in self._encode(item):
                await self._call.write(message)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError) as err:
            log.info("stream_send_stopped", stream=self._name, reason=type(err).__name__)
            return False
        return True

    async def close(self) -> None:
        if self._half_closed:
            return
        self._half_closed = True
        try:
            if not self._call.done():
                await self._call.done_writing()
            async with asyncio.timeout(HALF_CLOSE_WAIT_S):
                await self._call
        except TimeoutError:
            log.warning("stream_close_unanswered", stream=self._name)
            self._call.cancel()
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.CANCELLED:
                log.warning("stream_ended_with_error", stream=self._name, error=_describe_error(err))
        except (asyncio.InvalidStateError, grpc.aio.UsageError):
            pass

    async def wait_completed(self) -> None:
        await self._done.wait()


class GrpcPlatformLink:
    """``PlatformLink`` over gRPC; every call carries the token currently in use."""

    def __init__(self, channel: PlatformChannel, keeper: TokenKeeper) -> None:
        self._channel = channel
        self._keeper = keeper

    def _stub(self) -> agent_pb2_grpc.AgentAsyncStub:
        return agent_pb2_grpc.AgentStub(self._channel.get(self._keeper.current.iss))

    def _metadata(self, *extra: tuple[str, str]) -> tuple[tuple[str, str], ...]:
        for key, value in extra:
            if not is_header_safe(value):
                # gRPC refuses such metadata with an internal error type: say it plainly instead.
                raise InvalidSpec(key, "is not printable ASCII, so no answer can carry it")
        return (("dyo-node-token", self._keeper.current.raw), *extra)

    async def _unary(self, name: str, request: Message, metadata: tuple[tuple[str, str], ...]) -> None:
        method = getattr(self._stub(), name)
        try:
            await method(request, metadata=metadata, timeout=ANSWER_TIMEOUT_S)
        except grpc.aio.AioRpcError as err:
            raise PlatformUnavailable(f"{name} failed: {_describe_error(err)}") from err

    async def secret_list(self, target: Target, public_key: str, keys: Sequence[str]) -> None:
        await self._unary(
            "SecretList",
            codec.secret_list_to_proto(target, public_key, keys),
            self._metadata(*codec.container_metadata(target)),
        )

    async def containers_deleted(self, target: Target | None) -> None:
        await self._unary(
            "DeleteContainers", common_pb2.Empty(), self._metadata(*codec.container_metadata(target))
        )

    async def container_log(self, ref: ContainerRef, lines: Sequence[str]) -> None:
        await self._unary(
            "ContainerLog", codec.log_list_to_proto(lines), self._metadata(*codec.container_metadata(ref))
        )

    async def container_inspect(self, ref: ContainerRef, data: str) -> None:
        await self._unary(
            "ContainerInspect", codec.inspect_to_proto(data), self._metadata(*codec.container_metadata(ref))
        )

    async def command_error(
        self, kind: CallbackKind, target: Target | None, status: int, message: str
    ) -> None:
        await self._unary(
            "CommandError",
            codec.command_error_to_proto(kind, status, message),
            self._metadata(*codec.container_metadata(target)),
        )

    async def token_replaced(self) -> None:
        await self._unary("TokenReplaced", common_pb2.Empty(), self._metadata())

    async def abort_update(self, error: str) -> None:
        await self._unary("AbortUpdate", agent_pb2.AgentAbortUpdate(error=error), self._metadata())

    async def open_deployment_status(self, deployment_id: str) -> OutboundStream[DeploymentMessage]:
        call = self._stub().DeploymentStatus(
            None, metadata=self._metadata(("dyo-deployment-id", deployment_id))
        )
        return ClientStream(
            call,  # type: ignore[arg-type]
            lambda message: (codec.deployment_message_to_proto(message),),
            f"deployment:{deployment_id}",
        )

    async def open_container_state(self, prefix: str) -> OutboundStream[StateUpdate]:
        call = self._stub().ContainerState(None, metadata=self._metadata(("dyo-filter-prefix", prefix)))
        return ClientStream(
            call,  # type: ignore[arg-type]
            lambda update: codec.state_update_chunks(prefix, update, MAX_MESSAGE_BYTES),
            f"state:{prefix}",
        )

    async def open_log_stream(self, ref: ContainerRef) -> OutboundStream[str]:
        call = self._stub().ContainerLogStream(None, metadata=self._metadata(*codec.container_metadata(ref)))
        return ClientStream(call, lambda line: (codec.log_line_to_proto(line),), f"log:{ref.key}")  # type: ignore[arg-type]


class Session:
    """The connection loop. ``run`` returns an exit code only when the token situation says stop
    (§4.4); everything else reconnects. Cancel the task running it to end the session."""

    def __init__(
        self,
        settings: ConnectionSettings,
        keeper: TokenKeeper,
        identity: AgentIdentity,
        health: HealthState,
        *,
        metrics: AgentMetrics | None = None,
        accept_after_s: float = 3.0,
        backoff: Backoff | None = None,
    ) -> None:
        self._settings = settings
        self._keeper = keeper
        self._identity = identity
        self._health = health
        self._metrics = metrics
        self._accept_after_s = accept_after_s
        self.backoff = backoff or reconnect_backoff(settings)
        self.channel = PlatformChannel(settings)
        self.link = GrpcPlatformLink(self.channel, keeper)
        self.attempts = 0

    async def run(
        self,
        on_command: Callable[[Command], Awaitable[None]],
        on_new_session: Callable[[], None],
    ) -> int:
        try:
            while True:
                token = self._keeper.current
                if self.attempts and self._metrics is not None:
                    self._metrics.reconnects += 1
                self.attempts += 1
                on_new_session()
                healthy = HealthyTimer(self._settings.healthy_after_s)
                error = await self._connect_once(on_command, healthy)
                self._health.disconnected()
                if healthy.was_healthy():
                    self.backoff.reset()
                if error is not None and is_refusal(error):
                    exit_code = await self._refused(error)
                    if exit_code is not None:
                        return exit_code
                    continue
                self._log_end(token.is_install, error)
                if error is not None and error.code() == grpc.StatusCode.UNAVAILABLE:
                    self.channel.discard()
                delay = self.backoff.next_delay_s()
                log.info("platform_reconnect_scheduled", delay_s=round(delay, 3))
                await asyncio.sleep(delay)
        finally:
            self._health.disconnected()

    async def _refused(self, error: grpc.aio.AioRpcError) -> int | None:
        token = self._keeper.current
        if self._metrics is not None:
            self._metrics.token_refused(token.type or "unknown")
        outcome = await asyncio.to_thread(self._keeper.refused)  # the store may be an API
        log.error(
            "token_refused",
            token_type=token.type,
            status=error.code().name,
            detail=(error.details() or "")[:300],
            outcome=outcome.value,
        )
        match outcome:
            case RefusalOutcome.RETRY_WITH_FALLBACK:
                return None
            case RefusalOutcome.STOP_PRIMARY_REFUSED:
                return 0
            case RefusalOutcome.STOP_FALLBACK_REFUSED:
                return 1

    def _log_end(self, install_token: bool, error: grpc.aio.AioRpcError | None) -> None:
        if error is None:
            log.info("platform_stream_ended")
            return
        code = error.code()
        detail = (error.details() or "")[:300]
        if code == grpc.StatusCode.FAILED_PRECONDITION and install_token:
            log.error(
                "install_token_expired",
                status=code.name,
                detail=detail,
                hint="the install token has expired or was consumed; generate a new install script",
            )
        elif code == grpc.StatusCode.INVALID_ARGUMENT:
            log.error(
                "platform_rejected_request",
                status=code.name,
                detail=detail,
                hint="check the token and the node id",
            )
        elif "certificate" in detail.lower() or "ssl" in detail.lower() or "handshake" in detail.lower():
            log.error(
                "platform_tls_failed",
                status=code.name,
                detail=detail,
                hint="the platform's certificate is not trusted; set BERTH_CA_FILE to its CA bundle",
            )
        else:
            log.warning("platform_connect_failed", status=code.name, detail=detail)

    async def _connect_once(
        self, on_command: Callable[[Command], Awaitable[None]], healthy: HealthyTimer
    ) -> grpc.aio.AioRpcError | None:
        token = self._keeper.current
        stub = agent_pb2_grpc.AgentStub(self.channel.get(token.iss))
        info = self._identity.agent_info(token.sub)
        loop = asyncio.get_running_loop()

        def accepted() -> None:
            if not self._health.accepted:
                healthy.start()
                self._health.mark_accepted()
                log.info("session_accepted", node_id=token.sub, token_type=token.type)

        log.info(
            "platform_connecting", target=self._settings.dial_override or token.iss, token_type=token.type
        )
        call = stub.Connect(info, metadata=(("dyo-node-token", token.raw),))
        self._health.dialling()
        timer = loop.call_later(self._accept_after_s, accepted)
        try:
            async for message in call:
                accepted()
                try:
                    command = codec.command_from_proto(message)
                except Exception:
                    log.exception("command_undecodable")
                    continue
                await on_command(command)
        except grpc.aio.AioRpcError as err:
            return err
        finally:
            timer.cancel()
            if not call.done():
                call.cancel()
        return None
