"""Nodes, with their install token sealed at rest."""

from __future__ import annotations

import json
import sqlite3

from berth.platform.models import NodeRecord
from berth.platform.secrets import SecretBox
from berth.platform.store.db import Database, dumps


class NodeTable:
    def __init__(self, db: Database, box: SecretBox) -> None:
        self._db = db
        self._box = box

    def _to_row(self, node: NodeRecord) -> str:
        doc = node.model_dump()
        if doc.get("installer"):
            doc["installer"]["token"] = self._box.seal(doc["installer"]["token"])
        return dumps(doc)

    def _from_row(self, raw: str) -> NodeRecord:
        node = NodeRecord.model_validate(json.loads(raw))
        if node.installer is not None:
            node.installer.token = self._box.open(node.installer.token)
        return node

    async def put(self, node: NodeRecord) -> None:
        row = self._to_row(node)
        await self._db.run(
            self._db.rows, "INSERT OR REPLACE INTO nodes (id, doc) VALUES (?, ?)", (node.id, row)
        )

    async def get(self, node_id: str) -> NodeRecord | None:
        rows = await self._db.run(self._db.rows, "SELECT doc FROM nodes WHERE id = ?", (node_id,))
        return self._from_row(rows[0][0]) if rows else None

    async def all(self) -> list[NodeRecord]:
        rows = await self._db.run(self._db.rows, "SELECT doc FROM nodes")
        return sorted((self._from_row(row[0]) for row in rows), key=lambda n: n.created_at)

    async def delete(self, node_id: str) -> None:
        """The node, its audit log and its deployments with everything they recorded."""

        def _delete(c: sqlite3.Connection) -> None:
            ids = [(r[0],) for r in c.execute("SELECT id FROM deployments WHERE node_id = ?", (node_id,))]
            for table in ("deployment_events", "instance_states", "instances"):
                c.executemany(f"DELETE FROM {table} WHERE deployment_id = ?", ids)  # noqa: S608
            c.execute("DELETE FROM deployments WHERE node_id = ?", (node_id,))
            c.execute("DELETE FROM node_events WHERE node_id = ?", (node_id,))
            c.execute("DELETE FROM nodes WHERE id = ?", (node_id,))

        await self._db.run(self._db.transaction, _delete)

    async def reseal(self) -> int:
        """Migration: seals install tokens stored in clear by an older version; returns how many."""
        count = 0
        for node in await self.all():
            raw = await self._db.run(self._db.rows, "SELECT doc FROM nodes WHERE id = ?", (node.id,))
            installer = json.loads(raw[0][0]).get("installer") or {}
            if installer.get("token") and not self._box.is_sealed(str(installer["token"])):
                await self.put(node)
                count += 1
        return count
