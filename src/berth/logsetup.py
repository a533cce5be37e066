"""Logging: structlog, JSON by default and console on a TTY, context bound per command.

Tokens, keys and secret values are never passed to a logger; ``redact`` is a last line of
defence for the field names that could carry one.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Final, TextIO

import structlog

_SENSITIVE: Final = frozenset({"token", "password", "secret", "private_key", "grpc_token"})
_LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in _SENSITIVE.intersection(event):
        event[key] = "***"
    return event


def configure_logging(log_format: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """``log_format``: ``json``, ``console`` or ``auto`` (console on a TTY, JSON otherwise)."""
    output = stream or sys.stderr
    use_console = log_format == "console" or (log_format == "auto" and output.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=output.isatty())
        if use_console
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=output),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(_LEVELS.get(level, logging.INFO), logging.WARNING), stream=output)
