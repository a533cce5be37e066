"""Rules for the strings that become names somewhere else (container, network, namespace, path),
free of any SDK so that the platform, its client and the runtimes can share them.

Each ``check_*`` returns ``None`` when the value is acceptable and a short reason otherwise; the
caller turns the reason into its own error type (a 400 on the platform, ``InvalidSpec`` on a node).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from pathlib import PurePosixPath
from typing import Final

from berth.errors import InvalidSpec

RFC1123_LABEL: Final = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
MAX_LABEL: Final = 63
MAX_PORT: Final = 65535
# An absolute path that is pasted into scripts and bind mounts: no spaces, quotes or shell syntax.
SAFE_ABSOLUTE_PATH: Final = re.compile(r"^/[A-Za-z0-9_./-]*$")
MAX_PATH: Final = 4096
LABEL_RULE: Final = "must be an RFC 1123 label ([a-z0-9-], 1-63 characters, alphanumeric at both ends)"


def text_problem(value: str, *, multiline: bool = False) -> str | None:
    """Refuses what cannot be stored or shown safely: lone surrogates (not UTF-8), NUL and other
    control characters (a newline and a tab only where ``multiline``), and bidi overrides."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8 (lone surrogate)"
    allowed = "\n\t\r" if multiline else ""
    for char in value:
        if char in allowed:
            continue
        category = unicodedata.category(char)
        if category == "Cc":
            return f"contains the control character U+{ord(char):04X}"
        if category == "Cf" and char in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069":
            return f"contains the bidirectional override U+{ord(char):04X}"
    return None


def repair_text(value: str) -> str:
    """What a stored string that breaks ``text_problem`` is shown as: offending characters become
    U+FFFD, so a row written before validation existed still lists and can be fixed or deleted."""
    encoded = value.encode("utf-8", "replace").decode("utf-8")
    if text_problem(encoded, multiline=True) is None:
        return encoded
    return "".join("\ufffd" if unicodedata.category(c) == "Cc" and c not in "\n\t\r" else c for c in encoded)


def label_problem(value: str) -> str | None:
    return None if RFC1123_LABEL.match(value) else LABEL_RULE


def checked_label(field: str, value: str) -> str:
    """``value`` when it is an RFC 1123 label; on a node, ``InvalidSpec`` naming ``field``."""
    problem = label_problem(value)
    if problem:
        raise InvalidSpec(field, f"{value!r} {problem}")
    return value


def check_unique(field: str, values: Iterable[str]) -> None:
    """On a node, ``InvalidSpec`` naming ``field`` when a value appears twice."""
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise InvalidSpec(field, f"{value!r} appears twice")
        seen.add(value)


def volume_name_problem(name: str) -> str | None:
    """As the Docker runtime checks it: a relative name stays inside the workload's data folder
    (no ``..`` segment, no ``~``, no NUL); an absolute name is a host path asked for on purpose."""
    if not name or "\x00" in name:
        return "is empty or contains NUL"
    if ".." in PurePosixPath(name).parts or name.startswith("~"):
        return "escapes the data folder"
    return None


def absolute_path_problem(path: str) -> str | None:
    if not path.startswith("/"):
        return "must be an absolute path"
    return None


def safe_root_path_problem(path: str) -> str | None:
    """A host folder the install scripts create: absolute, plain characters, no ``..``."""
    if len(path) > MAX_PATH:
        return f"must be at most {MAX_PATH} characters"
    if not SAFE_ABSOLUTE_PATH.match(path):
        return "must be an absolute path of letters, digits and _ . / -"
    if ".." in PurePosixPath(path).parts:
        return "must not contain '..'"
    return None


def checked(problem: str | None, value: str) -> str:
    """``value`` itself when ``problem`` is ``None``, else ``ValueError(problem)``: the shape a
    pydantic ``AfterValidator`` wants."""
    if problem:
        raise ValueError(problem)
    return value


def plain_text(value: str) -> str:
    return checked(text_problem(value), value)


def multiline_text(value: str) -> str:
    return checked(text_problem(value, multiline=True), value)


def rfc1123_label(value: str) -> str:
    return checked(label_problem(value), value)


def port_problem(port: int, *, allow_zero: bool = False) -> str | None:
    low = 0 if allow_zero else 1
    return None if low <= port <= MAX_PORT else f"{port} is outside {low}..{MAX_PORT}"
