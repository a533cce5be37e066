"""Self-update of the agent's own container (§13.2, §14.7), with rollback.

``begin_update`` runs while the old agent keeps serving: find the own container, pull the new tag of
the same repository, rename the own container to ``<name>-update``, create the successor under the
original name with the old container's **full** create configuration (env, mounts, network mode and
networks, labels, restart policy, extra hosts, log config, …; §17 #23) and start it. It then waits:

* ``close{SELF_DESTRUCT}`` arrives (the platform accepted the successor) → ``self_destruct`` removes
  the old container (this process ends with it) and ``begin_update`` returns;
* the successor exits, or the deadline passes first → rollback: the successor is removed, the old
  name restored, and ``UpdateRefused`` says why (the agent sends it as ``AbortUpdate``).

Values that would collide while both agents run — fixed host ports, a static IP or MAC address —
make the update refuse up front instead of half-copying the configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import docker
import docker.errors
import requests.exceptions
import structlog

from berth.errors import UpdateRefused
from berth.imagetag import check_update_tag
from berth.runtimes.docker.probe import own_container_hints
from berth.settings import DockerSettings

log = structlog.get_logger("berth.selfupdate")

UPDATE_SUFFIX: Final = "-update"
POLL_INTERVAL_S: Final = 1.0
# Roll back a little before the platform's own update window ends, so the AbortUpdate reaches it
# while the node is still "updating" and the reason is shown (10 % of the window, at most 10 s).
DEADLINE_MARGIN_MAX_S: Final = 10.0
CLIENT_TIMEOUT_S: Final = 120
DISCOVERY_TIMEOUT_S: Final = 3
# Docker 20.10 and Podman 4 speak 1.41 and newer engines still accept it; a fixed version also
# skips the SDK's version probe, which leaks its socket when the engine is down.
API_VERSION: Final = "1.41"
# Config keys whose value comes from the image unless the container overrode it.
_IMAGE_DEFAULTS: Final = ("Cmd", "Entrypoint", "Healthcheck", "WorkingDir", "User", "StopSignal", "Shell")
# Config keys the engine fills in or that must not be reused by a second container.
_DROPPED_CONFIG: Final = ("Image", "Hostname", "Domainname", "MacAddress", "ArgsEscaped", "OnBuild")
_DEFAULT_NETWORK_MODES: Final = ("default", "bridge", "host", "none")


# -- finding the own container (§14.7) -------------------------------------------------------------


# -- the successor's create configuration -----------------------------------------------------------


def new_image_reference(current: str, tag: str) -> str:
    """The same repository with ``tag``: the tag follows the last ``:`` after the last ``/``; a
    digest is dropped."""
    check_update_tag(tag)
    name = current.split("@", 1)[0]
    if name.rfind(":") > name.rfind("/"):
        name = name[: name.rfind(":")]
    return f"{name}:{tag}"


def _without_image_entries(values: list[str] | None, image_values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    inherited = set(image_values or [])
    return [v for v in values if v not in inherited]


def _without_image_keys(
    values: Mapping[str, Any] | None, image_values: Mapping[str, Any] | None
) -> dict[str, Any]:
    inherited = dict(image_values or {})
    return {k: v for k, v in (values or {}).items() if k not in inherited or inherited[k] != v}


def collisions(container: Mapping[str, Any]) -> list[str]:
    """Settings two running agents cannot share; an update with any of them is refused."""
    problems: list[str] = []
    host = container.get("HostConfig") or {}
    for port, bindings in (host.get("PortBindings") or {}).items():
        for binding in bindings or []:
            if str(binding.get("HostPort") or "") not in ("", "0"):
                problems.append(f"host port {binding['HostPort']} ({port})")
    if (container.get("Config") or {}).get("MacAddress"):
        problems.append("a fixed MAC address")
    for name, endpoint in ((container.get("NetworkSettings") or {}).get("Networks") or {}).items():
        ipam = endpoint.get("IPAMConfig") or {}
        if ipam.get("IPv4Address") or ipam.get("IPv6Address"):
            problems.append(f"a static IP address on network {name}")
    return problems


def successor_config(
    container: Mapping[str, Any], old_image: Mapping[str, Any], new_image: str
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The create body for the successor and the extra networks to connect before it starts.

    Everything the operator gave the old container is kept: ``HostConfig`` as a whole (binds,
    mounts, restart policy, extra hosts, network mode, log config, capabilities, resources, …),
    env, labels and user-set config. What the old *image* contributed (its env, labels, command,
    healthcheck, …) is left out so the new image's values apply. Anonymous volumes are carried over
    by name, so data in them survives. The engine-assigned hostname is not reused."""
    config = dict(container.get("Config") or {})
    image_config = old_image.get("Config") or {}
    short_id = str(container.get("Id", ""))[:12]
    explicit_hostname = config.get("Hostname") not in (None, "", short_id)
    host = dict(container.get("HostConfig") or {})
    network_mode = str(host.get("NetworkMode") or "default")

    body: dict[str, Any] = {k: v for k, v in config.items() if k not in _DROPPED_CONFIG}
    body["Image"] = new_image
    if explicit_hostname and network_mode != "host" and not network_mode.startswith("container:"):
        body["Hostname"] = config["Hostname"]
        body["Domainname"] = config.get("Domainname", "")
    body["Env"] = _without_image_entries(config.get("Env"), image_config.get("Env"))
    body["Labels"] = _without_image_keys(config.get("Labels"), image_config.get("Labels"))
    body["ExposedPorts"] = _without_image_keys(config.get("ExposedPorts"), image_config.get("ExposedPorts"))
    body["Volumes"] = _without_image_keys(config.get("Volumes"), image_config.get("Volumes"))
    for key in _IMAGE_DEFAULTS:
        if key in body and body[key] == image_config.get(key):
            del body[key]

    host.pop("ContainerIDFile", None)  # an existing cid file would make the create fail
    binds = list(host.get("Binds") or [])
    bound = {b.split(":")[1] for b in binds if b.count(":") >= 1}
    bound |= {str(m.get("Target")) for m in host.get("Mounts") or []}
    for mount in container.get("Mounts") or []:
        if mount.get("Type") == "volume" and mount.get("Destination") not in bound and mount.get("Name"):
            mode = "rw" if mount.get("RW", True) else "ro"
            binds.append(f"{mount['Name']}:{mount['Destination']}:{mode}")
    host["Binds"] = binds or None
    body["HostConfig"] = host

    extra: dict[str, dict[str, Any]] = {}
    if network_mode not in _DEFAULT_NETWORK_MODES and not network_mode.startswith("container:"):
        networks = (container.get("NetworkSettings") or {}).get("Networks") or {}
        endpoints = {name: _endpoint(endpoint, short_id) for name, endpoint in networks.items()}
        primary = network_mode if network_mode in endpoints else next(iter(endpoints), None)
        if primary is not None:
            body["NetworkingConfig"] = {"EndpointsConfig": {primary: endpoints.pop(primary)}}
        extra = endpoints
    return body, extra


def _endpoint(endpoint: Mapping[str, Any], short_id: str) -> dict[str, Any]:
    aliases = [a for a in endpoint.get("Aliases") or [] if a != short_id]
    result: dict[str, Any] = {"Aliases": aliases or None, "Links": endpoint.get("Links")}
    if endpoint.get("DriverOpts"):
        result["DriverOpts"] = endpoint["DriverOpts"]
    return result


# -- the updater -----------------------------------------------------------------------------------


@dataclass
class _Pending:
    own_id: str
    name: str
    aside_name: str
    successor_id: str
    image: str
    deadline: float
    accepted: asyncio.Event
    rolled_back: bool = False


class DockerSelfUpdater:
    """``berth.runtimes.base.SelfUpdater`` for an agent running in a Docker (or Podman) container."""

    def __init__(
        self,
        settings: DockerSettings,
        *,
        client_factory: Callable[[], docker.DockerClient] | None = None,
        own_container: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        """``own_container`` (a name or id) skips self-discovery; tests use it to act as the agent
        of a container they started."""
        self._settings = settings
        self._client_factory = client_factory or (
            lambda: docker.from_env(
                version=API_VERSION, timeout=CLIENT_TIMEOUT_S, environment=dict(self._environ)
            )
        )
        self._client: docker.DockerClient | None = None
        self._own_hint = own_container
        self._environ = os.environ if environ is None else environ
        self._own_name: str | None = None
        self._pending: _Pending | None = None
        self._settled: asyncio.Event | None = None
        self._busy = False

    # -- SelfUpdater ------------------------------------------------------------------------------

    def own_container_name(self) -> str | None:
        """The own container's name without the leading ``/`` (§17 #22), or ``None`` outside a
        container. The first call asks the engine once (a local inspect, milliseconds; bounded by
        a short timeout) and the answer is cached."""
        if self._own_name is None:
            try:
                client = docker.from_env(
                    version=API_VERSION, timeout=DISCOVERY_TIMEOUT_S, environment=dict(self._environ)
                )
                try:
                    found = self._find_own(client)
                finally:
                    client.close()
            except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as err:
                log.info("own_container_unknown", reason=str(err))
                return None
            if found is None:
                return None
            self._own_name = str(found["Name"]).lstrip("/")
        return self._own_name

    async def begin_update(self, tag: str, timeout_s: int) -> None:
        if self._busy:
            raise UpdateRefused("Update failed: an update is already in progress")
        self._busy = True
        try:
            accepted = asyncio.Event()
            self._settled = settled = asyncio.Event()
            try:
                pending = await asyncio.to_thread(self._start_successor, tag, timeout_s, accepted)
                self._pending = pending
            finally:
                settled.set()
            log.info(
                "update_successor_started",
                container=pending.name,
                image=pending.image,
                aside=pending.aside_name,
                timeout_s=timeout_s,
            )
            try:
                await self._wait_for_acceptance(pending)
            except asyncio.CancelledError:
                # The agent is shutting down mid-update: leave the old agent under its own name.
                if not pending.accepted.is_set() and not pending.rolled_back:
                    await asyncio.shield(asyncio.to_thread(self._roll_back, pending))
                raise
            finally:
                self._pending = None
        finally:
            self._busy = False

    async def self_destruct(self) -> bool:
        settled = self._settled
        if self._pending is None and self._busy and settled is not None:
            # The successor connects as soon as it runs, so SELF_DESTRUCT can arrive before the
            # thread that started it has returned: wait for that step to settle.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLIENT_TIMEOUT_S):
                    await settled.wait()
        pending = self._pending
        if pending is None or pending.accepted.is_set() or time.monotonic() >= pending.deadline:
            return False
        pending.accepted.set()
        log.info("update_accepted_removing_old_agent", container=pending.aside_name)
        # Removing the own container ends this process; when it returns, we were not inside it.
        await asyncio.to_thread(self._remove, pending.own_id)
        return True

    # -- steps (blocking, run in threads) ---------------------------------------------------------

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def _find_own(self, client: docker.DockerClient) -> dict[str, Any] | None:
        candidates = [self._own_hint] if self._own_hint else own_container_hints(self._environ)
        for candidate in candidates:
            try:
                attrs: dict[str, Any] = client.api.inspect_container(candidate)
            except docker.errors.NotFound:
                continue
            return attrs
        return None

    def _start_successor(self, tag: str, timeout_s: int, accepted: asyncio.Event) -> _Pending:
        try:
            own = self._find_own(self.client)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as err:
            raise UpdateRefused(f"Update failed: the container engine is not reachable ({err})") from err
        if own is None:
            raise UpdateRefused(
                "Update failed: the agent cannot find its own container (an agent outside a "
                "container, e.g. a systemd install, is updated by re-running its install script)"
            )
        name = str(own["Name"]).lstrip("/")
        self._own_name = self._own_name or name
        problems = collisions(own)
        if problems:
            raise UpdateRefused(
                "Update refused: the agent container uses "
                + ", ".join(problems)
                + ", which two agents cannot hold at once; re-run the install script instead"
            )
        image = new_image_reference(str(own["Config"]["Image"]), tag)
        new_image_id = self._pull(image)
        if new_image_id == own["Image"]:
            raise UpdateRefused(f"Update failed: {image} is the image already running")
        old_image = self._inspect_image(str(own["Image"]))
        body, extra_networks = successor_config(own, old_image, image)

        aside = self._free_name(name + UPDATE_SUFFIX)
        self._call("rename the agent container", self.client.api.rename, own["Id"], aside)
        try:
            created = self._call(
                "create the new agent container", self.client.api.create_container_from_config, body, name
            )
            successor_id = str(created["Id"])
        except UpdateRefused:
            self._rename_back(own["Id"], name)
            raise
        pending = _Pending(
            own_id=str(own["Id"]),
            name=name,
            aside_name=aside,
            successor_id=successor_id,
            image=image,
            deadline=time.monotonic() + timeout_s - min(DEADLINE_MARGIN_MAX_S, timeout_s * 0.1),
            accepted=accepted,
        )
        try:
            for network, endpoint in extra_networks.items():
                self._call(
                    f"connect the new agent to network {network}",
                    self.client.api.connect_container_to_network,
                    successor_id,
                    network,
                    aliases=endpoint.get("Aliases"),
                    links=endpoint.get("Links"),
                    driver_opt=endpoint.get("DriverOpts"),
                )
            self._call("start the new agent container", self.client.api.start, successor_id)
        except UpdateRefused:
            self._roll_back(pending)
            raise
        return pending

    def _pull(self, image: str) -> str:
        """Pull ``image`` (with the configured credentials); a failed pull is fine when the image
        is already present locally (air-gapped hosts, locally built tags)."""
        auth = None
        if self._settings.update_registry_user:
            auth = {
                "username": self._settings.update_registry_user,
                "password": self._settings.update_registry_password,
            }
        repository, _, tag = image.rpartition(":")
        try:
            for event in self.client.api.pull(
                repository, tag=tag, auth_config=auth, stream=True, decode=True
            ):
                if isinstance(event, dict) and event.get("error"):
                    raise docker.errors.APIError(str(event["error"]), explanation=str(event["error"]))
        except docker.errors.APIError as err:
            text = _explanation(err).lower()
            try:
                return str(self.client.images.get(image).id)
            except docker.errors.NotFound:
                pass
            if "unauthorized" in text or "no basic auth" in text or "authentication required" in text:
                raise UpdateRefused("Update failed: registry access: unauthorized") from err
            if "not found" in text or "manifest unknown" in text:
                raise UpdateRefused("Update failed: image cannot be found") from err
            raise UpdateRefused(f"Update failed: pulling {image}: {text}") from err
        except (docker.errors.DockerException, requests.exceptions.RequestException) as err:
            raise UpdateRefused(f"Update failed: the container engine is not reachable ({err})") from err
        log.info("update_image_pulled", image=image)
        return str(self._inspect_image(image)["Id"])

    def _inspect_image(self, image: str) -> dict[str, Any]:
        try:
            attrs: dict[str, Any] = self.client.images.get(image).attrs
        except docker.errors.NotFound as err:
            raise UpdateRefused("Update failed: image cannot be found") from err
        return attrs

    def _free_name(self, base: str) -> str:
        candidate, n = base, 0
        while True:
            try:
                self.client.api.inspect_container(candidate)
            except docker.errors.NotFound:
                return candidate
            n += 1
            candidate = f"{base}{n}"

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except docker.errors.APIError as err:
            raise UpdateRefused(f"Update failed: cannot {what}: {_explanation(err)}") from err
        except (docker.errors.DockerException, requests.exceptions.RequestException) as err:
            raise UpdateRefused(f"Update failed: cannot {what}: the engine is not reachable ({err})") from err

    async def _wait_for_acceptance(self, pending: _Pending) -> None:
        while True:
            remaining = pending.deadline - time.monotonic()
            if remaining <= 0:
                await asyncio.to_thread(self._roll_back, pending)
                raise UpdateRefused(
                    f"Update failed: the new agent ({pending.image}) was not accepted by the platform "
                    "before the deadline; rolled back to the running agent"
                )
            try:
                await asyncio.wait_for(pending.accepted.wait(), timeout=min(POLL_INTERVAL_S, remaining))
            except TimeoutError:
                pass
            else:
                return
            problem = await asyncio.to_thread(self._successor_problem, pending)
            if problem is not None and not pending.accepted.is_set():
                await asyncio.to_thread(self._roll_back, pending)
                raise UpdateRefused(
                    f"Update failed: the new agent ({pending.image}) {problem} before the platform "
                    "accepted it; rolled back to the running agent"
                )

    def _successor_problem(self, pending: _Pending) -> str | None:
        try:
            state = self.client.api.inspect_container(pending.successor_id)["State"]
        except docker.errors.NotFound:
            return "was removed"
        except (docker.errors.DockerException, requests.exceptions.RequestException) as err:
            log.warning("update_successor_inspect_failed", error=str(err))
            return None
        if state.get("Restarting") or state.get("Status") in ("exited", "dead"):
            return f"exited with code {state.get('ExitCode')}"
        return None

    def _roll_back(self, pending: _Pending) -> None:
        pending.rolled_back = True
        log.warning("update_rolling_back", successor=pending.successor_id[:12], image=pending.image)
        self._remove(pending.successor_id)
        self._rename_back(pending.own_id, pending.name)

    def _remove(self, container_id: str) -> None:
        try:
            self.client.api.remove_container(container_id, force=True)
        except docker.errors.NotFound:
            pass
        except (docker.errors.DockerException, requests.exceptions.RequestException) as err:
            log.error("update_remove_failed", container=container_id[:12], error=str(err))

    def _rename_back(self, own_id: str, name: str) -> None:
        try:
            self.client.api.rename(own_id, name)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as err:
            log.error("update_rename_back_failed", name=name, error=str(err))


def _explanation(err: docker.errors.APIError) -> str:
    text = err.explanation
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return str(text or err)
