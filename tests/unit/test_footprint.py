"""Start-up memory release (gc + glibc malloc_trim once accepted) and the charset detector the agent
leaves out of ``requests``."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from waiting import wait_event

from berth.agent import footprint
from berth.agent.health import HealthState


def test_release_memory_trims_with_glibc() -> None:
    trim = footprint._malloc_trim()
    if sys.platform.startswith("linux"):
        assert trim is not None  # this machine's Python runs on glibc
    assert isinstance(footprint.release_memory(), bool)


def test_the_trim_is_found_without_ctypes_util() -> None:
    code = (
        "import sys; from berth.agent import footprint\n"
        "assert footprint._malloc_trim() is not None\n"
        "print(sorted(m for m in ('ctypes.util', 'tempfile', 'shutil') if m in sys.modules))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert run.stdout.strip() == "[]"


async def test_release_waits_for_the_accepted_session(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(footprint, "release_memory", lambda: calls.append(1) or True)
    health = HealthState()
    task = asyncio.create_task(footprint.release_once_accepted(health), name="test-release")
    health.dialling()
    await asyncio.sleep(0.02)  # a chance to release too early, which it must not take
    assert not task.done() and calls == []
    health.mark_accepted()
    await wait_event(task, 1, "the task to finish")
    assert calls == [1]


def test_requests_without_charset_detection_decodes_utf8_and_warns_nothing() -> None:
    code = (
        "from berth.agent.cli import _skip_charset_detection\n"
        "_skip_charset_detection()\n"
        "import docker, requests\n"
        "from requests.compat import chardet\n"
        "assert chardet is None\n"
        "response = requests.models.Response()\n"
        "response._content = 'caf\\u00e9 error'.encode()\n"
        "assert response.text == 'caf\\u00e9 error', response.text\n"
        "import sys\n"
        "assert 'charset_normalizer' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
    )
    run = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
