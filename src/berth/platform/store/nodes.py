"""Nodes, with their install token sealed at rest."""

from __future__ import annotations

import sqlite3
from typing import Any

from berth.platform.models import NodeRecord
from berth.platform.secrets import SecretBox
from berth.platform.store.db import Database
from berth.platform.store.documents import DocumentTable


class NodeTable(DocumentTable[NodeRecord]):
    def __init__(self, db: Database, box: SecretBox) -> None:
        super().__init__(db, box, "nodes", NodeRecord)

    def _seal(self, doc: dict[str, Any]) -> None:
        if doc.get("installer"):
            doc["installer"]["token"] = self._box.seal(doc["installer"]["token"])

    def _open(self, record: NodeRecord) -> None:
        if record.installer is not None:
            record.installer.token = self._box.open(record.installer.token)

    def _in_clear(self, doc: dict[str, Any]) -> bool:
        token = str((doc.get("installer") or {}).get("token") or "")
        return bool(token) and not self._box.is_sealed(token)

    async def delete(self, record_id: str) -> None:
        """The node, its audit log and its deployments with everything they recorded."""

        def _delete(c: sqlite3.Connection) -> None:
            ids = [(r[0],) for r in c.execute("SELECT id FROM deployments WHERE node_id = ?", (record_id,))]
            for table in ("deployment_events", "instance_states", "instances"):
                c.executemany(f"DELETE FROM {table} WHERE deployment_id = ?", ids)  # noqa: S608
            c.execute("DELETE FROM deployments WHERE node_id = ?", (record_id,))
            c.execute("DELETE FROM node_events WHERE node_id = ?", (record_id,))
            c.execute("DELETE FROM nodes WHERE id = ?", (record_id,))

        await self._db.run(self._db.transaction, _delete)
