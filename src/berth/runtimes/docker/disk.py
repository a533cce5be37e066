"""Disk-aware pulls: before a pull, the free space of the engine's data root is compared with what
the image needs (its registry manifest's size, twice: the download and the unpacked layers), and
a pull that cannot fit is refused early. A "no space left on device" from the engine becomes one
clear reason. Blocking parts run in the puller's thread."""

from __future__ import annotations

import ipaddress
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import docker
import structlog

from berth.errors import PermanentCommandError
from berth.imageref import ImageReference
from berth.runtimes.docker.manifest_size import SizeUnknown, image_download_size
from berth.settings import ResilienceSettings

log = structlog.get_logger(__name__)

UNPACK_FACTOR: Final = 2  # compressed layers downloaded + unpacked at least as large
ENOSPC_TEXT: Final = "no space left on device"
DISK_FULL: Final = "the engine's disk is full"


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"  # pragma: no cover - the loop returns at GiB


def enospc_failure(what: str, detail: str) -> PermanentCommandError | None:
    """The engine ran out of disk: one clear reason instead of its layer-by-layer error text."""
    if ENOSPC_TEXT not in detail.lower() or DISK_FULL in detail:  # not ENOSPC, or already said
        return None
    return PermanentCommandError(f"{what} failed: {DISK_FULL} ({ENOSPC_TEXT})")


@dataclass(frozen=True, slots=True)
class _EngineFacts:
    data_root: Path | None
    insecure_cidrs: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    index_secure: dict[str, bool]


class DiskGuard:
    """Knows the engine's data root and its free space; thread-safe (pulls run in threads)."""

    def __init__(self, settings: ResilienceSettings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._facts: _EngineFacts | None = None
        self.last_free_bytes: int | None = None

    def facts(self, client: docker.DockerClient) -> _EngineFacts:
        with self._lock:
            if self._facts is None:
                info: dict[str, Any] = client.info()
                root = str(info.get("DockerRootDir") or "")
                registry = info.get("RegistryConfig") or {}
                cidrs = []
                for cidr in registry.get("InsecureRegistryCIDRs") or ():
                    try:
                        cidrs.append(ipaddress.ip_network(str(cidr), strict=False))
                    except ValueError:
                        continue
                index = {
                    str(name): bool((config or {}).get("Secure", True))
                    for name, config in (registry.get("IndexConfigs") or {}).items()
                }
                self._facts = _EngineFacts(Path(root) if root else None, tuple(cidrs), index)
            return self._facts

    def free_bytes(self, client: docker.DockerClient) -> int | None:
        """Free bytes of the data root as this process sees it; ``None`` when it cannot see it
        (the agent in a container without the engine's folder mounted)."""
        root = self.facts(client).data_root
        if root is None:
            return None
        try:
            stats = os.statvfs(root)
        except OSError:
            return None
        free = stats.f_bavail * stats.f_frsize
        self.last_free_bytes = free
        return free

    def known_free_bytes(self) -> int | None:
        """Free bytes now, once the data root is known (a cheap ``statvfs``), else ``None``."""
        facts = self._facts
        if facts is None or facts.data_root is None:
            return None
        try:
            stats = os.statvfs(facts.data_root)
        except OSError:
            return None
        return stats.f_bavail * stats.f_frsize

    def check_before_pull(
        self, client: docker.DockerClient, image: ImageReference, credentials: dict[str, str] | None
    ) -> None:
        """Raise ``PermanentCommandError("not enough space: need X, have Y")`` when the pull
        cannot fit; skip (a debug line) when either number cannot be known."""
        if not self._settings.disk_check:
            return
        free = self.free_bytes(client)
        if free is None:
            log.debug("disk_check_skipped", image=str(image), reason="the engine's data root is not visible")
            return
        try:
            size = image_download_size(image, credentials, secure=self._secure(client, image.registry))
        except SizeUnknown as err:
            log.debug("disk_check_skipped", image=str(image), reason=str(err))
            return
        need = size * UNPACK_FACTOR
        if need > free:
            root = self.facts(client).data_root
            log.warning("disk_check_refused", image=str(image), need_bytes=need, free_bytes=free)
            raise PermanentCommandError(
                f"not enough space: need {human_bytes(need)}, have {human_bytes(free)} "
                f"(pulling {image} into {root})"
            )
        log.debug("disk_check_passed", image=str(image), need_bytes=need, free_bytes=free)

    def _secure(self, client: docker.DockerClient, registry: str) -> bool:
        """Docker's own rule: the registry's index config, else its address against the
        insecure CIDRs (loopback by default)."""
        facts = self.facts(client)
        if registry in facts.index_secure:
            return facts.index_secure[registry]
        host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry
        host = host.strip("[]")
        if host == "localhost":
            host = "127.0.0.1"
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return True
        return not any(address in cidr for cidr in facts.insecure_cidrs)
