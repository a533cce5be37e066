"""What the platform's commands may touch on a Docker node, and what an inspect may show.

* The agent never stops, deletes or replaces its own container, nor the Traefik container it
  manages: that would cut the node off (or its routing) with no way back from the platform.
* ``BERTH_MANAGED_ONLY=true`` restricts commands to containers Berth created (``io.berth.managed``).
* ``containerInspect`` never returns a secret in clear: the values of the keys listed in the
  container's ``org.dyrectorio.secret.keys`` label are masked everywhere they appear.

Blocking parts (finding the own container) run in threads, like every SDK call.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import docker
import docker.errors

from berth.errors import PermanentCommandError
from berth.model import MANAGED_LABEL, SECRET_KEYS_LABEL
from berth.runtimes.docker.traefik import ROLE_LABEL, TRAEFIK_NAME, TRAEFIK_ROLE

MASK: Final = "******"
AGENT_SECRET_ENV: Final = frozenset({"GRPC_TOKEN", "BERTH_UPDATE_REGISTRY_PASSWORD"})
_CONTAINER_ID: Final = re.compile(r"[0-9a-f]{64}")
# A value this short would mask unrelated text if replaced inside longer strings; it is masked
# where it is the whole string (and always in its own ``KEY=value`` entry).
_MIN_SUBSTRING_MASK: Final = 4


def _labels(attrs: Mapping[str, Any]) -> Mapping[str, str]:
    return (attrs.get("Config") or {}).get("Labels") or {}


def _name(attrs: Mapping[str, Any]) -> str:
    return str(attrs.get("Name", "")).lstrip("/")


class ContainerGuard:
    """Refuses commands on protected containers; masks secrets in inspect documents."""

    def __init__(
        self,
        *,
        traefik_enabled: bool,
        managed_only: bool,
        own_container: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        """``own_container`` (a name or id) skips self-discovery; tests use it to act as the agent
        of a container they started."""
        self._own_hint = own_container
        self._environ = os.environ if environ is None else environ
        self._own_id: str | None = None
        self._resolved = False
        self._traefik_enabled = traefik_enabled
        self._managed_only = managed_only

    def resolve_own(self, client: docker.DockerClient) -> str | None:
        """Blocking: the own container's id, asked once (``None`` outside a container)."""
        if not self._resolved:
            candidates = [self._own_hint] if self._own_hint else own_container_candidates(self._environ)
            for candidate in candidates:
                try:
                    self._own_id = str(client.api.inspect_container(candidate)["Id"])
                except docker.errors.NotFound:
                    continue
                break
            self._resolved = True
        return self._own_id

    def check_now(self, client: docker.DockerClient, attrs: Mapping[str, Any], action: str) -> None:
        """Blocking: ``check`` with the own container resolved on the way."""
        self.check(attrs, action, self.resolve_own(client))

    def protected_reason(self, attrs: Mapping[str, Any], own_id: str | None) -> str | None:
        if own_id is not None and attrs.get("Id") == own_id:
            return "it is the agent's own container"
        is_traefik = _labels(attrs).get(ROLE_LABEL) == TRAEFIK_ROLE or (
            self._traefik_enabled and _name(attrs) == TRAEFIK_NAME
        )
        if is_traefik:
            return "it is the Traefik container the agent manages"
        return None

    def check(self, attrs: Mapping[str, Any], action: str, own_id: str | None) -> None:
        """Raise ``PermanentCommandError`` when ``action`` must not touch this container."""
        reason = self.protected_reason(attrs, own_id)
        if reason is not None:
            raise PermanentCommandError(f"refusing to {action} {_name(attrs)}: {reason}")
        if self._managed_only and _labels(attrs).get(MANAGED_LABEL) != "true":
            raise PermanentCommandError(
                f"refusing to {action} {_name(attrs)}: Berth did not create it "
                f"(BERTH_MANAGED_ONLY is on; no {MANAGED_LABEL}=true label)"
            )


def own_container_candidates(environ: Mapping[str, str]) -> list[str]:
    """Blocking: where the agent may find itself (cgroup, mountinfo, ``HOSTNAME``)."""
    from berth.runtimes.docker.probe import container_id_candidates

    def read(path: str) -> str:
        try:
            return Path(path).read_text(errors="replace")
        except OSError:
            return ""

    candidates = container_id_candidates(
        read("/proc/self/cgroup"), read("/proc/self/mountinfo"), environ.get("HOSTNAME")
    )
    exact = [c for c in candidates if _CONTAINER_ID.fullmatch(c)]
    if exact:
        return exact
    # HOSTNAME names the container only inside one; on a host it could match a workload's name.
    in_container = Path("/.dockerenv").exists() or Path("/run/.containerenv").exists()
    return candidates if in_container else []


def mask_secrets(attrs: dict[str, Any]) -> dict[str, Any]:
    """A copy of an inspect document in which the values of the container's secret keys (from
    its ``Config.Env``) are replaced by ``******`` wherever they appear."""
    keys = {key for key in str(_labels(attrs).get(SECRET_KEYS_LABEL, "")).split(",") if key}
    keys |= AGENT_SECRET_ENV  # an inspect of the agent's own container (dagent's name) shows no token
    values: set[str] = set()
    for entry in (attrs.get("Config") or {}).get("Env") or []:
        key, sep, value = str(entry).partition("=")
        if sep and key in keys and value:
            values.add(value)
    if not values:
        return attrs
    long_values = sorted((v for v in values if len(v) >= _MIN_SUBSTRING_MASK), key=len, reverse=True)

    def scrub(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: scrub(v) for k, v in node.items()}
        if isinstance(node, list):
            return [scrub(v) for v in node]
        if isinstance(node, str):
            key, sep, _ = node.partition("=")
            if sep and key in keys:
                return f"{key}={MASK}"
            if node in values:
                return MASK
            for secret in long_values:
                node = node.replace(secret, MASK)
            return node
        return node

    masked: dict[str, Any] = scrub(attrs)
    return masked
