"""Waits a deployment can be pulled out of.

A deploy that has applied its changes and is only waiting (for a rollout, for a health check)
must never hold up the operator: a newer command for the same workload or prefix (a delete, a
stop, a new deploy) or a shutdown supersedes the wait at once. The deployment then fails with
"superseded by …", and the newer command runs immediately.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

import structlog

from berth.errors import PermanentCommandError

log = structlog.get_logger(__name__)

T = TypeVar("T")


class Superseded(PermanentCommandError):
    """A newer command took over while the deployment was waiting."""


@dataclass(eq=False)
class _Wait:
    prefix: str
    names: frozenset[str]
    superseded: asyncio.Event = field(default_factory=asyncio.Event)
    by: str = ""


class WaitBoard:
    """Who is waiting, on which workloads; ``supersede`` ends the matching waits."""

    def __init__(self) -> None:
        self._waits: set[_Wait] = set()

    async def run(self, prefix: str, names: frozenset[str], waiting: Awaitable[T]) -> T:
        """Await ``waiting`` unless superseded first: then cancel it and raise ``Superseded``."""
        entry = _Wait(prefix, names)
        self._waits.add(entry)
        work = asyncio.ensure_future(waiting)
        watch = asyncio.create_task(entry.superseded.wait(), name=f"superseded-watch:{prefix}")
        try:
            await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
            if work.done():
                return work.result()
            raise Superseded(f"superseded by {entry.by}")
        finally:
            self._waits.discard(entry)
            for pending in (work, watch):
                pending.cancel()
            await asyncio.gather(work, watch, return_exceptions=True)

    def supersede(self, prefix: str, names: frozenset[str] | None, by: str) -> int:
        """End the waits on ``prefix`` (only those sharing a workload in ``names``, when given);
        returns how many were ended."""
        ended = 0
        for entry in list(self._waits):
            if entry.superseded.is_set() or entry.prefix != prefix:
                continue
            if names is not None and not entry.names & names:
                continue
            entry.by = by
            entry.superseded.set()
            ended += 1
        if ended:
            log.info("deploy_wait_superseded", prefix=prefix, by=by, waits=ended)
        return ended

    def supersede_all(self, by: str) -> int:
        ended = 0
        for entry in list(self._waits):
            ended += self.supersede(entry.prefix, None, by)
        return ended
