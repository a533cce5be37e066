"""``berth agent`` exactly as ``python -m berth agent`` runs it, printing one JSON line on stdout
when the first ``Connect`` is issued and one after each command was dispatched: which of the heavy
modules were imported by then."""

from __future__ import annotations

import json
import sys
from typing import Any

from berth.agent import app, session
from berth.cli import main

WATCHED = (
    "docker",
    "requests",
    "pysequoia",
    "berth.runtimes.docker.runtime",
    "berth.agent.dispatcher",
    "berth.agent.commands",
)
_original = session.Session._connect_once
_original_dispatch = app.Agent._dispatch
_reported = False


def _imported() -> list[str]:
    return [m for m in WATCHED if m in sys.modules]


async def _connect_once(self: session.Session, *args: Any, **kwargs: Any) -> Any:
    global _reported
    if not _reported:
        _reported = True
        print(json.dumps({"imported_at_connect": _imported()}), flush=True)
    return await _original(self, *args, **kwargs)


async def _dispatch(self: app.Agent, command: Any) -> None:
    await _original_dispatch(self, command)
    print(json.dumps({"dispatched": type(command).__name__, "imported": _imported()}), flush=True)


session.Session._connect_once = _connect_once  # type: ignore[method-assign]
app.Agent._dispatch = _dispatch  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main(["agent"]))
