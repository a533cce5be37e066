"""Fixtures shared by the shipping tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def berth_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Berth built once as a wheel (no dependencies) for the systemd install and update tests."""
    out = tmp_path_factory.mktemp("wheel")
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*build, "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    return next(out.glob("berth-*.whl"))
