"""Fixtures of the fault suite: a unique prefix per test whose containers are swept before and
after (everything the tests deploy also carries ``io.berth.test=1``)."""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest
from kits.fault_kit import engine, new_prefix, sweep


@pytest.fixture
def docker_client() -> Iterator[docker.DockerClient]:
    client = engine()
    yield client
    client.close()


@pytest.fixture
def prefix(docker_client: docker.DockerClient) -> Iterator[str]:
    value = new_prefix("t")
    sweep(docker_client, value)
    yield value
    sweep(docker_client, value)
