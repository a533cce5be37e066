"""The install scripts as programs: shellcheck, the failure messages of install-docker.sh, and a
real systemd install (venv, env file, unit, switch, rollback) into a staging root with a recording
``systemctl``. The Docker path with a real engine is in test_install_e2e.py."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from kits.install_corpus import CA, fill

from berth.platform.package_data import INSTALL_SCRIPTS, package_folder

ROOT = Path(__file__).resolve().parents[3]
SCRIPTS = package_folder(INSTALL_SCRIPTS)
OWN_SHELL = [
    SCRIPTS / "install-docker.sh.tmpl",
    SCRIPTS / "install-systemd.sh.tmpl",
    ROOT / "tools/build-image.sh",
]


def _shell_scripts() -> list[Path]:
    found = (
        sorted(SCRIPTS.glob("*.sh.tmpl"))
        + sorted(SCRIPTS.glob("*.sh"))
        + sorted((ROOT / "tools").glob("*.sh"))
    )
    ci = ROOT / ".ci" / "run"
    return found + ([ci] if ci.exists() else [])


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
@pytest.mark.parametrize("script", _shell_scripts(), ids=lambda p: str(p.relative_to(ROOT)))
def test_shellcheck(script: Path) -> None:
    """Every shell script of the project is clean under shellcheck; the shipping scripts at every
    severity (POSIX sh), the others for errors (tools/kube-apiserver.sh has warnings)."""
    shell = "bash" if "bash" in script.read_text().splitlines()[0] else "sh"
    severity = "style" if script in OWN_SHELL else "error"
    result = subprocess.run(
        ["shellcheck", "-s", shell, f"--severity={severity}", str(script)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
@pytest.mark.parametrize("template", ["install-docker.sh.tmpl", "install-systemd.sh.tmpl"])
def test_rendered_scripts_pass_shellcheck_with_an_empty_ca(tmp_path: Path, template: str) -> None:
    script = tmp_path / "script.sh"
    script.write_text(fill(SCRIPTS / template, CA_PEM="", INSECURE="true"))
    result = subprocess.run(["shellcheck", "-s", "sh", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def _run(script: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(script), *args], env=env, capture_output=True, text=True, timeout=120)


def _fake_bin(folder: Path, name: str, body: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_docker_script_names_a_missing_runtime_socket_and_bad_arguments(tmp_path: Path) -> None:
    script = tmp_path / "install-docker.sh"
    script.write_text(fill(SCRIPTS / "install-docker.sh.tmpl"))
    base = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}

    missing = _run(script, env={**base, "CRI_EXECUTABLE": "no-such-cri"})
    assert missing.returncode == 3 and "not an executable on PATH" in missing.stderr

    _fake_bin(tmp_path / "bin", "docker", "exit 0")
    env = {**base, "PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"}
    no_socket = _run(script, env={**env, "HOST_DOCKER_SOCK_PATH": str(tmp_path / "none.sock")})
    assert no_socket.returncode == 4 and "does not exist: is the Docker engine running?" in no_socket.stderr

    wrong = _run(script, "--bogus", env=env)
    assert wrong.returncode == 2 and "unknown argument: --bogus" in wrong.stderr


def test_docker_script_reports_an_engine_without_permission(tmp_path: Path) -> None:
    sock_path = tmp_path / "engine.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    try:
        _fake_bin(tmp_path / "bin", "docker", 'echo "permission denied while trying to connect" >&2; exit 1')
        script = tmp_path / "install-docker.sh"
        script.write_text(fill(SCRIPTS / "install-docker.sh.tmpl"))
        env = {
            "PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin",
            "HOME": str(tmp_path),
            "HOST_DOCKER_SOCK_PATH": str(sock_path),
        }
        result = _run(script, env=env)
        assert result.returncode == 5 and "no permission to talk to the engine" in result.stderr
    finally:
        server.close()


def _systemd_env(tmp_path: Path, wheel: Path, fail_restart: bool = False) -> dict[str, str]:
    log = tmp_path / "systemctl.log"
    body = f'echo "$*" >> {log}\n'
    if fail_restart:
        body += '[ "$1" = restart ] && [ ! -e "$0.failed" ] && touch "$0.failed" && exit 1\n'
    body += "exit 0"
    _fake_bin(tmp_path / "bin", "systemctl", body)
    return {
        "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "BERTH_ROOT": str(tmp_path / "root"),
        "BERTH_SYSTEMCTL": str(tmp_path / "bin" / "systemctl"),
        "BERTH_PACKAGE": str(wheel),
        "BERTH_PIP_ARGS": "--no-deps --no-index",
        "PYTHON": sys.executable,
        "HOST_DOCKER_SOCK_PATH": str(_engine_socket(tmp_path)),
    }


def _engine_socket(tmp_path: Path) -> Path:
    """A Unix socket standing in for the engine's: the script only checks that it exists."""
    path = tmp_path / "engine.sock"
    if not path.exists():
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(str(path))
    return path


@pytest.mark.skipif(os.geteuid() != 0, reason="the systemd installer requires root")
def test_systemd_install_writes_venv_env_unit_and_switches(tmp_path: Path, berth_wheel: Path) -> None:
    script = tmp_path / "install-systemd.sh"
    script.write_text(fill(SCRIPTS / "install-systemd.sh.tmpl"))
    env = _systemd_env(tmp_path, berth_wheel)
    root = tmp_path / "root"

    dry = _run(script, "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "dry run: nothing was changed" in dry.stderr and not (root / "opt").exists()

    first = _run(script, env=env)
    assert first.returncode == 0, first.stderr
    current = root / "opt/berth/current"
    assert current.is_symlink()
    version = subprocess.run([str(current / "bin/berth"), "version"], capture_output=True, text=True)
    assert version.returncode == 0 and "0.15.4-berth." in version.stdout
    env_file = root / "etc/berth/agent.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    lines = env_file.read_text().splitlines()
    assert "GRPC_TOKEN=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln" in lines
    assert f"BERTH_CA_FILE={root}/srv/berth/platform-ca.pem" in lines
    assert (root / "srv/berth/platform-ca.pem").read_text() == CA
    unit = (root / "etc/systemd/system/berth-agent.service").read_text()
    assert unit == (SCRIPTS / "berth-agent.service").read_text()
    drop_in = (root / "etc/systemd/system/berth-agent.service.d/10-data.conf").read_text()
    assert f"ReadWritePaths={root}/srv/berth" in drop_in
    calls = (tmp_path / "systemctl.log").read_text().splitlines()
    assert calls[-3:] == ["daemon-reload", "enable berth-agent.service", "restart berth-agent.service"]

    # an upgrade: a new venv, the switch, and the previous one kept for rollback
    first_target = os.readlink(current)
    second = _run(script, env=env)
    assert second.returncode == 0, second.stderr
    assert os.readlink(current) != first_target
    assert sorted(p.name for p in (root / "opt/berth/venvs").iterdir()) == sorted(
        [Path(first_target).name, Path(os.readlink(current)).name]
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="the systemd installer requires root")
def test_systemd_install_switches_back_when_the_new_version_does_not_start(
    tmp_path: Path, berth_wheel: Path
) -> None:
    script = tmp_path / "install-systemd.sh"
    script.write_text(fill(SCRIPTS / "install-systemd.sh.tmpl"))
    ok = _run(script, env=_systemd_env(tmp_path, berth_wheel))
    assert ok.returncode == 0, ok.stderr
    current = tmp_path / "root/opt/berth/current"
    working = os.readlink(current)

    failing = _run(script, env=_systemd_env(tmp_path, berth_wheel, fail_restart=True))
    assert failing.returncode == 7 and "switching back" in failing.stderr
    assert os.readlink(current) == working
