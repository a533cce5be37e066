"""The SQLite database in the data folder: one connection, used from worker threads under a lock
(``asyncio.to_thread``), WAL journal, every write committed. The database and its ``-wal`` and
``-shm`` files are 0600 (SQLite gives the journal files the database file's mode).

The schema is versioned in ``meta.schema_version``; ``migrate`` brings an older store forward.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

import structlog

from berth.platform.datadir import make_private

T = TypeVar("T")
log = structlog.get_logger(__name__)

SCHEMA_VERSION: Final = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS registries (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS deployments (
  id TEXT PRIMARY KEY, node_id TEXT NOT NULL, status TEXT NOT NULL, created_at REAL NOT NULL,
  updated_at REAL, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS instances (
  id TEXT PRIMARY KEY, deployment_id TEXT NOT NULL, position INTEGER NOT NULL, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS instance_states (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, deployment_id TEXT NOT NULL, instance_id TEXT NOT NULL,
  state TEXT, reason TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS node_events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, node_id TEXT NOT NULL, created_at REAL NOT NULL,
  event TEXT NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS deployment_events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, deployment_id TEXT NOT NULL, created_at REAL NOT NULL,
  data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS deployments_node ON deployments (node_id, created_at);
CREATE INDEX IF NOT EXISTS instances_dep ON instances (deployment_id, position);
CREATE INDEX IF NOT EXISTS instance_states_dep ON instance_states (deployment_id, seq);
CREATE INDEX IF NOT EXISTS node_events_node ON node_events (node_id, seq);
CREATE INDEX IF NOT EXISTS deployment_events_dep ON deployment_events (deployment_id, seq);
"""
_DEPLOYMENT_TABLES: Final = tuple(
    f"CREATE TABLE IF NOT EXISTS {name} (" for name in ("deployments", "instances", "instance_states")
)
JOURNAL_SUFFIXES: Final = ("", "-wal", "-shm", "-journal")


def dumps(doc: Any) -> str:
    # ASCII escapes keep any string storable; validation has already refused what cannot be shown.
    return json.dumps(doc, ensure_ascii=True, separators=(",", ":"))


class Database:
    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self.connection = connection
        self.path = path
        self._lock = threading.Lock()

    @classmethod
    async def open(cls, path: Path) -> Database:
        def _open() -> sqlite3.Connection:
            for suffix in JOURNAL_SUFFIXES:
                journal = path.with_name(path.name + suffix)
                if suffix == "" or journal.exists():
                    make_private(journal)
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA secure_delete=ON")  # replaced values leave no readable trace in free pages
            _migrate_v1(db)
            db.executescript(_SCHEMA)
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
            for suffix in JOURNAL_SUFFIXES[1:]:
                journal = path.with_name(path.name + suffix)
                if journal.exists():
                    make_private(journal)
            return db

        return cls(await asyncio.to_thread(_open), path)

    async def forget_old_pages(self) -> None:
        """After values were rewritten sealed: fold the WAL into the database and empty it."""
        await self.run(self.rows, "PRAGMA wal_checkpoint(TRUNCATE)")

    async def close(self) -> None:
        await self.run(self.connection.close)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs ``fn`` in a worker thread, alone on the connection."""

        def _locked() -> T:
            with self._lock:
                return fn(*args)

        return await asyncio.to_thread(_locked)

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Only from inside ``run``."""
        return list(self.connection.execute(sql, params).fetchall())

    def write_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """Only from inside ``run``. The cursor is dropped here: a cursor finalised in another
        thread while the connection is in use is an API misuse SQLite reports."""
        self.connection.executemany(sql, rows).close()

    def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Only from inside ``run``: all of ``fn``'s writes, or none."""
        self.connection.execute("BEGIN")
        try:
            result = fn(self.connection)
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise
        self.connection.execute("COMMIT")
        return result


def _migrate_v1(db: sqlite3.Connection) -> None:
    """Version 1 kept a deployment's instances (and their states) inside its JSON document, so
    every status event rewrote the whole record; version 2 gives them rows of their own."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(deployments)")}
    if not columns or "status" in columns:
        return
    log.info("store_migrating", to_version=SCHEMA_VERSION)
    db.execute("BEGIN")
    try:
        db.execute("ALTER TABLE deployments RENAME TO deployments_v1")
        for statement in _SCHEMA.split(";"):
            if statement.strip().startswith(_DEPLOYMENT_TABLES):
                db.execute(statement)
        for dep_id, node_id, raw in db.execute("SELECT id, node_id, doc FROM deployments_v1").fetchall():
            doc = json.loads(raw)
            instances = doc.pop("instances", []) or []
            status = str(doc.get("status", "preparing"))
            db.execute(
                "INSERT INTO deployments (id, node_id, status, created_at, updated_at, doc) "
                "VALUES (?,?,?,?,?,?)",
                (dep_id, node_id, status, float(doc.get("created_at", 0)), doc.get("updated_at"), dumps(doc)),
            )
            for position, instance in enumerate(instances):
                state, reason = instance.pop("state", None), instance.pop("reason", "")
                at = instance.pop("updated_at", None)
                instance["position"] = position
                db.execute(
                    "INSERT INTO instances (id, deployment_id, position, doc) VALUES (?,?,?,?)",
                    (instance["id"], dep_id, position, dumps(instance)),
                )
                if state is not None or reason:
                    db.execute(
                        "INSERT INTO instance_states (deployment_id, instance_id, state, reason, at) "
                        "VALUES (?,?,?,?,?)",
                        (dep_id, instance["id"], state, reason or "", at or 0.0),
                    )
        db.execute("DROP TABLE deployments_v1")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
