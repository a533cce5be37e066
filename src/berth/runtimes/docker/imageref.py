"""Image references parsed with Docker's rules (registry ports and digests included, §17 #11)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from berth.errors import InvalidSpec

DOCKER_HUB: Final = "docker.io"
_HUB_ALIASES: Final = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[0-9a-fA-F]{32,}$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_PATH_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")


def split_name_tag(reference: str) -> tuple[str, str]:
    """``(name, tag)`` of a reference as a container shows it: the tag is after the last ``:`` that
    follows the last ``/``; a digest (``@sha256:…``) is the tag when no tag is given; ``latest``
    when neither is there."""
    name, _, digest = reference.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = ""
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    return name, tag or digest or "latest"


@dataclass(frozen=True, slots=True)
class ImageReference:
    """A normalized reference: ``docker.io/library/nginx:1`` for ``nginx:1``."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str, *, default_tag: str = "latest") -> ImageReference:
        original = text
        text = text.strip()
        if not text or any(c.isspace() for c in text):
            raise InvalidSpec("image", f"{original!r} is not an image reference")
        digest: str | None = None
        if "@" in text:
            text, digest = text.split("@", 1)
            if not _DIGEST.match(digest):
                raise InvalidSpec("image", f"{original!r} has an invalid digest")
        tag: str | None = None
        slash = text.rfind("/")
        colon = text.rfind(":")
        if colon > slash:
            text, tag = text[:colon], text[colon + 1 :]
            if not _TAG.match(tag):
                raise InvalidSpec("image", f"{original!r} has an invalid tag")
        first, sep, rest = text.partition("/")
        if sep and ("." in first or ":" in first or first == "localhost"):
            registry, path = first, rest
        else:
            registry, path = DOCKER_HUB, text
        if registry.lower() in _HUB_ALIASES:
            registry = DOCKER_HUB
        if registry == DOCKER_HUB and "/" not in path:
            path = f"library/{path}"
        if not path or not all(_PATH_COMPONENT.match(part) for part in path.split("/")):
            raise InvalidSpec("image", f"{original!r} has an invalid repository name")
        if tag is None and digest is None:
            tag = default_tag
        return cls(registry=registry, repository=path, tag=tag, digest=digest)

    @classmethod
    def from_request(
        cls, registry: str | None, image_name: str, tag: str, *, default_registry: str, default_tag: str
    ) -> ImageReference:
        """§6.3 #2: join the non-empty parts as ``registry/imageName:tag`` with the defaults."""
        if not image_name.strip():
            raise InvalidSpec("imageName", "empty")
        prefix = (registry or "").strip().strip("/") or default_registry.strip().strip("/")
        for scheme in ("https://", "http://"):
            prefix = prefix.removeprefix(scheme)
        joined = f"{prefix}/{image_name.strip()}" if prefix else image_name.strip()
        if tag.strip():
            joined = f"{joined}:{tag.strip()}"
        return cls.parse(joined, default_tag=default_tag)

    @property
    def name(self) -> str:
        """Registry and repository, without tag or digest (what a pull's ``repository`` is)."""
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def local_has_digest(attrs: Mapping[str, Any], image: ImageReference, digest: str) -> bool:
    """Whether a local image (inspect document) was pulled from ``image``'s repository with
    ``digest`` (``RepoDigests`` entries are ``repo@sha256:…``, Docker Hub ones abbreviated)."""
    for entry in attrs.get("RepoDigests") or ():
        repo, _, entry_digest = str(entry).partition("@")
        if entry_digest != digest:
            continue
        try:
            if ImageReference.parse(repo).name == image.name:
                return True
        except InvalidSpec:
            continue
    return False
