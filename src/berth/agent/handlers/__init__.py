"""Command handlers: they know the Runtime seam and the PlatformLink port, never gRPC."""

from __future__ import annotations

from dataclasses import dataclass

from berth.agent.handlers.callbacks import CallbackHandler
from berth.agent.handlers.deploy import DeployHandler
from berth.agent.handlers.lifecycle import LifecycleHandler
from berth.agent.handlers.streams import LogStreamHandler, StateWatchHandler


@dataclass(frozen=True)
class Handlers:
    deploy: DeployHandler
    state: StateWatchHandler
    log_stream: LogStreamHandler
    callbacks: CallbackHandler
    lifecycle: LifecycleHandler


__all__ = [
    "CallbackHandler",
    "DeployHandler",
    "Handlers",
    "LifecycleHandler",
    "LogStreamHandler",
    "StateWatchHandler",
]
