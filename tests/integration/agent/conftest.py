from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fakeplatform import Harness, PlatformServer, agent_settings, running_agent

from berth.runtimes.memory import MemoryRuntime


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    """An agent connected with a connection token to a fake platform, on the in-memory runtime."""
    async with PlatformServer() as server:
        runtime = MemoryRuntime()
        token = server.platform.issue_connection_token()
        settings = agent_settings(tmp_path / "data", token)
        async with running_agent(settings, runtime=runtime) as running:
            await server.platform.wait_accepted()
            yield Harness(server, server.platform, running, runtime, tmp_path / "data")
