"""Registries the platform pulls from: the password is write-only (sealed at rest, never shown)."""

from __future__ import annotations

import time
import uuid

from berth.platform.models import RegistryBody, RegistryRecord
from berth.platform.problems import InvalidInput, UnknownEntity
from berth.platform.store import Store


def _apply(body: RegistryBody, registry: RegistryRecord) -> None:
    registry.name = body.name
    registry.url = body.url
    registry.user = body.user
    registry.description = body.description
    if body.password is not None:
        registry.password = body.password
    if bool(registry.user) != bool(registry.password):
        raise InvalidInput("password" if registry.user else "user", "user and password go together")


class RegistryService:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def get(self, registry_id: str) -> RegistryRecord:
        registry = await self._store.registries.get(registry_id)
        if registry is None:
            raise UnknownEntity("Registry not found")
        return registry

    async def all(self) -> list[RegistryRecord]:
        return await self._store.registries.all()

    async def create(self, body: RegistryBody) -> RegistryRecord:
        registry = RegistryRecord(id=str(uuid.uuid4()), name=body.name, url=body.url, created_at=time.time())
        _apply(body, registry)
        await self._store.registries.put(registry)
        return registry

    async def update(self, registry_id: str, body: RegistryBody) -> RegistryRecord:
        registry = await self.get(registry_id)
        _apply(body, registry)
        await self._store.registries.put(registry)
        return registry

    async def delete(self, registry_id: str) -> None:
        registry = await self.get(registry_id)
        await self._store.registries.delete(registry.id)
