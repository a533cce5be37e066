"""The Docker (and Podman) runtime: the only package that imports the ``docker`` SDK.

``DockerRuntime`` is imported on first use, so that the SDK-free modules here (the start-up
``probe``) can be imported without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from berth.runtimes.docker.runtime import DockerRuntime

__all__ = ["DockerRuntime"]


def __getattr__(name: str) -> Any:
    if name == "DockerRuntime":
        from berth.runtimes.docker.runtime import DockerRuntime

        return DockerRuntime
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
