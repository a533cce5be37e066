"""Install scripts rendered from hostile values (the corpus: tests/kits/install_corpus.py; what
renders and what is refused: tests/unit/ship/test_install_rendering.py).

The shell and systemd installers are RUN (dry and for real) with recording stand-ins for docker,
systemctl, python and pip on PATH: no injected command runs (its marker file never appears), and
the recorded argument vectors and written env files carry each value as one literal. The k8s
manifest reads the same through kubectl's Go YAML reader when a cluster is configured, and the
hostile renderings pass shellcheck."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from kits.install_corpus import (
    ACCEPTED,
    BENIGN,
    CA,
    Case,
    case_id,
    expected_name,
    parse_env_file,
    render,
    write,
)

from berth.platform.install_scripts import (
    DEFAULT_DATA_DIR,
)


@pytest.fixture
def marker() -> Iterator[Path]:
    """A path of lower-case letters, digits and '/' only (it survives the node-name rule)."""
    folder = Path(tempfile.mkdtemp(prefix="berthpwn"))
    assert str(folder) == str(folder).lower() and " " not in str(folder)
    yield folder / "pwned"
    shutil.rmtree(folder, ignore_errors=True)


# -- running the shell scripts with recording stand-ins ---------------------------------------------

RECORDER = """#!/bin/sh
# Records its argument vector (NUL-separated, one file per call) and answers like a happy tool.
calls=${STUB_CALLS:?}
n=$(find "$calls" -maxdepth 1 -name 'call-*' | wc -l)
record=$calls/call-$(printf '%04d' "$n")
{
  printf '%s\\0' "$(basename "$0")"
  for arg in "$@"; do printf '%s\\0' "$arg"; done
} >"$record"
case "$(basename "$0")" in
docker)
  case "$1" in
  container)
    if [ "$3" = --format ]; then echo running; exit 0; fi
    exit 1 ;;
  run)
    prev=
    for arg in "$@"; do
      if [ "$prev" = --env-file ]; then cp "$arg" "$calls/env-file"; fi
      prev=$arg
    done
    echo 0123456789ab ;;
  esac ;;
python)
  if [ "$1" = -m ] && [ "$2" = venv ]; then
    mkdir -p "$3/bin"
    cp "$0" "$3/bin/pip"
    cp "$0" "$3/bin/berth"
  fi ;;
esac
exit 0
"""


@dataclass
class Machine:
    """A temp folder with the stand-ins on PATH, an engine socket and the environment to run in."""

    folder: Path
    calls: Path
    env: dict[str, str]

    def run(self, script: Path, *args: str) -> subprocess.CompletedProcess[str]:
        for old in self.calls.iterdir():
            old.unlink()
        return subprocess.run(
            ["sh", str(script), *args], env=self.env, capture_output=True, text=True, timeout=60
        )

    def recorded(self) -> list[list[str]]:
        out = []
        for record in sorted(self.calls.glob("call-*")):
            out.append(record.read_bytes().decode().split("\0")[:-1])
        return out


@pytest.fixture
def machine() -> Iterator[Machine]:
    # short: a Unix socket path has room for about 100 bytes
    folder = Path(tempfile.mkdtemp(prefix="berthm"))
    bin_dir, calls = folder / "bin", folder / "calls"
    bin_dir.mkdir()
    calls.mkdir()
    for tool in ("docker", "systemctl", "python", "sleep"):
        path = bin_dir / tool
        path.write_text(RECORDER)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(folder / "engine.sock"))
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(folder / "home"),
        "TMPDIR": str(folder),
        "STUB_CALLS": str(calls),
        "HOST_DOCKER_SOCK_PATH": str(folder / "engine.sock"),
    }
    try:
        yield Machine(folder, calls, env)
    finally:
        sock.close()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("case", ACCEPTED, ids=case_id)
def test_docker_script_runs_nothing_injected(case: Case, marker: Path, machine: Machine) -> None:
    values = case.values(marker)
    data = machine.folder / "data"
    script = write(machine.folder, "install-docker.sh", render(values, "docker", "shell", str(data)))

    dry = machine.run(script, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert not marker.exists(), "an injected command ran (dry run)"
    assert "dry run: nothing was changed" in dry.stderr
    assert not any(call[:2] == ["docker", "run"] for call in machine.recorded())
    assert f"+ docker pull {values['image']}\n" in dry.stderr

    real = machine.run(script)
    assert real.returncode == 0, real.stderr
    assert not marker.exists(), "an injected command ran"
    calls = machine.recorded()
    assert ["docker", "pull", values["image"]] in calls
    (run,) = [call for call in calls if call[:2] == ["docker", "run"]]
    assert run[-1] == values["image"]
    assert run[run.index("--name") + 1] == "berth"
    assert run[run.index("--volume") + 1] == f"{data}:/srv/dagent"
    env_lines = (machine.calls / "env-file").read_text(encoding="utf-8").splitlines()
    assert f"GRPC_TOKEN={values['token']}" in env_lines
    assert f"NAME={expected_name(values['node_name'])}" in env_lines
    assert len(env_lines) == 7  # no line was added by a value
    assert f"it connects to {values['advertise']}\n" in real.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="the systemd installer requires root")
@pytest.mark.parametrize("case", ACCEPTED, ids=case_id)
def test_systemd_script_runs_nothing_injected(case: Case, marker: Path, machine: Machine) -> None:
    values = case.values(marker)
    root = machine.folder / "root"
    script = write(machine.folder, "install-systemd.sh", render(values, "docker", "systemd"))
    env = {
        **machine.env,
        "BERTH_ROOT": str(root),
        "PYTHON": str(machine.folder / "bin/python"),
        "BERTH_SYSTEMCTL": str(machine.folder / "bin/systemctl"),
    }
    machine.env = env

    dry = machine.run(script, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert not marker.exists(), "an injected command ran (dry run)"
    assert "dry run: nothing was changed" in dry.stderr and not (root / "etc").exists()

    real = machine.run(script)
    assert real.returncode == 0, real.stderr
    assert not marker.exists(), "an injected command ran"
    env_file = root / "etc/berth/agent.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    written = parse_env_file(env_file.read_text(encoding="utf-8"))
    assert written["GRPC_TOKEN"] == values["token"]
    assert written["NAME"] == expected_name(values["node_name"])
    assert written["DATA_MOUNT_PATH"] == f"{root}{DEFAULT_DATA_DIR}"
    assert (root / "srv/berth/platform-ca.pem").read_text() == CA
    calls = machine.recorded()
    assert [c[1:] for c in calls if c[0] == "systemctl"][-3:] == [
        ["daemon-reload"],
        ["enable", "berth-agent.service"],
        ["restart", "berth-agent.service"],
    ]
    (pip,) = [c for c in calls if c[0] == "pip"]
    assert pip[-1] == "berth"
    assert f"it connects to {values['advertise']}\n" in real.stderr


def test_a_root_path_reaches_both_scripts(marker: Path, machine: Machine) -> None:
    data = machine.folder / "agent-data_1.x"
    docker = write(machine.folder, "d.sh", render(BENIGN, "docker", "shell", f"{data}/"))
    assert machine.run(docker).returncode == 0
    assert data.is_dir()
    systemd = write(machine.folder, "s.sh", render(BENIGN, "docker", "systemd", "/var/lib/berth-x"))
    assert "BERTH_DEFAULT_FOLDER='/var/lib/berth-x'\n" in systemd.read_text()


@pytest.mark.parametrize(
    ("advertise", "network"),
    [("127.0.0.1:5000", "host"), ("[::1]:5000", "host"), ("localhost:1", "host"), ("10.1.2.3:5000", None)],
)
def test_docker_script_uses_the_host_network_for_a_loopback_platform(
    advertise: str, network: str | None, machine: Machine
) -> None:
    values = {**BENIGN, "advertise": advertise}
    script = write(machine.folder, "d.sh", render(values, "docker", "shell", str(machine.folder / "d")))
    result = machine.run(script)
    assert result.returncode == 0, result.stderr
    (run,) = [c for c in machine.recorded() if c[:2] == ["docker", "run"]]
    if network is None:
        assert "--network" not in run and "loopback" not in result.stderr
    else:
        assert run[run.index("--network") + 1] == network
        assert f"{advertise} is a loopback address" in result.stderr
    # an explicit choice wins, without the note
    machine.env["BERTH_NETWORK"] = "berth-net"
    chosen = machine.run(script)
    (run,) = [c for c in machine.recorded() if c[:2] == ["docker", "run"]]
    assert run[run.index("--network") + 1] == "berth-net" and "loopback" not in chosen.stderr


@pytest.mark.kube
def test_kubectl_reads_hostile_values_verbatim(tmp_path: Path) -> None:
    """Go's YAML reader (kubectl's client-side dry run) agrees with PyYAML on the escapes."""
    if shutil.which("kubectl") is None or not os.environ.get("KUBECONFIG"):
        pytest.skip("kubectl and a cluster (KUBECONFIG) are needed")
    chosen = [
        c
        for c in ACCEPTED
        if c.field != "image"
        and any(s in c.value for s in ("'", '"', "🚢", "名", "\u2018", ": ", "&", "\\", "$("))
    ]
    assert len(chosen) > 20
    renders = [case.values(tmp_path / "pwned") for case in chosen]
    manifest = write(tmp_path, "m.yaml", "---\n".join(render(values, "k8s", "shell") for values in renders))
    result = subprocess.run(
        ["kubectl", "create", "--dry-run=client", "--validate=false", "-o", "yaml", "-f", str(manifest)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d is not None]
    secrets = [d for d in docs if d["kind"] == "Secret"]
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    assert len(secrets) == len(deployments) == len(renders)
    for values, secret, deployment in zip(renders, secrets, deployments, strict=True):
        assert secret["stringData"]["GRPC_TOKEN"] == values["token"]
        assert deployment["metadata"]["annotations"]["io.berth/platform"] == values["advertise"]
        env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        assert {e["name"]: e.get("value") for e in env}["NAME"] == expected_name(values["node_name"])


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
@pytest.mark.parametrize("template", [("docker", "shell"), ("docker", "systemd")], ids=lambda t: t[1])
def test_hostile_renderings_pass_shellcheck(template: tuple[str, str], marker: Path, tmp_path: Path) -> None:
    """Static view of the same: no hostile rendering has a shellcheck warning or error (what is
    left are notes like SC2016, 'expressions don't expand in single quotes', which is the point;
    SC1110-SC1112 'this is a unicode quote' guess at typos in hand-written code)."""
    # the token goes into both scripts unchanged (node names lose their spaces); short values only,
    # shellcheck takes its time
    cases = [c for c in ACCEPTED if c.field == "token" and len(c.value) < 100]
    scripts = [
        write(tmp_path, f"case-{n}.sh", render(case.values(marker), *template))
        for n, case in enumerate(cases)
    ]
    result = subprocess.run(
        [
            "shellcheck",
            "-s",
            "sh",
            "--severity=warning",
            "--exclude=SC1110,SC1111,SC1112",
            *map(str, scripts),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="the systemd installer requires root")
def test_systemd_script_quotes_the_machines_own_values_for_the_env_file(machine: Machine) -> None:
    """Values from the operator's environment also reach agent.env as systemd reads them back;
    a data folder that the unit file could not carry is refused."""
    root = machine.folder / "root"
    script = write(machine.folder, "install-systemd.sh", render(BENIGN, "docker", "systemd"))
    odd_socket = machine.folder / 'it\'s "a" $x`y`\\.sock'
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(odd_socket))
        pip_args = "--index-url \"https://x/$y\" --no-deps 'z' \\"
        package = "https://h/berth-{tag}.whl?a=1&b='2'"
        machine.env.update(
            {
                "BERTH_ROOT": str(root),
                "PYTHON": str(machine.folder / "bin/python"),
                "BERTH_SYSTEMCTL": str(machine.folder / "bin/systemctl"),
                "HOST_DOCKER_SOCK_PATH": str(odd_socket),
                "BERTH_PIP_ARGS": pip_args,
                "BERTH_UPDATE_PACKAGE": package,
            }
        )
        result = machine.run(script)
        assert result.returncode == 0, result.stderr
        written = parse_env_file((root / "etc/berth/agent.env").read_text())
        assert written["HOST_DOCKER_SOCK_PATH"] == str(odd_socket)
        assert written["DOCKER_HOST"] == f"unix://{odd_socket}"
        assert written["BERTH_PIP_ARGS"] == pip_args
        assert written["BERTH_UPDATE_PACKAGE"] == package

        machine.env["PERSISTENCE_FOLDER"] = str(machine.folder / "my data")
        refused = machine.run(script)
        assert refused.returncode == 2 and "may only hold letters, digits" in refused.stderr
