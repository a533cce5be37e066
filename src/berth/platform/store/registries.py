"""Registries, with their password sealed at rest."""

from __future__ import annotations

import json

from berth.platform.models import RegistryRecord
from berth.platform.secrets import SecretBox
from berth.platform.store.db import Database, dumps


class RegistryTable:
    def __init__(self, db: Database, box: SecretBox) -> None:
        self._db = db
        self._box = box

    def _from_row(self, raw: str) -> RegistryRecord:
        registry = RegistryRecord.model_validate(json.loads(raw))
        registry.password = self._box.open(registry.password)
        return registry

    async def put(self, registry: RegistryRecord) -> None:
        doc = registry.model_dump()
        doc["password"] = self._box.seal(registry.password)
        await self._db.run(
            self._db.rows,
            "INSERT OR REPLACE INTO registries (id, doc) VALUES (?, ?)",
            (registry.id, dumps(doc)),
        )

    async def get(self, registry_id: str) -> RegistryRecord | None:
        rows = await self._db.run(self._db.rows, "SELECT doc FROM registries WHERE id = ?", (registry_id,))
        return self._from_row(rows[0][0]) if rows else None

    async def all(self) -> list[RegistryRecord]:
        rows = await self._db.run(self._db.rows, "SELECT doc FROM registries")
        return sorted((self._from_row(r[0]) for r in rows), key=lambda r: r.created_at)

    async def delete(self, registry_id: str) -> None:
        await self._db.run(self._db.rows, "DELETE FROM registries WHERE id = ?", (registry_id,))

    async def reseal(self) -> int:
        count = 0
        for row in await self._db.run(self._db.rows, "SELECT doc FROM registries"):
            password = str(json.loads(row[0]).get("password", ""))
            if password and not self._box.is_sealed(password):
                await self.put(self._from_row(row[0]))
                count += 1
        return count
