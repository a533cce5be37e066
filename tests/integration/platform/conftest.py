from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from kits.platform_harness import TEMPLATES, Harness, make_config

from berth.platform.app import PlatformServer


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    folder = tmp_path / "templates"
    folder.mkdir()
    for name, text in TEMPLATES.items():
        (folder / name).write_text(text)
    return folder


@pytest.fixture
async def platform(tmp_path: Path, templates: Path, request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    overrides = getattr(request, "param", {})
    data_dir = tmp_path / "data"
    server = PlatformServer(make_config(data_dir, templates, **overrides))
    started = await server.start()
    async with httpx.AsyncClient(
        base_url=f"{started.http_url}/api/default",
        headers={"authorization": f"Bearer {started.api_token}"},
        timeout=10,
    ) as api:
        harness = Harness(server, started, api, data_dir, templates)
        yield harness
    await harness.server.stop()
