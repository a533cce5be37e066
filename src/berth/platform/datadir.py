"""The platform's data folder holds credentials (the store, the at-rest key, the CA key, the API
token): it is 0700 and owned by the user running the platform, and every file in it is 0600."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Final

from berth.errors import ConfigError

FOLDER_MODE: Final = 0o700
FILE_MODE: Final = 0o600


def prepare_data_dir(path: Path) -> None:
    """Creates the folder 0700, or forces an existing one to 0700; refuses a folder (or a symlink
    to one) that another user owns, since that user could read or swap what we write."""
    path.mkdir(parents=True, exist_ok=True, mode=FOLDER_MODE)
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        info = path.stat()
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError("data-dir", f"{path} is not a folder")
    if info.st_uid != os.geteuid():
        raise ConfigError(
            "data-dir", f"{path} is owned by uid {info.st_uid}, not by this user (uid {os.geteuid()})"
        )
    if stat.S_IMODE(info.st_mode) != FOLDER_MODE:
        path.chmod(FOLDER_MODE)


def make_private(path: Path) -> None:
    """Creates the file 0600 if missing, and forces it to 0600 if it exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
