"""What a command's route says: where it runs (its lane), which handler serves it, which callback
answers its failure, which deploy waits it ends and how it is named in logs and metrics.

A route is served either by the runtime-backed handlers (``Serve``: the agent builds the runtime
and its SDK for the first such command) or by the life-cycle handler alone (``OnLifecycle``:
tokens, update, close), which exists from the start: a fresh install's ``replaceToken`` swaps
the token without building the runtime.

Every command kind declares its route once (``route()`` on each class in ``commands.py``); the
dispatcher reads nothing else about a kind. A class in the ``Command`` union without a ``route()``
fails type-checking where the dispatcher asks for it (``tests/unit/test_command_table.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from berth.model import ContainerRef, PrefixTarget, Target

if TYPE_CHECKING:
    from berth.agent.commands import CallbackKind
    from berth.agent.handlers import Handlers
    from berth.agent.handlers.lifecycle import LifecycleHandler


def target_key(target: Target | None) -> str:
    if target is None:
        return "none"
    if isinstance(target, PrefixTarget):
        return f"prefix:{target.prefix}"
    return f"container:{target.key}"


@dataclass(frozen=True, slots=True)
class Inline:
    """Runs in the receive loop before the next command is read (``replaceToken``, ``close``)."""


@dataclass(frozen=True, slots=True)
class Queued:
    """Runs after the earlier commands of the same lane: one lane per container or prefix."""

    key: str


@dataclass(frozen=True, slots=True)
class Stream:
    """A long-lived answer; a newer command with the same key replaces it."""

    key: str


@dataclass(frozen=True, slots=True)
class Ignored:
    """Logged and counted, never served."""

    reason: str


Lane = Inline | Queued | Stream | Ignored


@dataclass(frozen=True, slots=True)
class ErrorAnswer:
    """A failure is answered with ``CommandError`` on this callback (5 not found, 13 otherwise)."""

    kind: CallbackKind
    target: Target | None


@dataclass(frozen=True, slots=True)
class Supersede:
    """The deploy waits the command ends at once: all of them when ``prefix`` is ``None``, else
    those on ``prefix`` (only those sharing a workload in ``names``, when given)."""

    by: str
    prefix: str | None = None
    names: frozenset[str] | None = None

    @classmethod
    def container(cls, by: str, ref: ContainerRef) -> Supersede:
        return cls(f"{by} of {ref.key}", ref.prefix, frozenset({ref.name}))


Serve = Callable[["Handlers"], Awaitable[str]]
"""Runs the command on its runtime-backed handler; returns the outcome named in logs and metrics."""


@dataclass(frozen=True, slots=True)
class OnLifecycle:
    """Runs the command on the life-cycle handler, which needs no runtime; returns the outcome."""

    serve: Callable[[LifecycleHandler], Awaitable[str]]


async def not_served(_: Handlers) -> str:
    return "ignored"


@dataclass(frozen=True, slots=True)
class Route:
    """Everything the dispatcher needs to know about one command."""

    kind: str  # stable and low-cardinality: the metrics label
    lane: Lane
    serve: Serve | OnLifecycle
    context: Mapping[str, str] = field(default_factory=dict)  # bound to the command's log lines
    answer: ErrorAnswer | None = None  # None: a failure is only logged
    supersedes: Supersede | None = None

    @classmethod
    def behind(
        cls, kind: str, target: Target | None, serve: Serve, supersedes: Supersede | None = None
    ) -> Route:
        """Queued behind the earlier commands for ``target``; a failure is only logged."""
        if isinstance(target, ContainerRef):
            context = {"container": target.key}
        else:
            context = {"target": target_key(target)}
        return cls(kind, Queued(target_key(target)), serve, context, supersedes=supersedes)

    @classmethod
    def reply(
        cls, callback: CallbackKind, target: Target | None, serve: Serve, supersedes: Supersede | None = None
    ) -> Route:
        """A callback command: queued behind ``target`` and named after its callback, which also
        carries its ``CommandError``."""
        route = cls.behind(callback.name.lower(), target, serve, supersedes)
        return replace(route, answer=ErrorAnswer(callback, target))
