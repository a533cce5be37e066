"""The ``agent.Agent`` gRPC service (the platform side of the protocol): translates calls into
session and deployment operations and their refusals into gRPC statuses.

Every call carries ``dyo-node-token``: its signature and issuer are verified first (§3.3); the
answer calls must then belong to the node's live session. Refusals use §3.7's status codes with
a JSON message, as the real platform does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, Final, NoReturn

import grpc
import structlog

from berth.platform.services import Services
from berth.platform.services.connections import AgentConnection, Feed, container_key, prefix_key
from berth.platform.services.sessions import CallbackFailure, Refusal, state_item_to_dict
from berth.platform.tokens import Claims, TokenMalformed, TokenRejected
from berth.proto import agent_pb2, agent_pb2_grpc, common_pb2

log = structlog.get_logger(__name__)

EMPTY: Final = common_pb2.Empty()
KEEPALIVE_OPTIONS: Final = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 30_000),
    ("grpc.http2.min_time_between_pings_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    ("grpc.so_reuseport", 0),  # a port already taken fails the start instead of being shared
]
ERROR_KINDS: Final = ("listSecrets", "deleteContainers", "containerLog", "containerInspect")

Context = grpc.aio.ServicerContext[Any, Any]


def _metadata(context: Context) -> dict[str, str]:
    pairs = context.invocation_metadata() or ()
    return {str(k).lower(): v if isinstance(v, str) else v.decode() for k, v in pairs}


async def _abort(context: Context, code: grpc.StatusCode, message: str) -> NoReturn:
    await context.abort(code, json.dumps({"message": message, "details": {}}))
    raise AssertionError("abort returned")  # pragma: no cover - abort always raises


def _peer_address(context: Context, metadata: dict[str, str]) -> str:
    if metadata.get("x-real-ip"):
        return metadata["x-real-ip"]
    if metadata.get("x-forwarded-for"):
        return metadata["x-forwarded-for"].split(",")[0].strip()
    peer = context.peer() or ""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        host, _, _port = rest.rpartition(":")
        return host.strip("[]") or rest
    return peer


def _target_key(metadata: dict[str, str]) -> str:
    prefix = metadata.get("dyo-container-prefix", "")
    name = metadata.get("dyo-container-name", "")
    return container_key(prefix, name) if name else prefix_key(prefix)


async def _pump(feed: Feed, messages: AsyncIterator[Any], handle: Any) -> None:
    """Relays a client stream until the agent half-closes or the platform wants it over."""

    async def _read() -> None:
        async for message in messages:
            handle(message)

    reader = asyncio.create_task(_read(), name="platform-stream-reader")
    stopper = asyncio.create_task(feed.stop.wait(), name="platform-stream-stop")
    try:
        await asyncio.wait([reader, stopper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (reader, stopper):
            task.cancel()
        results = await asyncio.gather(reader, stopper, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception) and not isinstance(result, asyncio.CancelledError):
                log.info("agent_stream_failed", error=type(result).__name__)


class AgentService(agent_pb2_grpc.AgentServicer):
    def __init__(self, services: Services) -> None:
        self._sessions = services.sessions
        self._deployments = services.deployments

    async def _claims(self, context: Context, metadata: dict[str, str]) -> Claims:
        token = metadata.get("dyo-node-token", "")
        if not token:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "Missing dyo-node-token")
        try:
            return self._sessions.issuer.verify(token)
        except TokenRejected:
            await _abort(context, grpc.StatusCode.UNKNOWN, "Forbidden resource")
        except TokenMalformed as err:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(err))

    async def _session(self, context: Context) -> tuple[AgentConnection, dict[str, str]]:
        metadata = _metadata(context)
        claims = await self._claims(context, metadata)
        connection = self._sessions.connection_for_answer(claims)
        if connection is None:
            await _abort(context, grpc.StatusCode.UNAUTHENTICATED, "No live session for this token")
        return connection, metadata

    async def Connect(
        self, request: agent_pb2.AgentInfo, context: Context
    ) -> AsyncIterator[agent_pb2.AgentCommand]:
        metadata = _metadata(context)
        claims = await self._claims(context, metadata)
        if request.id != claims.sub:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "Node id mismatch")
        try:
            connection = await self._sessions.accept(
                claims, metadata["dyo-node-token"], request, _peer_address(context, metadata)
            )
        except Refusal as refusal:
            log.info("agent_refused", node_id=claims.sub, code=refusal.code, reason=refusal.message)
            await _abort(context, grpc.StatusCode[refusal.code], refusal.message)
        try:
            await context.send_initial_metadata(())  # the agent sees the acceptance at once
            while True:
                command = await connection.commands.get()
                if command is None:
                    return
                yield command
        finally:
            await asyncio.shield(self._sessions.disconnected(connection))

    async def CommandError(self, request: agent_pb2.AgentCommandError, context: Context) -> common_pb2.Empty:
        connection, metadata = await self._session(context)
        kind = request.WhichOneof("command")
        if kind in ERROR_KINDS:
            error: agent_pb2.AgentError = getattr(request, kind)
            self._sessions.resolve(
                connection,
                kind,
                _target_key(metadata),
                CallbackFailure(status=error.status, error=error.error),
            )
        return EMPTY

    async def AbortUpdate(self, request: agent_pb2.AgentAbortUpdate, context: Context) -> common_pb2.Empty:
        connection, _ = await self._session(context)
        await self._sessions.abort_update(connection, request.error)
        return EMPTY

    async def TokenReplaced(self, request: common_pb2.Empty, context: Context) -> common_pb2.Empty:
        connection, _ = await self._session(context)
        await self._sessions.token_replaced(connection)
        return EMPTY

    async def DeploymentStatus(
        self, request_iterator: AsyncIterator[common_pb2.DeploymentStatusMessage], context: Context
    ) -> common_pb2.Empty:
        connection, metadata = await self._session(context)
        deployment_id = metadata.get("dyo-deployment-id", "")
        if not deployment_id:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "Missing dyo-deployment-id")
        run = self._deployments.accept_stream(deployment_id, connection.node_id)
        if run is None:
            return EMPTY  # unknown deployment: complete at once, the agent stops sending
        await self._deployments.consume(run, request_iterator)
        return EMPTY

    async def ContainerState(
        self, request_iterator: AsyncIterator[common_pb2.ContainerStateListMessage], context: Context
    ) -> common_pb2.Empty:
        connection, metadata = await self._session(context)
        if "dyo-filter-prefix" not in metadata:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "Missing dyo-filter-prefix")
        prefix = metadata["dyo-filter-prefix"]
        feed = connection.state_feeds.get(prefix)
        if feed is None or feed.attached.is_set():
            await _abort(
                context, grpc.StatusCode.FAILED_PRECONDITION, "No container state watcher for this prefix"
            )
        feed.attached.set()
        try:
            await _pump(
                feed,
                request_iterator,
                lambda message: feed.apply([state_item_to_dict(item) for item in message.data]),
            )
        finally:
            if connection.state_feeds.get(prefix) is feed:
                del connection.state_feeds[prefix]
            feed.end()
        return EMPTY

    async def ContainerLogStream(
        self, request_iterator: AsyncIterator[common_pb2.ContainerLogMessage], context: Context
    ) -> common_pb2.Empty:
        connection, metadata = await self._session(context)
        key = _target_key(metadata)
        feed = connection.log_feeds.get(key)
        if feed is None or feed.attached.is_set():
            return EMPTY  # nobody watches: complete the call so the agent stops following
        feed.attached.set()
        try:
            await _pump(
                feed, request_iterator, lambda message: feed.publish({"type": "log", "line": message.log})
            )
        finally:
            if connection.log_feeds.get(key) is feed:
                del connection.log_feeds[key]
            feed.end()
        return EMPTY

    async def SecretList(self, request: common_pb2.ListSecretsResponse, context: Context) -> common_pb2.Empty:
        connection, metadata = await self._session(context)
        result = {"publicKey": request.publicKey, "keys": list(request.keys)}
        self._sessions.resolve(connection, "listSecrets", _target_key(metadata), result)
        return EMPTY

    async def DeleteContainers(self, request: common_pb2.Empty, context: Context) -> common_pb2.Empty:
        connection, metadata = await self._session(context)
        self._sessions.resolve(connection, "deleteContainers", _target_key(metadata), None)
        return EMPTY

    async def ContainerLog(
        self, request: common_pb2.ContainerLogListResponse, context: Context
    ) -> common_pb2.Empty:
        connection, metadata = await self._session(context)
        self._sessions.resolve(connection, "containerLog", _target_key(metadata), list(request.logs))
        return EMPTY

    async def ContainerInspect(
        self, request: common_pb2.ContainerInspectResponse, context: Context
    ) -> common_pb2.Empty:
        connection, metadata = await self._session(context)
        self._sessions.resolve(connection, "containerInspect", _target_key(metadata), request.data)
        return EMPTY
