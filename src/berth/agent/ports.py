"""What handlers need from the outside world, as protocols: the platform link (answers and
outbound streams, implemented over gRPC in ``session.py``) and the agent's lifecycle."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, Protocol, TypeVar

if TYPE_CHECKING:  # annotations only: the session imports this before its first Connect
    from berth.agent.commands import CallbackKind, DeploymentMessage
    from berth.model import ContainerRef, StateUpdate, Target

T_contra = TypeVar("T_contra", contravariant=True)

# The platform accepts messages up to 4 MiB; stay well below it.
MAX_MESSAGE_BYTES: Final = 4 * 1024 * 1024 - 64 * 1024


class OutboundStream(Protocol[T_contra]):
    """A client-streaming call to the platform. The platform ends it by answering (§2.2)."""

    async def send(self, item: T_contra) -> bool:
        """Send one message; ``False`` when the platform has completed the call (stop sending)."""
        ...

    async def close(self) -> None:
        """Half-close (at most once, later calls do nothing) and wait for the platform's answer."""
        ...

    @property
    def completed_by_platform(self) -> bool: ...

    async def wait_completed(self) -> None:
        """Return when the platform has completed the call (or the call failed)."""
        ...


class PlatformLink(Protocol):
    """The agent → platform direction of the protocol, in domain terms. Each call carries the
    token in use and the metadata the protocol requires."""

    async def secret_list(self, target: Target, public_key: str, keys: Sequence[str]) -> None: ...

    async def containers_deleted(self, target: Target | None) -> None: ...

    async def container_log(self, ref: ContainerRef, lines: Sequence[str]) -> None: ...

    async def container_inspect(self, ref: ContainerRef, data: str) -> None: ...

    async def command_error(
        self, kind: CallbackKind, target: Target | None, status: int, message: str
    ) -> None: ...

    async def token_replaced(self) -> None:
        """TokenReplaced, sent with the token in use (the old one)."""
        ...

    async def abort_update(self, error: str) -> None: ...

    async def open_deployment_status(self, deployment_id: str) -> OutboundStream[DeploymentMessage]: ...

    async def open_container_state(self, prefix: str) -> OutboundStream[StateUpdate]: ...

    async def open_log_stream(self, ref: ContainerRef) -> OutboundStream[str]: ...


class Lifecycle(Protocol):
    """Lets a handler end the agent (``close`` reasons)."""

    def request_exit(self, code: int, reason: str) -> None: ...
