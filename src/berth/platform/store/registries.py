"""Registries, with their password sealed at rest."""

from __future__ import annotations

from typing import Any

from berth.platform.models import RegistryRecord
from berth.platform.secrets import SecretBox
from berth.platform.store.db import Database
from berth.platform.store.documents import DocumentTable


class RegistryTable(DocumentTable[RegistryRecord]):
    def __init__(self, db: Database, box: SecretBox) -> None:
        super().__init__(db, box, "registries", RegistryRecord)

    def _seal(self, doc: dict[str, Any]) -> None:
        doc["password"] = self._box.seal(doc["password"])

    def _open(self, record: RegistryRecord) -> None:
        record.password = self._box.open(record.password)

    def _in_clear(self, doc: dict[str, Any]) -> bool:
        password = str(doc.get("password", ""))
        return bool(password) and not self._box.is_sealed(password)
