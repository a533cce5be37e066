"""Tables of ``(id, doc)`` rows: each row one record's JSON document, its private values sealed."""

from __future__ import annotations

import json
from typing import Any, Generic, TypeVar

from berth.platform.models import Entity
from berth.platform.secrets import SecretBox
from berth.platform.store.db import Database, dumps

R = TypeVar("R", bound=Entity)


class DocumentTable(Generic[R]):
    """What nodes and registries have in common; each says which of its values are sealed."""

    def __init__(self, db: Database, box: SecretBox, table: str, record: type[R]) -> None:
        self._db = db
        self._box = box
        self._table = table
        self._record = record

    def _seal(self, doc: dict[str, Any]) -> None:
        """Seals the private values of a document about to be written."""

    def _open(self, record: R) -> None:
        """Opens the private values of a record just read."""

    def _in_clear(self, doc: dict[str, Any]) -> bool:
        """Whether a stored document still holds a private value in clear (an older version's)."""
        return False

    def _from_row(self, raw: str) -> R:
        record = self._record.model_validate(json.loads(raw))
        self._open(record)
        return record

    async def put(self, record: R) -> None:
        doc = record.model_dump()
        self._seal(doc)
        sql = f"INSERT OR REPLACE INTO {self._table} (id, doc) VALUES (?, ?)"  # noqa: S608
        await self._db.run(self._db.rows, sql, (record.id, dumps(doc)))

    async def get(self, record_id: str) -> R | None:
        sql = f"SELECT doc FROM {self._table} WHERE id = ?"  # noqa: S608
        rows = await self._db.run(self._db.rows, sql, (record_id,))
        return self._from_row(rows[0][0]) if rows else None

    async def all(self) -> list[R]:
        rows = await self._db.run(self._db.rows, f"SELECT doc FROM {self._table}")  # noqa: S608
        return sorted((self._from_row(row[0]) for row in rows), key=lambda r: r.created_at)

    async def delete(self, record_id: str) -> None:
        sql = f"DELETE FROM {self._table} WHERE id = ?"  # noqa: S608
        await self._db.run(self._db.rows, sql, (record_id,))

    async def reseal(self) -> int:
        """Migration: seals values stored in clear by an older version; returns how many rows."""
        count = 0
        for (raw,) in await self._db.run(self._db.rows, f"SELECT doc FROM {self._table}"):  # noqa: S608
            if self._in_clear(json.loads(raw)):
                await self.put(self._from_row(raw))
                count += 1
        return count
