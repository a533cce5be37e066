"""Pull-if-newer with the request's own credentials (no ``docker login`` state), pull progress,
and the image's labels read after the pull (§6.2, §6.3 #8, §17 #12 #15)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import docker
import docker.errors
import structlog

from berth.errors import PermanentCommandError, RuntimeFailure, TemporaryCommandError
from berth.imageref import DOCKER_HUB, ImageReference, local_has_digest
from berth.model import LogLevel, RegistryAuth
from berth.runtimes.base import DeployEvents
from berth.runtimes.docker.disk import enospc_failure
from berth.runtimes.docker.engine import Engine, explanation, translated
from berth.runtimes.docker.health_gate import health_check_of

log = structlog.get_logger(__name__)

PROGRESS_INTERVAL_S: Final = 0.5
_LAYER_EVENTS: Final = frozenset({"Pulling fs layer", "Waiting", "Pull complete", "Already exists"})
_AUTH_WORDS: Final = ("unauthorized", "authentication required", "denied", "no basic auth credentials")
_UNREACHABLE_WORDS: Final = (
    "no such host",
    "connection refused",
    "i/o timeout",
    "dial tcp",
    "tls handshake timeout",
    "network is unreachable",
    "server misbehaving",
)
_QUEUE_SIZE: Final = 256
PullRefusal = Literal["access", "missing"]


def auth_config(auth: RegistryAuth | None, image: ImageReference) -> dict[str, str] | None:
    """The request's credentials for the image's own registry host (§6.1), when both are set."""
    if auth is None or not auth.user or not auth.password:
        return None
    server = "https://index.docker.io/v1/" if image.registry == DOCKER_HUB else image.registry
    return {"username": auth.user, "password": auth.password, "serveraddress": server}


@dataclass(slots=True)
class PullOutcome:
    image_id: str
    labels: Mapping[str, str]
    pulled: bool
    notes: list[str] = field(default_factory=list)
    # The image declares a HEALTHCHECK: a container from it has a check even when the request
    # sets none, so the deploy inspects it after its start to read the effective one.
    healthcheck: bool = False


@dataclass(slots=True)
class _Note:
    kind: str  # "log" | "progress"
    text: str
    fraction: float = 0.0
    level: LogLevel = LogLevel.INFO


# Called in the pull's thread right before a pull; raises to refuse it (the disk check).
BeforePull = Callable[[docker.DockerClient, ImageReference, dict[str, str] | None], None]


class ImagePuller:
    def __init__(self, engine: Engine, before_pull: BeforePull | None = None) -> None:
        self._engine = engine
        self._before_pull = before_pull

    async def ensure(
        self,
        image: ImageReference,
        auth: RegistryAuth | None,
        events: DeployEvents,
        workload_id: str,
    ) -> PullOutcome:
        """Make the image present and current; report pull progress for ``workload_id``."""
        loop = asyncio.get_running_loop()
        notes: asyncio.Queue[_Note | None] = asyncio.Queue(_QUEUE_SIZE)

        def offer(note: _Note | None) -> None:
            def put() -> None:
                try:
                    notes.put_nowait(note)
                except asyncio.QueueFull:
                    if note is None or note.kind == "progress":
                        notes.get_nowait()  # make room: the end marker and progress matter most
                        notes.put_nowait(note)

            loop.call_soon_threadsafe(put)

        credentials = auth_config(auth, image)

        def work() -> PullOutcome:
            try:
                return self._ensure_blocking(image, credentials, offer)
            finally:
                offer(None)

        job = asyncio.create_task(self._engine.threads.call(work), name=f"docker-pull-{image}")
        try:
            while (note := await notes.get()) is not None:
                if note.kind == "progress":
                    await events.progress(workload_id, note.text, note.fraction)
                else:
                    await events.log(note.level, note.text)
            return await job
        finally:
            if not job.done():
                job.cancel()  # the thread finishes on its own; its result is dropped
                await asyncio.gather(job, return_exceptions=True)

    # -- blocking part ------------------------------------------------------------------------

    def _ensure_blocking(
        self, image: ImageReference, credentials: dict[str, str] | None, offer: Any
    ) -> PullOutcome:
        client = self._engine.client()
        local = local_image(client, image)
        if local is not None and image.digest and local_has_digest(local, image, image.digest):
            return self._outcome(local, pulled=False)
        remote_digest: str | None = None
        check_problem = ""
        try:
            with translated(f"check {image} in its registry"):
                remote = client.api.inspect_distribution(  # type: ignore[no-untyped-call]
                    str(image), auth_config=credentials
                )
            remote_digest = str(remote.get("Descriptor", {}).get("digest", "")) or None
        except RuntimeFailure as err:
            # Only a refusal is final here: a missing image, or an engine without the
            # distribution endpoint (Podman), falls back to the pull, which says what is wrong.
            classified = _classify(image, err, credentials)
            if classified is not None and "refused access" in str(classified):
                raise classified from err
            check_problem = str(err)
        if local is not None and remote_digest and local_has_digest(local, image, remote_digest):
            return self._outcome(local, pulled=False)
        if self._before_pull is not None and not check_problem:  # a registry that answered
            self._before_pull(client, image, credentials)
        try:
            pull_image(client, image, credentials, offer)
        except RuntimeFailure as err:
            classified = _classify(image, err, credentials)
            if classified is not None:
                raise classified from err
            if local is not None and _unreachable(str(err)):
                outcome = self._outcome(local, pulled=False)
                outcome.notes.append(
                    f"Registry of {image} is not reachable ({check_problem or err}); "
                    f"using the local image {outcome.image_id[:19]}"
                )
                return outcome
            raise
        pulled = local_image(client, image)
        if pulled is None:
            raise PermanentCommandError(f"image {image} is missing after its pull")
        return self._outcome(pulled, pulled=True)

    @staticmethod
    def _outcome(attrs: Mapping[str, Any], *, pulled: bool) -> PullOutcome:
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        return PullOutcome(
            image_id=str(attrs.get("Id", "")),
            labels=dict(labels),
            pulled=pulled,
            healthcheck=health_check_of(attrs) is not None,
        )


def local_image(client: docker.DockerClient, image: ImageReference | str) -> dict[str, Any] | None:
    """Blocking: the local image's inspect document, ``None`` when there is none."""
    with translated(f"inspect image {image}"):
        try:
            attrs: dict[str, Any] = client.api.inspect_image(str(image))  # type: ignore[no-untyped-call]
        except docker.errors.NotFound:  # ImageNotFound included
            return None
        return attrs


def pull_image(
    client: docker.DockerClient,
    image: ImageReference,
    credentials: dict[str, str] | None,
    offer: Callable[[_Note], None] = lambda _: None,
) -> None:
    """Blocking: pull ``image`` with ``credentials``, offering progress notes; a failure raises
    (``classify`` says whether it was a refusal or a missing image)."""
    offer(_Note("progress", "Pulling", 0.0))
    layers: dict[str, float] = {}
    last_sent = 0.0
    with translated(f"pull {image}"):
        stream = client.api.pull(
            image.name,
            tag=image.digest or image.tag,
            stream=True,
            decode=True,
            auth_config=credentials,
        )
        for message in stream:
            if "error" in message:
                detail = message.get("errorDetail", {}).get("message") or message["error"]
                raise enospc_failure(f"pull {image}", detail) or PermanentCommandError(
                    f"pull {image}: {detail}"
                )
            status = str(message.get("status", ""))
            layer = message.get("id")
            if not layer or status.startswith(("Pulling from", "Digest:", "Status:")):
                continue
            if status in _LAYER_EVENTS:
                done = status in ("Pull complete", "Already exists")
                layers[layer] = 1.0 if done else layers.get(layer, 0.0)
                finished = sum(1 for v in layers.values() if v >= 1.0)
                counts = f"layers: {finished}/{len(layers)}"
                offer(_Note("log", f"Pull {image} status: {counts}, {layer} {status}"))
            else:
                detail = message.get("progressDetail") or {}
                total, current = detail.get("total"), detail.get("current")
                if total and current is not None and status == "Downloading":
                    layers[layer] = min(0.99, current / total) * 0.9
                elif status == "Extracting" and total and current is not None:
                    layers[layer] = 0.9 + min(0.99, current / total) * 0.1
            now = time.monotonic()
            if layers and now - last_sent >= PROGRESS_INTERVAL_S:
                last_sent = now
                offer(_Note("progress", "Pulling", sum(layers.values()) / len(layers)))
    offer(_Note("progress", "Pull complete", 1.0))


def _unreachable(text: str) -> bool:
    lowered = text.lower()
    return any(word in lowered for word in _UNREACHABLE_WORDS)


def refusal(err: RuntimeFailure) -> tuple[PullRefusal, str] | None:
    """Whether a failed pull (or registry check) was the registry refusing access or not having
    the image, with the registry's words; ``None`` for anything else (a caller may fall back)."""
    if isinstance(err, TemporaryCommandError):
        return None
    cause = err.__cause__
    code = cause.status_code if isinstance(cause, docker.errors.APIError) else None
    text = explanation(cause) if isinstance(cause, docker.errors.APIError) else str(err)
    lowered = text.lower()
    if code in (401, 403) or any(word in lowered for word in _AUTH_WORDS):
        return "access", text
    if code == 404 or "manifest unknown" in lowered or "not found" in lowered:
        return "missing", text
    return None


def _classify(
    image: ImageReference, err: RuntimeFailure, credentials: dict[str, str] | None
) -> RuntimeFailure | None:
    """A clear error for credentials and missing images; ``None`` when the caller may fall back."""
    match refusal(err):
        case ("access", text):
            who = "the request's registry credentials" if credentials else "no registry credentials"
            return PermanentCommandError(f"registry refused access to {image} with {who}: {text}")
        case ("missing", text):
            return PermanentCommandError(f"image {image} does not exist in its registry: {text}")
        case _:
            return None
