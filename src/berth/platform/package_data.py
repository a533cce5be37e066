"""The platform's data files (install-script templates, console pages and static files) ship inside
the package as package data and are found one way, through ``importlib.resources``: the same code
finds them in a wheel's installation and in an editable checkout."""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Final

INSTALL_SCRIPTS: Final = "install-scripts"
CONSOLE: Final = "console"


def package_folder(name: str) -> Path:
    """A data folder of ``berth.platform`` as a file-system path (Jinja2's loader and Starlette's
    static files need one). Berth is installed as files, never imported from a zip archive."""
    folder = importlib.resources.files(__package__) / name
    if not isinstance(folder, Path):
        raise RuntimeError(f"berth.platform's {name} folder is not on the file system ({folder!r})")
    return folder
