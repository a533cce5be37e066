"""Image references with Docker's rules (registry ports and digests included, §17 #11), free of any
SDK so that both runtimes, the updaters and the platform share one reading of them.

A reference is split at the last ``:`` after the last ``/``, so ``host:5000/img`` has no tag; Docker
Hub's aliases name one registry, ``docker.io``, whose one-part names live under ``library/``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from berth.errors import InvalidSpec, UpdateRefused

DOCKER_HUB: Final = "docker.io"
HUB_ALIASES: Final = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
# Docker's grammar for a tag: a word character, then up to 127 of [\w.-] (ASCII only).
TAG: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST: Final = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[0-9a-fA-F]{32,}")
_PATH_COMPONENT: Final = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_LOOSE_NAME: Final = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9._:/@+-]*")


def split_name_tag(reference: str) -> tuple[str, str]:
    """``(name, tag)`` of a reference as a container or pod shows it: the digest is the tag when
    no tag is given; ``latest`` when neither is there."""
    name, _, digest = reference.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = ""
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    return name, tag or digest or "latest"


def has_registry(name: str) -> bool:
    """Whether the first part of ``name`` is a registry host (a dot, a port or ``localhost``)."""
    first, sep, _ = name.partition("/")
    return bool(sep) and ("." in first or ":" in first or first == "localhost")


def _hub_path(registry: str, path: str) -> tuple[str, str]:
    """Docker Hub under its one name, one-part names under ``library/``."""
    if registry.lower() in HUB_ALIASES:
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    return registry, path


def _registry_prefix(registry: str | None, default_registry: str) -> str:
    prefix = (registry or "").strip().strip("/") or default_registry.strip().strip("/")
    for scheme in ("https://", "http://"):
        prefix = prefix.removeprefix(scheme)
    return prefix


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageReference:
    """A normalized reference: ``docker.io/library/nginx:1`` for ``nginx:1``. Built by ``parse``
    and ``from_request``; by keyword otherwise (registry and repository are easily swapped)."""

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
            if not _DIGEST.fullmatch(digest):
                raise InvalidSpec("image", f"{original!r} has an invalid digest")
        tag: str | None = None
        colon = text.rfind(":")
        if colon > text.rfind("/"):
            text, tag = text[:colon], text[colon + 1 :]
            if not TAG.fullmatch(tag):
                raise InvalidSpec("image", f"{original!r} has an invalid tag")
        registry, path = text.split("/", 1) if has_registry(text) else (DOCKER_HUB, text)
        registry, path = _hub_path(registry, path)
        if not path or not all(_PATH_COMPONENT.fullmatch(part) for part in path.split("/")):
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
        prefix = _registry_prefix(registry, default_registry)
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


def expand(
    registry: str | None, image_name: str, tag: str, *, default_registry: str, default_tag: str
) -> str:
    """``registry/imageName:tag`` as a Kubernetes Deployment gets it, fully expanded: the
    registry prefix only when the name has no registry of its own, ``tag`` replacing a tag in the
    name, a digest kept, Docker Hub names normalized."""
    image = image_name.strip()
    if not image or not _LOOSE_NAME.fullmatch(image):
        raise InvalidSpec("imageName", f"{image_name!r} is not an image name")
    prefix = _registry_prefix(registry, default_registry)
    if not has_registry(image) and prefix:
        image = f"{prefix}/{image}"
    head, sep, rest = image.partition("/")
    if sep and head.lower() in HUB_ALIASES:
        image = "/".join(_hub_path(head, rest))
    name, _, digest = image.partition("@")
    if tag.strip():
        name = split_name_tag(name)[0]
        return f"{name}:{tag.strip()}" + (f"@{digest}" if digest else "")
    if digest or name.rfind(":") > name.rfind("/"):
        return image
    return f"{image}:{default_tag or 'latest'}"


def is_pinned(image: str) -> bool:
    """Whether a reference names its image by digest (it cannot move)."""
    return "@" in image


def with_tag(reference: str, tag: str) -> str:
    """The same repository with ``tag`` (checked as an update's tag); a digest is dropped."""
    return f"{split_name_tag(reference)[0]}:{check_update_tag(tag)}"


def check_update_tag(tag: str) -> str:
    """``tag`` when it is a valid image tag; ``UpdateRefused`` naming it otherwise. An update's tag
    names a version, never a path, an option or a package source."""
    if not TAG.fullmatch(tag):
        raise UpdateRefused(f"Update failed: {tag!r} is not a valid image tag")
    return tag


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
