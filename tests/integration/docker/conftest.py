"""Fixtures for the Docker runtime tests (real engine + registry from tools/testenv.sh).

Every container, network and volume a test makes carries ``io.berth.test=1`` (workloads get it
through ``dagent.labels``) or the test's own unique prefix; ``prefix`` sweeps them before and after.
"""

from __future__ import annotations

import secrets
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import docker
import pytest
from docker_support import REGISTRY, PushedImage, engine, sweep
from pushed_images import build_and_push

from berth.runtimes.docker import DockerRuntime
from berth.settings import DockerSettings


@pytest.fixture
def docker_client() -> Iterator[docker.DockerClient]:
    client = engine()
    yield client
    client.close()


@pytest.fixture
def prefix(docker_client: docker.DockerClient) -> Iterator[str]:
    """A unique prefix per test; everything under it (and labelled for tests) is swept."""
    value = f"bt{secrets.token_hex(3)}"
    sweep(docker_client, value)
    yield value
    sweep(docker_client, value)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="berth-docker-test-") as folder:
        yield Path(folder)


@pytest.fixture
def settings(data_dir: Path) -> DockerSettings:
    # The engine runs on this machine: its view of the data folder is the agent's view.
    return DockerSettings(
        data_mount_path=data_dir,
        internal_mount_path=data_dir,
        stop_grace_s=1.0,
        default_expected_timeout_s=20,
        resync_interval_s=30.0,
    )


@pytest.fixture
async def runtime(settings: DockerSettings) -> AsyncIterator[DockerRuntime]:
    rt = DockerRuntime(settings)
    yield rt
    await rt.aclose()


@pytest.fixture(scope="session")
def fresh_image() -> Iterator[PushedImage]:
    """A unique image pushed to the test registry and removed locally, so a deploy really pulls
    it. It carries the dyrector capability label (ports read from the image after the pull)."""
    repository = f"berth/test-{secrets.token_hex(4)}"
    reference = f"{REGISTRY}/{repository}:1"
    dockerfile = (
        "FROM local/busybox:1\n"
        'LABEL io.berth.test="1" io.dyrector.cap.network.v1="{\\"ports\\":[{\\"listening\\":8080}]}"\n'
        "RUN echo fresh > /fresh\n"
    )
    build_and_push(reference, dockerfile)
    yield PushedImage(reference=reference, repository=repository)
    subprocess.run(["docker", "rmi", "-f", reference], check=False, capture_output=True)
