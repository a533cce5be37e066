"""Fixtures of the hostile-input suite (it shares tests/kits/fault_kit.py with the fault suite)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import docker
import pytest
from fakeplatform import running_agent
from kits.fault_kit import (
    DockerAgent,
    TunedPlatformServer,
    docker_agent_settings,
    engine,
    new_prefix,
    sweep,
)


@pytest.fixture
def docker_client() -> Iterator[docker.DockerClient]:
    client = engine()
    yield client
    client.close()


@pytest.fixture
def prefix(docker_client: docker.DockerClient) -> Iterator[str]:
    value = new_prefix("h")
    sweep(docker_client, value)
    yield value
    sweep(docker_client, value)


@pytest.fixture
async def docker_agent(tmp_path: Path) -> AsyncIterator[DockerAgent]:
    """An in-process agent on the real Docker runtime, connected to a fake platform."""
    async with TunedPlatformServer() as server:
        settings = docker_agent_settings(tmp_path / "data", server.platform.issue_connection_token())
        async with running_agent(settings) as running:
            await server.platform.wait_accepted()
            yield DockerAgent(server.platform, running, tmp_path / "data")
