"""Deployments: a header row (status and times in columns, the rest a sealed-secrets document),
one row per instance, and instance states appended as rows. A status event writes one small row
or one column, never the whole deployment again.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from typing import Any

from berth.platform.models import DeploymentRecord, InstanceRecord, InstanceState
from berth.platform.secrets import SecretBox
from berth.platform.store.db import Database, dumps

_HEADER_COLUMNS = ("id", "node_id", "status", "created_at", "updated_at")


class DeploymentTable:
    def __init__(self, db: Database, box: SecretBox) -> None:
        self._db = db
        self._box = box

    # -- sealing -------------------------------------------------------------------------------

    def _header_doc(self, deployment: DeploymentRecord) -> str:
        doc = deployment.model_dump(exclude=set(_HEADER_COLUMNS))
        doc["secrets"] = {k: self._box.seal(v) for k, v in deployment.secrets.items()}
        return dumps(doc)

    def _header(self, row: tuple[Any, ...]) -> DeploymentRecord:
        doc = json.loads(row[5])
        doc.update(dict(zip(_HEADER_COLUMNS, row[:5], strict=True)))
        deployment = DeploymentRecord.model_validate(doc)
        deployment.secrets = {k: self._box.open(v) for k, v in deployment.secrets.items()}
        return deployment

    def _instance_doc(self, instance: InstanceRecord) -> str:
        doc = instance.model_dump()
        secrets = doc["config"].get("common", {}).get("secrets")
        if isinstance(secrets, dict):
            doc["config"]["common"]["secrets"] = {k: self._box.seal(str(v)) for k, v in secrets.items()}
        return dumps(doc)

    def _instance(self, raw: str) -> InstanceRecord:
        instance = InstanceRecord.model_validate(json.loads(raw))
        secrets = instance.config.get("common", {}).get("secrets")
        if isinstance(secrets, dict):
            instance.config["common"]["secrets"] = {k: self._box.open(str(v)) for k, v in secrets.items()}
        return instance

    # -- deployments ---------------------------------------------------------------------------

    async def insert(self, deployment: DeploymentRecord, instances: list[InstanceRecord]) -> None:
        header = self._header_doc(deployment)
        rows = [(i.id, deployment.id, i.position, self._instance_doc(i)) for i in instances]

        def _insert(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO deployments (id, node_id, status, created_at, updated_at, doc) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    deployment.id,
                    deployment.node_id,
                    deployment.status,
                    deployment.created_at,
                    deployment.updated_at,
                    header,
                ),
            )
            c.executemany(
                "INSERT INTO instances (id, deployment_id, position, doc) VALUES (?, ?, ?, ?)", rows
            )

        await self._db.run(self._db.transaction, _insert)

    async def get(self, deployment_id: str) -> DeploymentRecord | None:
        rows = await self._db.run(
            self._db.rows,
            "SELECT id, node_id, status, created_at, updated_at, doc FROM deployments WHERE id = ?",
            (deployment_id,),
        )
        return self._header(rows[0]) if rows else None

    async def all(self, node_id: str | None = None) -> list[DeploymentRecord]:
        sql = "SELECT id, node_id, status, created_at, updated_at, doc FROM deployments"
        params: tuple[Any, ...] = ()
        if node_id is not None:
            sql += " WHERE node_id = ?"
            params = (node_id,)
        rows = await self._db.run(self._db.rows, sql + " ORDER BY created_at", params)
        return [self._header(row) for row in rows]

    async def set_status(self, deployment_id: str, status: str) -> float:
        now = time.time()
        await self._db.run(
            self._db.rows,
            "UPDATE deployments SET status = ?, updated_at = ? WHERE id = ?",
            (status, now, deployment_id),
        )
        return now

    async def with_status(self, status: str) -> list[str]:
        rows = await self._db.run(self._db.rows, "SELECT id FROM deployments WHERE status = ?", (status,))
        return [str(r[0]) for r in rows]

    async def delete(self, deployment_id: str) -> None:
        def _delete(c: sqlite3.Connection) -> None:
            for table in ("deployment_events", "instance_states", "instances"):
                c.execute(f"DELETE FROM {table} WHERE deployment_id = ?", (deployment_id,))  # noqa: S608
            c.execute("DELETE FROM deployments WHERE id = ?", (deployment_id,))

        await self._db.run(self._db.transaction, _delete)

    # -- instances -----------------------------------------------------------------------------

    async def instances(self, deployment_id: str) -> list[InstanceRecord]:
        rows = await self._db.run(
            self._db.rows,
            "SELECT doc FROM instances WHERE deployment_id = ? ORDER BY position",
            (deployment_id,),
        )
        return [self._instance(row[0]) for row in rows]

    async def update_instance(self, deployment_id: str, instance: InstanceRecord) -> None:
        doc = self._instance_doc(instance)

        def _update(c: sqlite3.Connection) -> None:
            c.execute("UPDATE instances SET doc = ? WHERE id = ?", (doc, instance.id))
            c.execute("UPDATE deployments SET updated_at = ? WHERE id = ?", (time.time(), deployment_id))

        await self._db.run(self._db.transaction, _update)

    # -- instance states -----------------------------------------------------------------------

    async def append_states(self, deployment_id: str, states: Iterable[InstanceState]) -> None:
        rows = [
            (deployment_id, s.instance_id, s.state, s.reason, s.updated_at or time.time()) for s in states
        ]
        if rows:
            await self._db.run(
                self._db.write_many,
                "INSERT INTO instance_states (deployment_id, instance_id, state, reason, at) "
                "VALUES (?,?,?,?,?)",
                rows,
            )

    async def clear_states(self, deployment_id: str) -> None:
        await self._db.run(
            self._db.rows, "DELETE FROM instance_states WHERE deployment_id = ?", (deployment_id,)
        )

    async def latest_states(self, deployment_id: str) -> dict[str, InstanceState]:
        rows = await self._db.run(
            self._db.rows,
            "SELECT instance_id, state, reason, at FROM instance_states WHERE seq IN ("
            "SELECT MAX(seq) FROM instance_states WHERE deployment_id = ? GROUP BY instance_id)",
            (deployment_id,),
        )
        return {
            str(r[0]): InstanceState(instance_id=r[0], state=r[1], reason=r[2], updated_at=r[3]) for r in rows
        }

    async def reseal(self) -> int:
        """Migration: seals secret values stored in clear by an older version."""
        count = 0
        for deployment in await self.all():
            raw = await self._db.run(
                self._db.rows, "SELECT doc FROM deployments WHERE id = ?", (deployment.id,)
            )
            stored = json.loads(raw[0][0]).get("secrets") or {}
            if any(v and not self._box.is_sealed(str(v)) for v in stored.values()):
                doc = self._header_doc(deployment)
                await self._db.run(
                    self._db.rows, "UPDATE deployments SET doc = ? WHERE id = ?", (doc, deployment.id)
                )
                count += 1
            for instance in await self.instances(deployment.id):
                raw = await self._db.run(
                    self._db.rows, "SELECT doc FROM instances WHERE id = ?", (instance.id,)
                )
                secrets = json.loads(raw[0][0]).get("config", {}).get("common", {}).get("secrets") or {}
                if any(v and not self._box.is_sealed(str(v)) for v in secrets.values()):
                    await self._db.run(
                        self._db.rows,
                        "UPDATE instances SET doc = ? WHERE id = ?",
                        (self._instance_doc(instance), instance.id),
                    )
                    count += 1
        return count
