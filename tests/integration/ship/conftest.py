"""Fixtures shared by the shipping tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def berth_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Berth built once as a wheel (no dependencies) for the install and update tests, from a copy
    of the sources as a fresh clone has them: an ``*.egg-info`` left by the editable install would
    otherwise let files into the wheel that the package-data rules miss."""
    source = tmp_path_factory.mktemp("wheel-source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*build, "-w", str(out), str(source)],
        check=True,
        capture_output=True,
    )
    return next(out.glob("berth-*.whl"))
