"""Where a workload's volumes live (§6.3 #4, §18): bind mounts under the data folder, MEM/TMP as
tmpfs. RO stays a writable bind mount unless ``strict_read_only_volumes`` is set, because the
platform sends RO when the user picked no type (a read-only default would break deployments)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final

from berth.errors import InvalidSpec
from berth.model import Volume, VolumeType
from berth.settings import DockerSettings

_QUANTITY: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtpe]?)(i?)(b?)\s*$", re.IGNORECASE)
_UNITS: Final = "kmgtpe"


def size_in_bytes(field: str, text: str) -> int:
    """``16k``/``16Ki``/``16kb`` = 16384, ``1G`` = 1 GiB, a plain integer = bytes (as Docker and
    Traefik read sizes); Kubernetes decimal suffixes are read as binary (never smaller)."""
    match = _QUANTITY.match(text)
    if not match:
        raise InvalidSpec(field, f"{text!r} is not a size")
    number, unit = float(match.group(1)), match.group(2).lower()
    factor = 1024 ** (_UNITS.index(unit) + 1) if unit else 1
    return int(number * factor)


@dataclass(frozen=True, slots=True)
class BindMount:
    name: str  # the volume's name as requested
    host_path: str  # the engine's view (DATA_MOUNT_PATH side)
    agent_path: Path | None  # the agent's view, created before use; None for absolute host paths
    target: str
    read_only: bool = False

    @property
    def bind_spec(self) -> str:
        return f"{self.host_path}:{self.target}:{'ro' if self.read_only else 'rw'}"


@dataclass(frozen=True, slots=True)
class MountPlan:
    binds: tuple[BindMount, ...] = ()
    tmpfs: tuple[tuple[str, str], ...] = ()  # (target, options)

    def ensure_directories(self) -> None:
        """Blocking: create the data folders this plan binds (run in a thread)."""
        for bind in self.binds:
            if bind.agent_path is not None:
                bind.agent_path.mkdir(parents=True, exist_ok=True)

    def bind_for_link(self, link_name: str) -> BindMount | None:
        """An init container's volume link resolves against the parent by last path segment."""
        for bind in self.binds:
            if PurePosixPath(bind.name).name == link_name or bind.name == link_name:
                return bind
        return None


def check_host_path(settings: DockerSettings, name: str) -> None:
    """With ``BERTH_ALLOWED_HOST_PATHS`` set, an absolute volume name binds only inside those."""
    allowed = settings.allowed_host_paths
    if not allowed:
        return
    path = PurePosixPath(name)
    if not any(path == PurePosixPath(root) or path.is_relative_to(root) for root in allowed):
        raise InvalidSpec(
            "volume name",
            f"host path {name!r} is outside BERTH_ALLOWED_HOST_PATHS ({':'.join(allowed)})",
        )


def plan_mounts(settings: DockerSettings, prefix: str, name: str, volumes: tuple[Volume, ...]) -> MountPlan:
    binds: list[BindMount] = []
    tmpfs: list[tuple[str, str]] = []
    for volume in volumes:
        if volume.type in (VolumeType.MEM, VolumeType.TMP):
            options = "rw"
            if volume.size:
                options += f",size={size_in_bytes('volume size', volume.size)}"
            tmpfs.append((volume.path, options))
            continue
        read_only = volume.type is VolumeType.RO and settings.strict_read_only_volumes
        if volume.name.startswith("/"):
            check_host_path(settings, volume.name)
            binds.append(BindMount(volume.name, volume.name, None, volume.path, read_only))
            continue
        relative = PurePosixPath(prefix, name, volume.name)
        host = PurePosixPath(settings.data_mount_path) / relative
        agent = Path(settings.internal_mount_path) / relative
        if not agent.resolve().is_relative_to(Path(settings.internal_mount_path).resolve()):
            raise InvalidSpec("volume name", f"{volume.name!r} escapes the data folder")
        binds.append(BindMount(volume.name, str(host), agent, volume.path, read_only))
    return MountPlan(tuple(binds), tuple(tmpfs))
