"""SQLite persistence in the platform's data folder: nodes, registries, deployments and the two
append-only event logs. Every call runs in a worker thread (``asyncio.to_thread``) on one
connection guarded by a lock; each write commits, so a restart loses nothing.

Documents are stored as JSON next to their id: the shapes are the dataclasses in ``records``.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from berth.platform.records import DeploymentRecord, NodeRecord, RegistryRecord

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS registries (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS deployments (id TEXT PRIMARY KEY, node_id TEXT NOT NULL, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS node_events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, node_id TEXT NOT NULL, created_at REAL NOT NULL,
  event TEXT NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS deployment_events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, deployment_id TEXT NOT NULL, created_at REAL NOT NULL,
  data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS node_events_node ON node_events (node_id, seq);
CREATE INDEX IF NOT EXISTS deployment_events_dep ON deployment_events (deployment_id, seq);
"""


class Store:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection
        self._lock = threading.Lock()

    @classmethod
    async def open(cls, path: Path) -> Store:
        def _open() -> sqlite3.Connection:
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            return db

        return cls(await asyncio.to_thread(_open))

    async def close(self) -> None:
        await self._run(self._db.close)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        def _locked() -> T:
            with self._lock:
                return fn(*args)

        return await asyncio.to_thread(_locked)

    def _exec(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return list(self._db.execute(sql, params).fetchall())

    # -- meta ----------------------------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        rows = await self._run(self._exec, "SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    async def set_meta(self, key: str, value: str) -> None:
        await self._run(self._exec, "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- nodes ---------------------------------------------------------------------------------

    async def put_node(self, node: NodeRecord) -> None:
        await self._run(
            self._exec,
            "INSERT OR REPLACE INTO nodes (id, doc) VALUES (?, ?)",
            (node.id, json.dumps(node.to_doc())),
        )

    async def get_node(self, node_id: str) -> NodeRecord | None:
        rows = await self._run(self._exec, "SELECT doc FROM nodes WHERE id = ?", (node_id,))
        return NodeRecord.from_doc(json.loads(rows[0][0])) if rows else None

    async def list_nodes(self) -> list[NodeRecord]:
        rows = await self._run(self._exec, "SELECT doc FROM nodes")
        nodes = [NodeRecord.from_doc(json.loads(row[0])) for row in rows]
        return sorted(nodes, key=lambda n: n.created_at)

    async def delete_node(self, node_id: str) -> None:
        def _delete() -> None:
            self._db.execute("BEGIN")
            try:
                ids = [
                    r[0] for r in self._db.execute("SELECT id FROM deployments WHERE node_id = ?", (node_id,))
                ]
                for dep_id in ids:
                    self._db.execute("DELETE FROM deployment_events WHERE deployment_id = ?", (dep_id,))
                self._db.execute("DELETE FROM deployments WHERE node_id = ?", (node_id,))
                self._db.execute("DELETE FROM node_events WHERE node_id = ?", (node_id,))
                self._db.execute("DELETE FROM nodes WHERE id = ?", (node_id,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

        await self._run(_delete)

    async def add_node_event(self, node_id: str, event: str, data: dict[str, Any]) -> None:
        await self._run(
            self._exec,
            "INSERT INTO node_events (node_id, created_at, event, data) VALUES (?, ?, ?, ?)",
            (node_id, time.time(), event, json.dumps(data)),
        )

    async def list_node_events(self, node_id: str, skip: int, take: int) -> tuple[int, list[dict[str, Any]]]:
        def _list() -> tuple[int, list[dict[str, Any]]]:
            total = self._db.execute(
                "SELECT COUNT(*) FROM node_events WHERE node_id = ?", (node_id,)
            ).fetchone()
            rows = self._db.execute(
                "SELECT created_at, event, data FROM node_events WHERE node_id = ? "
                "ORDER BY seq DESC LIMIT ? OFFSET ?",
                (node_id, take, skip),
            ).fetchall()
            items = [{"createdAt": r[0], "event": r[1], "data": json.loads(r[2])} for r in rows]
            return int(total[0]), items

        return await self._run(_list)

    # -- registries ----------------------------------------------------------------------------

    async def put_registry(self, registry: RegistryRecord) -> None:
        await self._run(
            self._exec,
            "INSERT OR REPLACE INTO registries (id, doc) VALUES (?, ?)",
            (registry.id, json.dumps(registry.to_doc())),
        )

    async def get_registry(self, registry_id: str) -> RegistryRecord | None:
        rows = await self._run(self._exec, "SELECT doc FROM registries WHERE id = ?", (registry_id,))
        return RegistryRecord.from_doc(json.loads(rows[0][0])) if rows else None

    async def list_registries(self) -> list[RegistryRecord]:
        rows = await self._run(self._exec, "SELECT doc FROM registries")
        return sorted((RegistryRecord.from_doc(json.loads(r[0])) for r in rows), key=lambda r: r.created_at)

    async def delete_registry(self, registry_id: str) -> None:
        await self._run(self._exec, "DELETE FROM registries WHERE id = ?", (registry_id,))

    # -- deployments ---------------------------------------------------------------------------

    async def put_deployment(self, deployment: DeploymentRecord) -> None:
        await self._run(
            self._exec,
            "INSERT OR REPLACE INTO deployments (id, node_id, doc) VALUES (?, ?, ?)",
            (deployment.id, deployment.node_id, json.dumps(deployment.to_doc())),
        )

    async def get_deployment(self, deployment_id: str) -> DeploymentRecord | None:
        rows = await self._run(self._exec, "SELECT doc FROM deployments WHERE id = ?", (deployment_id,))
        return DeploymentRecord.from_doc(json.loads(rows[0][0])) if rows else None

    async def list_deployments(self) -> list[DeploymentRecord]:
        rows = await self._run(self._exec, "SELECT doc FROM deployments")
        return sorted((DeploymentRecord.from_doc(json.loads(r[0])) for r in rows), key=lambda d: d.created_at)

    async def delete_deployment(self, deployment_id: str) -> None:
        def _delete() -> None:
            self._db.execute("DELETE FROM deployment_events WHERE deployment_id = ?", (deployment_id,))
            self._db.execute("DELETE FROM deployments WHERE id = ?", (deployment_id,))

        await self._run(_delete)

    async def add_deployment_event(self, deployment_id: str, data: dict[str, Any]) -> float:
        created = time.time()
        await self._run(
            self._exec,
            "INSERT INTO deployment_events (deployment_id, created_at, data) VALUES (?, ?, ?)",
            (deployment_id, created, json.dumps(data)),
        )
        return created

    async def list_deployment_events(self, deployment_id: str) -> list[dict[str, Any]]:
        rows = await self._run(
            self._exec,
            "SELECT created_at, data FROM deployment_events WHERE deployment_id = ? ORDER BY seq",
            (deployment_id,),
        )
        return [{"createdAt": r[0], **json.loads(r[1])} for r in rows]
