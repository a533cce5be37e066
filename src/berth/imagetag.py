"""The one check of an update's image tag, shared by the Docker and the systemd updaters: a tag
names a version, never a path, an option or a package source."""

from __future__ import annotations

import re
from typing import Final

from berth.errors import UpdateRefused

# Docker's reference grammar for a tag: a word character, then up to 127 of [\w.-].
_TAG: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def check_update_tag(tag: str) -> str:
    """``tag`` when it is a valid image tag; ``UpdateRefused`` naming it otherwise."""
    if not _TAG.fullmatch(tag):
        raise UpdateRefused(f"Update failed: {tag!r} is not a valid image tag")
    return tag
