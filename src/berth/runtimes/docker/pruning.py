"""Image pruning after a successful deployment.

Berth keeps a ledger per prefix (``<data>/<prefix>/@images.json``, 0600, atomic writes) of the
images each workload ran and whether Berth itself pulled them. After a success, the images of a
workload's superseded deployments beyond the last ``prune_keep`` (kept for rollback) are removed
when Berth pulled them, no container uses them, no other prefix's ledger knows them, and the tag
still names the same image. Images Berth did not pull are never touched.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import docker
import docker.errors
import structlog

from berth.errors import PersistenceError, RuntimeFailure
from berth.imageref import ImageReference
from berth.model import LogLevel
from berth.runtimes.base import DeployEvents
from berth.runtimes.docker.disk import human_bytes
from berth.runtimes.docker.engine import Engine, translated
from berth.runtimes.docker.records import write_atomic
from berth.settings import DockerSettings

log = structlog.get_logger(__name__)

LEDGER_FILE: Final = "@images.json"


@dataclass(slots=True)
class LedgerEntry:
    workload: str
    reference: str
    image_id: str
    pulled_by_berth: bool
    last_deployed: float


@dataclass(frozen=True, slots=True)
class Deployed:
    """One workload of a successful deployment and the image it now runs."""

    workload: str
    image: ImageReference
    image_id: str
    pulled: bool


@dataclass(frozen=True, slots=True)
class PruneResult:
    removed: tuple[str, ...] = ()
    bytes_freed: int = 0


def ledger_path(root: Path, prefix: str) -> Path:
    return root / prefix / LEDGER_FILE


def read_ledger(root: Path, prefix: str) -> list[LedgerEntry]:
    path = ledger_path(root, prefix)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as err:
        raise PersistenceError(f"cannot read {path}: {err}") from err
    return [LedgerEntry(**entry) for entry in raw.get("images", [])]


def write_ledger(root: Path, prefix: str, entries: list[LedgerEntry]) -> None:
    document = {"images": [asdict(entry) for entry in entries]}
    write_atomic(ledger_path(root, prefix), json.dumps(document, indent=1))


def record(entries: list[LedgerEntry], deployed: list[Deployed], now: float) -> bool:
    """Note what each workload runs now; ``False`` when the ledger already said so (a redeploy
    of the same image: no write needed)."""
    changed = False
    for item in deployed:
        mine = [e for e in entries if e.workload == item.workload]
        known = next((e for e in mine if e.image_id == item.image_id), None)
        if known is None:
            entries.append(LedgerEntry(item.workload, str(item.image), item.image_id, item.pulled, now))
            changed = True
            continue
        newest = max(mine, key=lambda e: e.last_deployed)
        pulled = known.pulled_by_berth or item.pulled
        if known is newest and known.reference == str(item.image) and pulled == known.pulled_by_berth:
            continue
        known.reference = str(item.image)
        known.pulled_by_berth = pulled
        known.last_deployed = now
        changed = True
    return changed


def candidates(entries: list[LedgerEntry], deployed: list[Deployed], keep: int) -> list[LedgerEntry]:
    """Superseded entries of the deployed workloads beyond the ``keep`` most recent ones."""
    chosen: list[LedgerEntry] = []
    for item in deployed:
        superseded = sorted(
            (e for e in entries if e.workload == item.workload and e.image_id != item.image_id),
            key=lambda e: e.last_deployed,
            reverse=True,
        )
        chosen.extend(superseded[keep:])
    return chosen


class ImagePruner:
    def __init__(self, engine: Engine, settings: DockerSettings) -> None:
        self._engine = engine
        self._settings = settings
        self.pruned_bytes_total = 0

    async def after_success(self, prefix: str, deployed: list[Deployed], events: DeployEvents) -> None:
        """Record what runs now and prune; never fails the deployment (a problem is a warning)."""
        try:
            result = await self._engine.threads.call(self._run, prefix, deployed)
        except (RuntimeFailure, PersistenceError, OSError) as err:
            log.warning("image_prune_failed", prefix=prefix, error=str(err))
            await events.log(LogLevel.WARNING, f"Could not prune superseded images: {err}")
            return
        if result.removed:
            self.pruned_bytes_total += result.bytes_freed
            await events.log(
                LogLevel.INFO,
                f"Pruned {len(result.removed)} superseded image(s), freed {human_bytes(result.bytes_freed)}: "
                + ", ".join(result.removed),
            )
            log.info(
                "images_pruned", prefix=prefix, images=list(result.removed), bytes_freed=result.bytes_freed
            )

    def _run(self, prefix: str, deployed: list[Deployed]) -> PruneResult:
        root = self._settings.internal_mount_path
        entries = read_ledger(root, prefix)
        changed = record(entries, deployed, time.time())
        result = PruneResult()
        resilience = self._settings.resilience
        if resilience.prune_images and changed:  # only a new image can supersede another
            chosen = candidates(entries, deployed, resilience.prune_keep)
            if chosen:
                result = self._prune(root, prefix, entries, chosen)
                changed = True
        if changed:
            write_ledger(root, prefix, entries)
        return result

    def _prune(
        self, root: Path, prefix: str, entries: list[LedgerEntry], chosen: list[LedgerEntry]
    ) -> PruneResult:
        client = self._engine.client()
        with translated("list containers for pruning"):
            used = {str(c.get("ImageID", "")) for c in client.api.containers(all=True)}
        elsewhere = _known_to_other_prefixes(root, prefix)
        keep_ids = {e.image_id for e in entries if e not in chosen}
        removed: list[str] = []
        freed = 0
        for entry in chosen:
            if not entry.pulled_by_berth:
                entries.remove(entry)  # never ours to remove: forget it
                continue
            if entry.image_id in used or entry.image_id in elsewhere or entry.image_id in keep_ids:
                continue
            size = _remove(client, entry)
            if size is None:
                continue
            entries.remove(entry)
            removed.append(entry.reference)
            freed += size
        return PruneResult(tuple(removed), freed)


def _known_to_other_prefixes(root: Path, prefix: str) -> set[str]:
    ids: set[str] = set()
    for path in root.glob(f"*/{LEDGER_FILE}"):
        if path.parent.name == prefix:
            continue
        try:
            ids.update(str(e.get("image_id")) for e in json.loads(path.read_text("utf-8")).get("images", []))
        except (OSError, ValueError, AttributeError):
            continue
    return ids


def _remove(client: docker.DockerClient, entry: LedgerEntry) -> int | None:
    """Remove one image Berth pulled; its size when the engine deleted it, ``None`` when it is
    gone already, in use, or its tag now names another image (then only a dangling id is removed)."""
    try:
        attrs: dict[str, Any] = client.api.inspect_image(entry.image_id)  # type: ignore[no-untyped-call]
    except docker.errors.NotFound:
        return None
    except docker.errors.APIError as err:
        log.debug("image_prune_skipped", image=entry.reference, reason=str(err))
        return None
    tags = [str(t) for t in attrs.get("RepoTags") or ()]
    target = entry.reference if entry.reference in tags else (entry.image_id if not tags else None)
    if target is None:  # tagged under other names only: someone else's now
        return None
    try:
        answer = client.api.remove_image(target, noprune=False)
    except docker.errors.APIError as err:  # in use (409) or referenced elsewhere
        log.debug("image_prune_skipped", image=entry.reference, reason=str(err))
        return None
    deleted = any("Deleted" in item for item in answer or ())
    return int(attrs.get("Size", 0)) if deleted else 0
