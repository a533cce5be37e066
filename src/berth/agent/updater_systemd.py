"""Self-update of a systemd install (§13.2): a new virtual environment, a switch, a restart, and a
guard that switches back when the new agent is not connected before the deadline.

Layout (written by install-systemd.sh): ``<prefix>/venvs/<name>/`` per version and the symlink
``<prefix>/current`` that the unit runs (``<prefix>/current/bin/berth agent``).

``begin_update``: pip installs the new version into a fresh venv (the token handshake has already
happened), records ``update-pending.json``, starts a transient systemd timer that runs the guard
from the *previous* (known good) venv at the deadline, switches ``current`` and asks systemd to
restart the service. The successor connects with the persisted new token.

The guard (``python -m berth.agent.updater_systemd guard <prefix> …``): when the pending update's
agent reports a platform-accepted session on its health socket, the update is kept and older venvs
are pruned; otherwise ``current`` goes back to the previous venv, the service restarts on it, the
new venv is removed and ``update-rolled-back.json`` says why. The platform's update window has then
passed, so no AbortUpdate can be sent for that case; a failure *before* the restart (pip, switch,
restart refused) is reported at once through ``UpdateRefused`` (→ AbortUpdate).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import structlog

from berth.errors import UpdateRefused
from berth.imageref import check_update_tag
from berth.settings import AgentSettings

log = structlog.get_logger("berth.agent.updater_systemd")

UNIT: Final = "berth-agent.service"
PENDING: Final = "update-pending.json"
ROLLED_BACK: Final = "update-rolled-back.json"
DEADLINE_MARGIN_MAX_S: Final = 10.0
HEALTH_TIMEOUT_S: Final = 3.0
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


class SystemdSelfUpdater:
    """``berth.runtimes.base.SelfUpdater`` for an agent run by ``berth-agent.service``."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        systemctl: str = "systemctl",
        systemd_run: str = "systemd-run",
        python: str = sys.executable,
    ) -> None:
        self._settings = settings
        self._prefix = settings.systemd_prefix
        self._systemctl = systemctl
        self._systemd_run = systemd_run
        self._python = python
        self._busy = False

    def own_container_name(self) -> str | None:
        return None

    async def self_destruct(self) -> bool:
        """The old process is gone once systemd restarted the unit; nothing is pending here."""
        return False

    async def begin_update(self, tag: str, timeout_s: int) -> None:
        if self._busy:
            raise UpdateRefused("Update failed: an update is already in progress")
        self._busy = True
        try:
            await self._update(tag, timeout_s)
        finally:
            self._busy = False

    async def _update(self, tag: str, timeout_s: int) -> None:
        check_update_tag(tag)  # it goes into a pip requirement and a folder name
        current = self._prefix / "current"
        if not await asyncio.to_thread(current.is_symlink):
            raise UpdateRefused(f"Update failed: {current} is not a symlink; this is not a systemd install")
        previous = Path(await asyncio.to_thread(os.path.realpath, current))
        venv = (
            self._prefix / "venvs" / f"{_SAFE.sub('_', tag)}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        )
        spec = self._settings.update_package.replace("{tag}", tag)
        try:
            await _run("create the virtual environment", self._python, "-m", "venv", str(venv))
            await _run(
                f"install {spec}",
                str(venv / "bin" / "pip"),
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-cache-dir",
                *shlex.split(self._settings.update_pip_args),
                spec,
            )
            await _run("run the new version", str(venv / "bin" / "berth"), "version")
        except UpdateRefused:
            await asyncio.to_thread(shutil.rmtree, venv, True)
            raise
        wait_s = max(1, int(timeout_s - min(DEADLINE_MARGIN_MAX_S, timeout_s * 0.1)))
        record = {"previous": str(previous), "next": str(venv), "tag": tag, "deadline": time.time() + wait_s}
        await asyncio.to_thread(_write_json, self._prefix / PENDING, record)
        guard_unit = f"berth-agent-update-guard-{int(time.time())}"
        try:
            await _run(
                "schedule the rollback guard",
                self._systemd_run,
                f"--unit={guard_unit}",
                "--collect",
                f"--on-active={wait_s}s",
                "--timer-property=AccuracySec=1s",
                str(previous / "bin" / "python"),
                "-m",
                "berth.agent.updater_systemd",
                "guard",
                str(self._prefix),
                f"--health-socket={self._settings.health_socket}",
                f"--systemctl={self._systemctl}",
            )
            await asyncio.to_thread(_switch, current, venv)
            log.info("systemd_update_switching", tag=tag, venv=str(venv), guard_in_s=wait_s)
            await _run("restart the service", self._systemctl, "--no-block", "restart", UNIT)
        except UpdateRefused:
            await asyncio.to_thread(_switch, current, previous)
            await asyncio.to_thread(_remove, self._prefix / PENDING)
            await asyncio.to_thread(shutil.rmtree, venv, True)
            with_stop = (self._systemctl, "stop", f"{guard_unit}.timer")
            await asyncio.to_thread(subprocess.run, with_stop, capture_output=True, check=False)
            raise


async def _run(what: str, *argv: str) -> None:
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
    except OSError as err:
        raise UpdateRefused(f"Update failed: cannot {what}: {err}") from err
    _, stderr = await process.communicate()
    if process.returncode != 0:
        lines = stderr.decode(errors="replace").strip().splitlines()
        raise UpdateRefused(
            f"Update failed: cannot {what}: {lines[-1] if lines else f'exit {process.returncode}'}"
        )


def _write_json(path: Path, data: dict[str, object]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _switch(link: Path, target: Path) -> None:
    """Atomically point ``link`` at ``target`` (a new symlink renamed over the old one)."""
    staged = link.with_name(link.name + ".new")
    _remove(staged)
    staged.symlink_to(target)
    os.replace(staged, link)


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


# -- the guard (runs from the previous venv, started by systemd-run) ------------------------------


def agent_connected(health_socket: Path, timeout_s: float = HEALTH_TIMEOUT_S) -> bool:
    """The health socket's answer (§14.8): ``{"connected": true}`` only for an accepted session."""
    try:
        with socket.socket(socket.AF_UNIX) as probe:
            probe.settimeout(timeout_s)
            probe.connect(str(health_socket))
            data = b""
            while chunk := probe.recv(4096):
                data += chunk
        return bool(json.loads(data or b"{}").get("connected"))
    except (OSError, ValueError):
        return False


def guard(prefix: Path, health_socket: Path, systemctl: str = "systemctl") -> str:
    """Keep or roll back the pending update; returns ``kept``, ``rolled_back`` or ``nothing``."""
    pending_path = prefix / PENDING
    try:
        pending = json.loads(pending_path.read_text())
    except FileNotFoundError:
        return "nothing"
    previous, new = Path(pending["previous"]), Path(pending["next"])
    current = prefix / "current"
    if Path(os.path.realpath(current)) == new and agent_connected(health_socket):
        for venv in (prefix / "venvs").iterdir():
            if venv not in (new, previous):
                shutil.rmtree(venv, ignore_errors=True)
        _remove(pending_path)
        return "kept"
    _switch(current, previous)
    subprocess.run([systemctl, "restart", UNIT], check=False, capture_output=True)
    if new != previous:
        shutil.rmtree(new, ignore_errors=True)
    _write_json(
        prefix / ROLLED_BACK,
        {
            "tag": pending.get("tag", ""),
            "at": time.time(),
            "reason": "the new agent was not connected to the platform before the deadline",
        },
    )
    _remove(pending_path)
    return "rolled_back"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m berth.agent.updater_systemd")
    sub = parser.add_subparsers(dest="command", required=True)
    guard_parser = sub.add_parser("guard", help="keep or roll back a pending systemd update")
    guard_parser.add_argument("prefix", type=Path)
    guard_parser.add_argument("--health-socket", type=Path, default=Path("/run/berth/agenthealth.sock"))
    guard_parser.add_argument("--systemctl", default="systemctl")
    args = parser.parse_args(argv)
    outcome = guard(args.prefix, args.health_socket, args.systemctl)
    sys.stdout.write(f"berth update guard: {outcome}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
