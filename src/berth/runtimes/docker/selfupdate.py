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
from typing import Any, Final, TypeVar

import docker
import structlog

from berth.errors import InvalidSpec, NotFound, RuntimeFailure, UpdateRefused
from berth.imageref import ImageReference, with_tag
from berth.model import RegistryAuth
from berth.runtimes.common.deadlines import event_set
from berth.runtimes.docker.engine import Engine
from berth.runtimes.docker.probe import own_container_hints
from berth.runtimes.docker.pull import auth_config, local_image, pull_image, refusal
from berth.settings import DockerSettings

log = structlog.get_logger("berth.selfupdate")
T = TypeVar("T")

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

    def __init__(self, settings: DockerSettings, *, own_container: str | None = None) -> None:
        """``own_container`` (a name or id) skips self-discovery; tests use it to act as the agent
        of a container they started. Every engine call goes through an ``Engine``, the runtime's
        way to the SDK (its client, threads and error translation), with a fixed API version."""
        self._settings = settings
        self._engine = Engine(api_version=API_VERSION, timeout_s=CLIENT_TIMEOUT_S)
        self._own_hint = own_container
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
            probe = Engine(api_version=API_VERSION, timeout_s=DISCOVERY_TIMEOUT_S)
            try:
                found = self._find_own(probe)
            except RuntimeFailure as err:
                log.info("own_container_unknown", reason=str(err))
                return None
            finally:
                probe.close()
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
                pending = await self._engine.threads.call(self._start_successor, tag, timeout_s, accepted)
                self._pending = pending
            finally:
                settled.set()
            update_log = log.bind(container=pending.name, image=pending.image)
            update_log.info("update_successor_started", aside=pending.aside_name, timeout_s=timeout_s)
            try:
                await self._wait_for_acceptance(pending)
            except asyncio.CancelledError:
                # The agent is shutting down mid-update: leave the old agent under its own name.
                if not pending.accepted.is_set() and not pending.rolled_back:
                    await asyncio.shield(self._engine.threads.call(self._roll_back, pending))
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
        await self._engine.threads.call(self._remove, pending.own_id)
        return True

    # -- steps (blocking, run in threads) ---------------------------------------------------------

    def _find_own(self, engine: Engine) -> dict[str, Any] | None:
        candidates = [self._own_hint] if self._own_hint else own_container_hints(os.environ)
        for candidate in candidates:
            try:
                return engine.run(f"inspect {candidate}", _inspector(candidate))
            except NotFound:
                continue
        return None

    def _start_successor(self, tag: str, timeout_s: int, accepted: asyncio.Event) -> _Pending:
        try:
            own = self._find_own(self._engine)
        except RuntimeFailure as err:
            raise UpdateRefused(f"Update failed: cannot find the agent's own container: {err}") from err
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
        image = with_tag(str(own["Config"]["Image"]), tag)
        new_image_id = self._pull(image)
        if new_image_id == own["Image"]:
            raise UpdateRefused(f"Update failed: {image} is the image already running")
        old_image = self._inspect_image(str(own["Image"]))
        body, extra_networks = successor_config(own, old_image, image)

        aside = self._free_name(name + UPDATE_SUFFIX)
        self._step("rename the agent container", lambda c: c.api.rename(own["Id"], aside))
        try:
            created = self._step(
                "create the new agent container",
                lambda c: c.api.create_container_from_config(body, name),  # type: ignore[no-untyped-call]
            )
        except UpdateRefused:
            self._rename_back(own["Id"], name)
            raise
        pending = _Pending(
            own_id=str(own["Id"]),
            name=name,
            aside_name=aside,
            successor_id=str(created["Id"]),
            image=image,
            deadline=time.monotonic() + timeout_s - min(DEADLINE_MARGIN_MAX_S, timeout_s * 0.1),
            accepted=accepted,
        )
        try:
            self._connect_and_start(pending.successor_id, extra_networks)
        except UpdateRefused:
            self._roll_back(pending)
            raise
        return pending

    def _connect_and_start(self, successor_id: str, extra_networks: Mapping[str, dict[str, Any]]) -> None:
        for network, endpoint in extra_networks.items():
            self._step(
                f"connect the new agent to network {network}", _connector(successor_id, network, endpoint)
            )
        self._step("start the new agent container", lambda c: c.api.start(successor_id))

    def _pull(self, image: str) -> str:
        """Pull ``image`` (with the configured credentials) with the runtime's pull; a failed pull
        is fine when the image is already present locally (air-gapped hosts, locally built tags)."""
        try:
            reference = ImageReference.parse(image)
        except InvalidSpec as err:
            raise UpdateRefused(f"Update failed: {err}") from err
        auth = RegistryAuth(
            name="update",
            url=reference.registry,
            user=self._settings.update_registry_user,
            password=self._settings.update_registry_password,
        )
        credentials = auth_config(auth, reference)
        try:
            self._engine.run(f"pull {image}", lambda c: pull_image(c, reference, credentials))
        except RuntimeFailure as err:
            local = self._engine.run(f"inspect image {image}", lambda c: local_image(c, image))
            if local is not None:
                return str(local["Id"])
            match refusal(err):
                case ("access", _):
                    raise UpdateRefused("Update failed: registry access: unauthorized") from err
                case ("missing", _):
                    raise UpdateRefused("Update failed: image cannot be found") from err
                case _:
                    raise UpdateRefused(f"Update failed: {err}") from err
        log.info("update_image_pulled", image=image)
        return str(self._inspect_image(image)["Id"])

    def _inspect_image(self, image: str) -> dict[str, Any]:
        attrs = self._step(f"inspect image {image}", lambda c: local_image(c, image))
        if attrs is None:
            raise UpdateRefused("Update failed: image cannot be found")
        return attrs

    def _free_name(self, base: str) -> str:
        candidate, n = base, 0
        while True:
            try:
                self._engine.run(f"inspect {candidate}", _inspector(candidate))
            except NotFound:
                return candidate
            except RuntimeFailure as err:
                raise UpdateRefused(f"Update failed: cannot {err}") from err
            n += 1
            candidate = f"{base}{n}"

    def _step(self, what: str, fn: Callable[[docker.DockerClient], T]) -> T:
        """One engine call, translated by the runtime; a failure refuses the update (the agent
        sends it as AbortUpdate)."""
        try:
            return self._engine.run(what, fn)
        except RuntimeFailure as err:
            raise UpdateRefused(f"Update failed: cannot {err}") from err

    async def _wait_for_acceptance(self, pending: _Pending) -> None:
        while True:
            remaining = pending.deadline - time.monotonic()
            if remaining <= 0:
                await self._engine.threads.call(self._roll_back, pending)
                raise UpdateRefused(
                    f"Update failed: the new agent ({pending.image}) was not accepted by the platform "
                    "before the deadline; rolled back to the running agent"
                )
            if await event_set(pending.accepted, min(POLL_INTERVAL_S, remaining)):
                return
            problem = await self._engine.threads.call(self._successor_problem, pending)
            if problem is not None and not pending.accepted.is_set():
                await self._engine.threads.call(self._roll_back, pending)
                raise UpdateRefused(
                    f"Update failed: the new agent ({pending.image}) {problem} before the platform "
                    "accepted it; rolled back to the running agent"
                )

    def _successor_problem(self, pending: _Pending) -> str | None:
        try:
            state = self._engine.run("inspect the new agent", _inspector(pending.successor_id))["State"]
        except NotFound:
            return "was removed"
        except RuntimeFailure as err:
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
            self._engine.run(
                f"remove {container_id[:12]}", lambda c: c.api.remove_container(container_id, force=True)
            )
        except NotFound:
            pass
        except RuntimeFailure as err:
            log.error("update_remove_failed", container=container_id[:12], error=str(err))

    def _rename_back(self, own_id: str, name: str) -> None:
        try:
            self._engine.run(f"rename back to {name}", lambda c: c.api.rename(own_id, name))
        except RuntimeFailure as err:
            log.error("update_rename_back_failed", name=name, error=str(err))


def _inspector(container: str) -> Callable[[docker.DockerClient], dict[str, Any]]:
    return lambda client: client.api.inspect_container(container)


def _connector(
    container: str, network: str, endpoint: Mapping[str, Any]
) -> Callable[[docker.DockerClient], None]:
    return lambda client: client.api.connect_container_to_network(
        container,
        network,
        aliases=endpoint.get("Aliases"),
        links=endpoint.get("Links"),
        driver_opt=endpoint.get("DriverOpts"),
    )
