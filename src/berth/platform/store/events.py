"""The two append-only logs: a node's audit events and a deployment's events."""

from __future__ import annotations

import json
import time
from typing import Any

from berth.platform.store.db import Database, dumps


class EventLog:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add_node_event(self, node_id: str, event: str, data: dict[str, Any]) -> None:
        await self._db.run(
            self._db.rows,
            "INSERT INTO node_events (node_id, created_at, event, data) VALUES (?, ?, ?, ?)",
            (node_id, time.time(), event, dumps(data)),
        )

    async def node_events(self, node_id: str, skip: int, take: int) -> tuple[int, list[dict[str, Any]]]:
        def _list() -> tuple[int, list[dict[str, Any]]]:
            total = self._db.rows("SELECT COUNT(*) FROM node_events WHERE node_id = ?", (node_id,))
            rows = self._db.rows(
                "SELECT created_at, event, data FROM node_events WHERE node_id = ? "
                "ORDER BY seq DESC LIMIT ? OFFSET ?",
                (node_id, take, skip),
            )
            items = [{"createdAt": r[0], "event": r[1], "data": json.loads(r[2])} for r in rows]
            return int(total[0][0]), items

        return await self._db.run(_list)

    async def add_deployment_events(self, deployment_id: str, events: list[dict[str, Any]]) -> float:
        """Appends the events in order, in one write; returns their time."""
        created = time.time()
        rows = [(deployment_id, created, dumps(event)) for event in events]
        await self._db.run(
            self._db.write_many,
            "INSERT INTO deployment_events (deployment_id, created_at, data) VALUES (?, ?, ?)",
            rows,
        )
        return created

    async def deployment_events(self, deployment_id: str) -> list[dict[str, Any]]:
        rows = await self._db.run(
            self._db.rows,
            "SELECT created_at, data FROM deployment_events WHERE deployment_id = ? ORDER BY seq",
            (deployment_id,),
        )
        return [{"createdAt": r[0], **json.loads(r[1])} for r in rows]
