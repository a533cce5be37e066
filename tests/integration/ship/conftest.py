"""Fixtures shared by the shipping tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from kits.wheel import build_wheel


@pytest.fixture(scope="session")
def berth_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Berth built once as a wheel (no dependencies) for the install and update tests."""
    return build_wheel(tmp_path_factory.mktemp("wheel-build"))
