"""Concurrent pulls for one deployment: each distinct image is pulled once, at most
``PULL_CONCURRENCY`` at a time, while creation and start keep the request's order."""

from __future__ import annotations

import asyncio
from typing import Final

from berth.imageref import ImageReference
from berth.model import RegistryAuth
from berth.runtimes.base import DeployEvents
from berth.runtimes.docker.pull import ImagePuller, PullOutcome

PULL_CONCURRENCY: Final = 3


class PullSet:
    def __init__(self, puller: ImagePuller, events: DeployEvents) -> None:
        self._puller = puller
        self._events = events
        self._slots = asyncio.Semaphore(PULL_CONCURRENCY)
        self._tasks: dict[str, asyncio.Task[PullOutcome]] = {}

    def request(self, image: ImageReference, auth: RegistryAuth | None, workload_id: str) -> None:
        """Start pulling (once per image and credentials); progress goes to ``workload_id``."""
        key = self._key(image, auth)
        if key not in self._tasks:
            self._tasks[key] = asyncio.create_task(
                self._pull(image, auth, workload_id), name=f"docker-pull-{image}"
            )

    async def result(self, image: ImageReference, auth: RegistryAuth | None, workload_id: str) -> PullOutcome:
        self.request(image, auth, workload_id)
        return await asyncio.shield(self._tasks[self._key(image, auth)])

    def finished(self, image: ImageReference, auth: RegistryAuth | None) -> PullOutcome | None:
        """The outcome of a pull that already succeeded, else ``None``."""
        task = self._tasks.get(self._key(image, auth))
        if task is None or not task.done() or task.cancelled() or task.exception() is not None:
            return None
        return task.result()

    async def aclose(self) -> None:
        pending = [task for task in self._tasks.values() if not task.done()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def _pull(self, image: ImageReference, auth: RegistryAuth | None, workload_id: str) -> PullOutcome:
        async with self._slots:
            return await self._puller.ensure(image, auth, self._events, workload_id)

    @staticmethod
    def _key(image: ImageReference, auth: RegistryAuth | None) -> str:
        return f"{image}|{auth.user if auth else ''}|{hash(auth.password) if auth else ''}"
