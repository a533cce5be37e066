"""The platform's store: SQLite in the data folder, one module per table family, the only place
that writes SQL. Values that must stay private are sealed here (``secrets.SecretBox``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import structlog

from berth.platform.secrets import SecretBox
from berth.platform.store.db import Database
from berth.platform.store.deployments import DeploymentTable
from berth.platform.store.events import EventLog
from berth.platform.store.nodes import NodeTable
from berth.platform.store.registries import RegistryTable

log = structlog.get_logger(__name__)
JWT_SECRET_KEY = "jwt_secret"


@dataclass(frozen=True)
class Store:
    db: Database
    box: SecretBox
    nodes: NodeTable
    registries: RegistryTable
    deployments: DeploymentTable
    events: EventLog

    @classmethod
    async def open(cls, path: Path, box: SecretBox) -> Store:
        db = await Database.open(path)
        store = cls(
            db=db,
            box=box,
            nodes=NodeTable(db, box),
            registries=RegistryTable(db, box),
            deployments=DeploymentTable(db, box),
            events=EventLog(db),
        )
        sealed = (
            await store.nodes.reseal() + await store.registries.reseal() + await store.deployments.reseal()
        )
        if sealed:
            await db.forget_old_pages()
            log.info("store_values_sealed", rows=sealed)
        return store

    async def close(self) -> None:
        await self.db.close()

    async def get_sealed_meta(self, key: str) -> str | None:
        rows = await self.db.run(self.db.rows, "SELECT value FROM meta WHERE key = ?", (key,))
        if not rows:
            return None
        value = str(rows[0][0])
        if not self.box.is_sealed(value):
            await self.set_sealed_meta(key, value)
        return self.box.open(value)

    async def set_sealed_meta(self, key: str, value: str) -> None:
        await self.db.run(
            self.db.rows,
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
            (key, self.box.seal(value)),
        )
