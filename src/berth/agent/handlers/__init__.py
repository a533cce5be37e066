"""Command handlers: they know the Runtime seam and the PlatformLink port, never gRPC."""

from __future__ import annotations

from dataclasses import dataclass

from berth.agent.handlers.callbacks import CallbackHandler
from berth.agent.handlers.deploy import DeployHandler
from berth.agent.handlers.lifecycle import LifecycleHandler
from berth.agent.handlers.streams import LogStreamHandler, StateWatchHandler
from berth.runtimes.waits import WaitBoard


@dataclass(frozen=True)
class Handlers:
    """The runtime-backed handlers, built with the runtime (the ``LifecycleHandler`` needs none
    and exists from the start)."""

    deploy: DeployHandler
    state: StateWatchHandler
    log_stream: LogStreamHandler
    callbacks: CallbackHandler
    waits: WaitBoard | None = None  # the runtime's deploy waits, which a newer command ends


__all__ = [
    "CallbackHandler",
    "DeployHandler",
    "Handlers",
    "LifecycleHandler",
    "LogStreamHandler",
    "StateWatchHandler",
]
