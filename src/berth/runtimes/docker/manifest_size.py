"""The download size of an image, read from its registry's manifest (Registry HTTP API v2) with
the request's own credentials: the sum of the layers' and the config's sizes for this node's
platform. Blocking (urllib): called from a thread before a pull."""

from __future__ import annotations

import base64
import json
import platform
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Final

from berth.imageref import DOCKER_HUB, ImageReference

TIMEOUT_S: Final = 5.0
MAX_MANIFEST_BYTES: Final = 4 * 1024 * 1024
INDEX_TYPES: Final = frozenset(
    {
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.index.v1+json",
    }
)
ACCEPT: Final = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        *sorted(INDEX_TYPES),
    ]
)
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')
_ARCH: Final = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "arm",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
}


class SizeUnknown(Exception):
    """The size could not be read (no registry answer, unknown format): the check is skipped."""


def node_architecture() -> str:
    machine = platform.machine().lower()
    return _ARCH.get(machine, machine)


def image_download_size(
    image: ImageReference,
    credentials: dict[str, str] | None,
    *,
    secure: bool,
    architecture: str | None = None,
) -> int:
    """Bytes a pull downloads (compressed layers + config). Raises ``SizeUnknown``."""
    client = _RegistryClient(image, credentials, secure=secure)
    manifest = client.manifest(image.digest or image.tag or "latest")
    if manifest.get("mediaType") in INDEX_TYPES or "manifests" in manifest:
        wanted = architecture or node_architecture()
        entry = next(
            (
                m
                for m in manifest.get("manifests") or []
                if (m.get("platform") or {}).get("architecture") == wanted
                and (m.get("platform") or {}).get("os", "linux") == "linux"
            ),
            None,
        )
        if entry is None:
            raise SizeUnknown(f"no linux/{wanted} manifest in the index of {image}")
        manifest = client.manifest(str(entry["digest"]))
    layers = manifest.get("layers")
    if not isinstance(layers, list):
        raise SizeUnknown(f"the manifest of {image} lists no layers (schema {manifest.get('schemaVersion')})")
    config = manifest.get("config") or {}
    return sum(int(layer.get("size", 0)) for layer in layers) + int(config.get("size", 0))


class _RegistryClient:
    def __init__(self, image: ImageReference, credentials: dict[str, str] | None, *, secure: bool) -> None:
        host = "registry-1.docker.io" if image.registry == DOCKER_HUB else image.registry
        self._base = f"{'https' if secure else 'http'}://{host}/v2/{image.repository}"
        self._credentials = credentials
        self._authorization: str | None = None
        self._context = ssl.create_default_context()

    def manifest(self, reference: str) -> dict[str, Any]:
        url = f"{self._base}/manifests/{urllib.parse.quote(reference, safe=':@')}"
        try:
            return self._get(url)
        except urllib.error.HTTPError as err:
            if err.code != 401 or self._authorization is not None:
                raise SizeUnknown(f"registry answered {err.code} for {url}") from err
            self._authorization = self._authorize(err.headers.get("WWW-Authenticate", ""))
        try:
            return self._get(url)
        except urllib.error.HTTPError as err:
            raise SizeUnknown(f"registry answered {err.code} for {url}") from err

    def _get(self, url: str) -> dict[str, Any]:
        headers = {"Accept": ACCEPT}
        if self._authorization:
            headers["Authorization"] = self._authorization
        request = urllib.request.Request(url, headers=headers)  # noqa: S310 - http(s) only, built above
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S, context=self._context) as answer:  # noqa: S310
                body = answer.read(MAX_MANIFEST_BYTES)
        except urllib.error.HTTPError:
            raise
        except (OSError, ValueError) as err:
            raise SizeUnknown(f"registry not reachable ({err})") from err
        try:
            document = json.loads(body)
        except ValueError as err:
            raise SizeUnknown("the manifest is not JSON") from err
        if not isinstance(document, dict):
            raise SizeUnknown("the manifest is not a JSON object")
        return document

    def _basic(self) -> str | None:
        if not self._credentials:
            return None
        pair = f"{self._credentials['username']}:{self._credentials['password']}".encode()
        return f"Basic {base64.b64encode(pair).decode()}"

    def _authorize(self, challenge: str) -> str:
        scheme = challenge.split(" ", 1)[0].lower()
        if scheme == "basic":
            basic = self._basic()
            if basic is None:
                raise SizeUnknown("the registry asks for credentials and the request has none")
            return basic
        if scheme != "bearer":
            raise SizeUnknown(f"unsupported registry authentication {scheme!r}")
        params = dict(_CHALLENGE.findall(challenge))
        realm = params.pop("realm", "")
        if not realm.startswith(("https://", "http://")):
            raise SizeUnknown("the registry's token realm is not a URL")
        query = urllib.parse.urlencode({k: v for k, v in params.items() if k in ("service", "scope")})
        headers = {}
        basic = self._basic()
        if basic is not None:
            headers["Authorization"] = basic
        request = urllib.request.Request(f"{realm}?{query}", headers=headers)  # noqa: S310 - realm checked
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S, context=self._context) as answer:  # noqa: S310
                document = json.loads(answer.read(MAX_MANIFEST_BYTES))
        except (OSError, ValueError) as err:
            raise SizeUnknown(f"no registry token ({err})") from err
        token = document.get("token") or document.get("access_token") if isinstance(document, dict) else None
        if not token:
            raise SizeUnknown("the registry's token answer has no token")
        return f"Bearer {token}"
