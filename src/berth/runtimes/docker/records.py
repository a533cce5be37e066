"""Files deploy keeps in the data folder (§14.6): the prefix's shared secrets (dotenv, values still
encrypted, read back for listSecrets) and the release record (once per deployment, §17 #16).
Blocking file I/O: call from a thread. Writes are atomic (temp file + rename)."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from berth import files
from berth.errors import PersistenceError

SHARED_SECRETS_FILE: Final = ".shared-secrets"
RELEASE_FOLDER: Final = "@release"
_KEY: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._+-]")


def write_atomic(path: Path, text: str, mode: int = 0o600) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        files.write_atomic(path, text, mode)
    except OSError as err:
        raise PersistenceError(f"cannot write {path}: {err.strerror}") from err


def _dotenv_value(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "")
    return f'"{escaped}"'


def write_shared_secrets(root: Path, prefix: str, secrets: Mapping[str, str]) -> None:
    """``<root>/<prefix>/.shared-secrets`` as dotenv, one ``KEY="value"`` per line."""
    lines = [f"{key}={_dotenv_value(value)}" for key, value in secrets.items() if _KEY.match(key)]
    write_atomic(root / prefix / SHARED_SECRETS_FILE, "".join(f"{line}\n" for line in lines))


def read_shared_secret_keys(root: Path, prefix: str) -> list[str]:
    """The key names of the prefix's dotenv file; a missing file means none."""
    path = root / prefix / SHARED_SECRETS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as err:
        raise PersistenceError(f"cannot read {path}: {err.strerror}") from err
    keys = []
    for line in text.splitlines():
        key, sep, _ = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        if sep and _KEY.match(key):
            keys.append(key)
    return keys


def write_release_record(
    root: Path, prefix: str, version_name: str, release_notes: str, containers: Sequence[str]
) -> Path:
    """``<root>/<prefix>/@release/<version>.yml``; an older one is kept as ``-backup-<unix>``."""
    safe = _UNSAFE.sub("_", version_name).lstrip(".") or "_"
    folder = root / prefix / RELEASE_FOLDER
    path = folder / f"{safe}.yml"
    if path.exists():
        path.replace(folder / f"{safe}-backup-{int(time.time())}.yml")
    record = {
        "version": version_name,
        "releasenotes": release_notes,
        "date": datetime.now(UTC).isoformat(),
        "containers": list(containers),
    }
    import yaml  # only deployments with a version name write a record

    write_atomic(path, yaml.safe_dump(record, sort_keys=False), mode=0o644)
    return path
