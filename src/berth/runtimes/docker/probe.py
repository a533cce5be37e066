"""The engine check that runs before the agent's first ``Connect``, without the Docker SDK.

Importing the SDK (``docker`` → ``requests`` → ``urllib3``) is the largest single cost of the
agent's start-up, yet all the first ``Connect`` needs from the engine is "it answers, in a
supported version" and, in a container, the agent's own container name (``AgentInfo``). On the
usual local socket both are one or two tiny HTTP/1.0 requests, done here with asyncio alone; the
``DockerRuntime`` (and the SDK) is built when the first command needs it.

Only a local unix socket is probed this way (``DOCKER_HOST`` unset or ``unix://``); a TCP, TLS or
SSH engine is left to the SDK (``EngineProbe.for_environment`` returns ``None``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from berth.errors import PermanentCommandError, TemporaryCommandError
from berth.model import RuntimeInfo

DEFAULT_SOCKET: Final = "/var/run/docker.sock"
# Docker 20.10 and Podman 4 speak 1.41, newer engines still accept it (as the self-updater does).
API_VERSION: Final = "1.41"
REQUEST_TIMEOUT_S: Final = 5.0
MAX_ANSWER_BYTES: Final = 4 * 1024 * 1024
_MINIMUM: Final = {"docker": ((20, 10), (23, 0)), "podman": ((4, 0), (4, 4))}
_CONTAINER_ID: Final = re.compile(r"[0-9a-f]{64}")
_MOUNTED_ID: Final = re.compile(r"containers/([0-9a-f]{64})/(?:userdata/)?(?:hostname|hosts|resolv\.conf)\b")


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:2])


def runtime_info(version_answer: Mapping[str, Any]) -> RuntimeInfo:
    """The engine's ``/version`` answer checked against the supported versions (Docker ≥ 20.10,
    Podman ≥ 4.0); ``PermanentCommandError`` for an older one, a warning below the recommended."""
    components = {
        str(c.get("Name", "")): str(c.get("Version", "")) for c in version_answer.get("Components") or ()
    }
    podman = next((v for n, v in components.items() if "podman" in n.lower()), None)
    kind = "podman" if podman is not None else "docker"
    version = podman or str(version_answer.get("Version", ""))
    required, recommended = _MINIMUM[kind]
    found = _version_tuple(version)
    if found < required:
        raise PermanentCommandError(
            f"{kind} {version} is too old: berth needs {kind} {'.'.join(map(str, required))} or newer"
        )
    warnings: list[str] = []
    if found < recommended:
        warnings.append(f"{kind} {version} is older than the recommended {'.'.join(map(str, recommended))}")
    return RuntimeInfo(
        kind=kind,
        version=version,
        api_version=str(version_answer.get("ApiVersion", "")),
        warnings=tuple(warnings),
    )


def container_id_candidates(cgroup_text: str, mountinfo_text: str, hostname: str | None) -> list[str]:
    """Ways to name the own container, most exact first: the 64-hex id from ``/proc/self/cgroup``
    (cgroup v1: ``…/docker/<id>``, ``libpod-<id>.scope``), then from ``/proc/self/mountinfo`` (the
    engine bind-mounts ``…/containers/<id>/hostname``, Podman ``…/overlay-containers/<id>/userdata/
    hostname``; works with cgroup v2 and host networking), then ``$HOSTNAME``
    (a name or short id unless the container runs on the host network)."""
    found: list[str] = []
    first = cgroup_text.splitlines()[0] if cgroup_text.strip() else ""
    last_segment = first.rsplit("/", 1)[-1].removesuffix(".scope")
    last_segment = last_segment.removeprefix("docker-").removeprefix("libpod-")
    if _CONTAINER_ID.fullmatch(last_segment):
        found.append(last_segment)
    for line in mountinfo_text.splitlines():
        match = _MOUNTED_ID.search(line)
        if match and match.group(1) not in found:
            found.append(match.group(1))
            break
    if hostname and hostname not in found:
        found.append(hostname)
    return found


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def own_container_hints(environ: Mapping[str, str]) -> list[str]:
    """Blocking (reads two small /proc files): ``container_id_candidates`` of this process."""
    return container_id_candidates(
        _read("/proc/self/cgroup"), _read("/proc/self/mountinfo"), environ.get("HOSTNAME")
    )


class EngineProbe:
    """A few JSON requests to the engine's local socket, no SDK."""

    def __init__(self, socket_path: str, *, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self.socket_path = socket_path
        self._timeout_s = timeout_s

    @classmethod
    def for_environment(cls, environ: Mapping[str, str] | None = None) -> EngineProbe | None:
        """The probe of the engine the SDK's ``from_env`` would use, when that is a unix socket."""
        env = os.environ if environ is None else environ
        host = env.get("DOCKER_HOST", "").strip()
        if not host:
            return cls(DEFAULT_SOCKET)
        for scheme in ("unix://", "http+unix://"):
            if host.startswith(scheme):
                return cls(host.removeprefix(scheme))
        return None

    async def get(self, path: str) -> tuple[int, Any]:
        """``GET /v1.41<path>``: the status code and the decoded JSON body. Transport failures are
        ``TemporaryCommandError`` (the engine may still be starting)."""
        try:
            async with asyncio.timeout(self._timeout_s):
                return await self._get(path)
        except (OSError, TimeoutError, ValueError) as err:
            raise TemporaryCommandError(
                f"the container engine is not reachable at {self.socket_path} ({err or type(err).__name__})"
            ) from err

    async def _get(self, path: str) -> tuple[int, Any]:
        reader, writer = await asyncio.open_unix_connection(self.socket_path, limit=MAX_ANSWER_BYTES)
        try:
            writer.write(f"GET /v{API_VERSION}{path} HTTP/1.0\r\nHost: docker\r\n\r\n".encode("ascii"))
            answer = await reader.read(MAX_ANSWER_BYTES)  # HTTP/1.0: the engine closes after the body
            while not reader.at_eof():
                more = await reader.read(MAX_ANSWER_BYTES)
                if len(answer) + len(more) > MAX_ANSWER_BYTES:
                    raise ValueError("answer too large")
                answer += more
        finally:
            writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0].split()
        if len(status_line) < 2 or not status_line[1].isdigit():
            raise ValueError(f"not an HTTP answer: {head[:80]!r}")
        status = int(status_line[1])
        return status, json.loads(body) if body.strip() else None

    async def preflight(self) -> RuntimeInfo:
        """The engine answers ``/version`` in a supported version. (Not a container list: on an
        engine with many containers even ``limit=1`` costs it tens of milliseconds, and any
        refusal shows on the first command's own calls.)"""
        status, version = await self.get("/version")
        if status != 200 or not isinstance(version, dict):
            message = version.get("message", "") if isinstance(version, dict) else ""
            raise PermanentCommandError(f"engine version: {status} {message}".rstrip())
        return runtime_info(version)

    async def own_container_name(self, candidates: list[str]) -> str | None:
        """The name (without the leading ``/``) of the first candidate the engine knows."""
        for candidate in candidates:
            status, attrs = await self.get(f"/containers/{quote(candidate, safe='')}/json")
            if status == 200 and isinstance(attrs, dict):
                return str(attrs.get("Name", "")).lstrip("/") or None
        return None
