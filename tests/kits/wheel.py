"""Berth as users install it: the wheel built from this tree, and a fresh virtual environment
holding it with its dependencies pinned by constraints.txt (the shipping tests, the start-up
benchmark)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def build_wheel(work: Path) -> Path:
    """The wheel (no dependencies), built in ``work`` from a copy of the sources as a fresh clone
    has them: an ``*.egg-info`` left by the editable install would otherwise let files into the
    wheel that the package-data rules miss."""
    source = work / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    out = work / "wheel"
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*build, "-w", str(out), str(source)], check=True, capture_output=True)
    return next(out.glob("berth-*.whl"))


def install_venv(
    venv: Path, requirement: str, env: Mapping[str, str], timeout_s: float
) -> subprocess.CompletedProcess[str]:
    """A fresh venv at ``venv`` and ``pip install <requirement>`` into it, constrained as the
    image is; the caller judges pip's answer (returned, never raised)."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
    pip = [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check"]
    return subprocess.run(
        [*pip, "-c", str(ROOT / "constraints.txt"), requirement],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
