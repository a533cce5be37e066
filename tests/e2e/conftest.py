"""Fixtures of the end-to-end tests."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from e2e_stack import AgentFactory, AgentProcess, platform_config, start_platform, sweep_containers

from berth.platform.app import Started
from berth.platform.config import PlatformConfig


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A fresh container prefix; its test containers are removed afterwards."""
    name = "e2e-" + secrets.token_hex(4)
    yield name
    await sweep_containers(name)


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Started]:
    """The platform, started in the test's event loop and stopped after the test."""
    server, started = await start_platform(platform_config(tmp_path / "platform"))
    try:
        yield started
    finally:
        await server.stop()


@pytest.fixture
async def agents(tmp_path: Path) -> AsyncIterator[AgentFactory]:
    """Makes ``berth agent`` processes that trust the platform's CA, each with its data folder and
    log under the test's folder; those still running are stopped after the test."""
    made: list[AgentProcess] = []

    def make(name: str, install_token: str, config: PlatformConfig) -> AgentProcess:
        ca_file = config.data_dir / "tls" / "ca.pem"
        made.append(AgentProcess(tmp_path / name, install_token, ca_file, tmp_path / f"{name}.log"))
        return made[-1]

    yield make
    for agent in made:
        await agent.stop()
