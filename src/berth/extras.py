"""The optional extras of the ``berth`` package and the modules each one brings, so that a command
whose extra is not installed says which one to install instead of showing a traceback.

``pip install berth`` is a Docker node agent; ``berth[kubernetes]`` adds the Kubernetes runtime,
``berth[platform]`` the embedded platform with its console, ``berth ctl`` and the demo. The
distribution names are those of ``pyproject.toml`` (a unit test keeps both in step).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

# extra -> {distribution: top-level module it provides}
EXTRAS: Final[Mapping[str, Mapping[str, str]]] = {
    "kubernetes": {"kubernetes": "kubernetes"},
    "platform": {
        "starlette": "starlette",
        "uvicorn": "uvicorn",
        "httpx": "httpx",
        "websockets": "websockets",
        "Jinja2": "jinja2",
        "PyJWT": "jwt",
        "cryptography": "cryptography",
        "pydantic": "pydantic",
    },
}

_EXTRA_OF_MODULE: Final = {module: extra for extra, dists in EXTRAS.items() for module in dists.values()}


def extra_providing(missing_module: str | None) -> str | None:
    """The extra whose absence explains this missing module (``ModuleNotFoundError.name``), or
    ``None`` when no extra brings it (a genuine fault, to be reported as such)."""
    top_level = (missing_module or "").partition(".")[0]
    return _EXTRA_OF_MODULE.get(top_level)


def missing_extra_message(command: str, err: ModuleNotFoundError) -> str | None:
    """One line for stderr when ``err`` comes from an extra that is not installed, else ``None``."""
    extra = extra_providing(err.name)
    if extra is None:
        return None
    module = (err.name or "").partition(".")[0]
    return (
        f"{command}: needs the optional '{extra}' extra (the {module} module is not installed);"
        f" install it with: pip install 'berth[{extra}]'"
    )
