"""Image references as the Deployment gets them: fully expanded (``docker.io/library/nginx:1``).

Split at the last ``:`` after the last ``/`` so registry ports and digests survive (§17 #11).
"""

from __future__ import annotations

import re
from typing import Final

from berth.errors import InvalidSpec

_HUB_ALIASES: Final = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_REFERENCE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._:/@+-]*$")


def split_name_tag(reference: str) -> tuple[str, str]:
    """``(repository, tag)``: the digest is the tag when there is no tag; ``latest`` otherwise."""
    name, _, digest = reference.partition("@")
    slash, colon = name.rfind("/"), name.rfind(":")
    tag = ""
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    return name, tag or digest or "latest"


def expand(
    registry: str | None, image_name: str, tag: str, *, default_registry: str, default_tag: str
) -> str:
    """``registry/imageName:tag`` with the node defaults, Docker Hub names normalised."""
    image = image_name.strip()
    if not image or not _REFERENCE.match(image):
        raise InvalidSpec("imageName", f"{image_name!r} is not an image name")
    prefix = (registry or "").strip().strip("/") or default_registry.strip().strip("/")
    for scheme in ("https://", "http://"):
        prefix = prefix.removeprefix(scheme)
    first, sep, _rest = image.partition("/")
    has_registry = bool(sep) and ("." in first or ":" in first or first == "localhost")
    if not has_registry and prefix:
        image = f"{prefix}/{image}"
    head, sep, rest = image.partition("/")
    if head in _HUB_ALIASES:
        head = "docker.io"
        if "/" not in rest:
            rest = f"library/{rest}"
        image = f"{head}/{rest}"
    name, _, digest = image.partition("@")
    if tag.strip():
        if name.rfind(":") > name.rfind("/"):
            name = name[: name.rfind(":")]
        return f"{name}:{tag.strip()}" + (f"@{digest}" if digest else "")
    if digest or name.rfind(":") > name.rfind("/"):
        return image
    return f"{image}:{default_tag or 'latest'}"


def is_pinned(image: str) -> bool:
    return "@" in image
