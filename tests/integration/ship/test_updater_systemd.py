"""SystemdSelfUpdater with real virtual environments and pip (the Berth wheel, no dependencies),
a recording ``systemctl``/``systemd-run`` (no systemd on this machine), and the guard run as the
module it is in production."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from berth.agent.updater_systemd import SystemdSelfUpdater
from berth.errors import UpdateRefused
from berth.settings import AgentSettings


def _recorder(folder: Path, name: str, fail: str = "") -> Path:
    path = folder / name
    body = f'#!/bin/sh\necho "$*" >> {folder / (name + ".log")}\n'
    if fail:
        body += f'case "$*" in *{fail}*) echo "{name}: refused" >&2; exit 1 ;; esac\n'
    path.write_text(body + "exit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _target(prefix: Path) -> Path:
    return Path(os.path.realpath(prefix / "current"))


def _exists(path: Path) -> bool:
    return path.exists()


def _calls(folder: Path, name: str) -> list[str]:
    log = folder / (name + ".log")
    return log.read_text().splitlines() if log.exists() else []


@pytest.fixture
def install(tmp_path: Path, berth_wheel: Path) -> Path:
    """A systemd-style prefix: venvs/v1 with Berth and current -> venvs/v1."""
    prefix = tmp_path / "opt-berth"
    first = prefix / "venvs" / "v1"
    subprocess.run([sys.executable, "-m", "venv", str(first)], check=True)
    subprocess.run(
        [str(first / "bin/pip"), "install", "-q", "--no-deps", "--no-index", str(berth_wheel)], check=True
    )
    (prefix / "current").symlink_to(first)
    return prefix


def _updater(tmp_path: Path, prefix: Path, berth_wheel: Path, fail: str = "") -> SystemdSelfUpdater:
    settings = replace(
        AgentSettings(),
        install_method="systemd",
        systemd_prefix=prefix,
        update_package=str(berth_wheel),
        update_pip_args="--no-deps --no-index",
        health_socket=tmp_path / "health.sock",
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    return SystemdSelfUpdater(
        settings,
        systemctl=str(_recorder(bin_dir, "systemctl", fail)),
        systemd_run=str(_recorder(bin_dir, "systemd-run")),
    )


def _run_guard(prefix: Path, health: Path, systemctl: Path) -> str:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "berth.agent.updater_systemd",
            "guard",
            str(prefix),
            f"--health-socket={health}",
            f"--systemctl={systemctl}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


@pytest.fixture
def healthy_agent(tmp_path: Path) -> Iterator[Path]:
    """A health socket answering like an agent with an accepted session."""
    path = tmp_path / "health.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen()
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b'{"connected":true}')

    thread = threading.Thread(target=serve, name="fake-health", daemon=True)
    thread.start()
    yield path
    stop.set()
    thread.join()
    server.close()


async def test_update_switches_schedules_the_guard_and_the_guard_keeps_a_connected_agent(
    tmp_path: Path, install: Path, berth_wheel: Path, healthy_agent: Path
) -> None:
    updater = _updater(tmp_path, install, berth_wheel)
    await updater.begin_update("0.2", 60)
    current = _target(install)
    assert current.parent == install / "venvs" and current.name.startswith("0.2-")
    pending = json.loads((install / "update-pending.json").read_text())
    assert pending["previous"] == str(install / "venvs/v1") and pending["next"] == str(current)
    guard_call = _calls(tmp_path / "bin", "systemd-run")[0]
    assert "--on-active=54s" in guard_call  # 60 s window minus 10 %
    assert f"{install}/venvs/v1/bin/python -m berth.agent.updater_systemd guard {install}" in guard_call
    assert _calls(tmp_path / "bin", "systemctl") == ["--no-block restart berth-agent.service"]

    outcome = await asyncio.to_thread(_run_guard, install, healthy_agent, tmp_path / "bin/systemctl")
    assert outcome == "berth update guard: kept"
    assert not (install / "update-pending.json").exists()
    assert _target(install) == current
    assert sorted(p.name for p in (install / "venvs").iterdir()) == sorted(["v1", current.name])


async def test_guard_rolls_back_an_agent_that_is_not_connected(
    tmp_path: Path, install: Path, berth_wheel: Path
) -> None:
    updater = _updater(tmp_path, install, berth_wheel)
    await updater.begin_update("0.3", 30)
    new = _target(install)
    outcome = await asyncio.to_thread(
        _run_guard, install, tmp_path / "no-agent.sock", tmp_path / "bin/systemctl"
    )
    assert outcome == "berth update guard: rolled_back"
    assert _target(install) == install / "venvs/v1"
    assert not _exists(new)
    assert _calls(tmp_path / "bin", "systemctl")[-1] == "restart berth-agent.service"
    record = json.loads((install / "update-rolled-back.json").read_text())
    assert record["tag"] == "0.3" and "not connected" in record["reason"]
    assert await asyncio.to_thread(_run_guard, install, tmp_path / "x.sock", tmp_path / "bin/systemctl") == (
        "berth update guard: nothing"
    )


async def test_failures_before_the_restart_are_refused_and_leave_the_install_as_it_was(
    tmp_path: Path, install: Path, berth_wheel: Path
) -> None:
    broken = replace(_updater(tmp_path, install, tmp_path / "missing.whl")._settings)
    updater = SystemdSelfUpdater(broken, systemctl="true", systemd_run="true")
    with pytest.raises(UpdateRefused, match="Update failed: cannot install"):
        await updater.begin_update("0.4", 30)
    assert [p.name for p in (install / "venvs").iterdir()] == ["v1"]

    refusing = _updater(tmp_path, install, berth_wheel, fail="restart")
    with pytest.raises(UpdateRefused, match="cannot restart the service"):
        await refusing.begin_update("0.5", 30)
    assert _target(install) == install / "venvs/v1"
    assert [p.name for p in (install / "venvs").iterdir()] == ["v1"]
    assert not (install / "update-pending.json").exists()
