"""The Docker (and Podman) runtime: the only package that imports the ``docker`` SDK."""

from berth.runtimes.docker.runtime import DockerRuntime

__all__ = ["DockerRuntime"]
