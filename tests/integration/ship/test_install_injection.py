"""Install scripts rendered from hostile values: a node name, token, image or platform address
made of quotes, ``$(…)``, backticks, separators, line breaks, NUL, unicode, YAML syntax or 10 KB of
text either renders as one inert literal or is refused with a ``RefusedValue`` naming the field.

The shell and systemd installers are RUN (dry and for real) with recording stand-ins for docker,
systemctl, python and pip on PATH: no injected command runs (its marker file never appears), and
the recorded argument vectors and written env files carry each value as one literal. The k8s
manifest parses to the intended objects with the values verbatim (also through kubectl's Go YAML
reader when a cluster is configured); the PowerShell script keeps the token structure of a benign
rendering, the value sitting inside one single-quoted string."""

from __future__ import annotations

import copy
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from berth.platform.install_scripts import (
    DEFAULT_DATA_DIR,
    InstallScripts,
    RefusedValue,
    systemd_env_value,
)
from berth.platform.package_data import INSTALL_SCRIPTS, package_folder

TEMPLATES = package_folder(INSTALL_SCRIPTS)
CA = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n"
M = "{m}"  # replaced by the marker file's path; an injected command would create it

# The values, with {m} for the marker. Node names are lower-cased and lose their white space
# before they are used, so the node-name attacks also come with ${IFS} instead of spaces.
CORPUS = [
    "'",
    '"',
    'it\'s "quoted"',
    f"$(touch {M})",
    f"$(touch${{IFS}}{M})",
    f"`touch {M}`",
    f"`touch${{IFS}}{M}`",
    f"'; touch {M}; '",
    f"';touch${{IFS}}{M};'",
    f'"; touch {M}; "',
    f"a;touch${{IFS}}{M}",
    f"a && touch {M}",
    f"a||touch${{IFS}}{M}",
    f"a|touch${{IFS}}{M}",
    f"a&touch${{IFS}}{M}",
    f"${{IFS}}touch${{IFS}}{M}",
    "$HOME${PATH}$1$$",
    "\\",
    "\\'",
    "'\\''",
    "trailing\\",
    f"a\ntouch {M}",
    f"a\rtouch {M}",
    f"a\r\ntouch {M}",
    "a\0b",
    "\u202egnp.exe",
    "🚢-berth-👩\u200d👩\u200d👧",
    "名前\u210c\ufb01",
    "\u2018smart\u2019\u201alow\u201b\u201cdouble\u201d\u201elow\u201d",
    f"\u2018;touch${{IFS}}{M};\u2018",
    f"$(Invoke-Expression 'touch {M}')",
    "$env:PATH@''@@\"\"@<##>",
    ": ",
    "#comment",
    "a #comment",
    "{a: b}",
    "[1, 2]",
    "&anchor",
    "*alias",
    "!!python/object/apply:os.system ['touch x']",
    "- item",
    "? key",
    "|",
    ">",
    "%TAG ! tag:x",
    "---",
    "@@sh:GRPC_TOKEN@@",
    "BERTH_CA_PEM_END",
    "ENV",
    "--privileged",
    "-v /:/host",
    "x" * 10240,
    ("ab'$(x)`y`\"" * 100)[:1000],
]
FIELDS = ("node_name", "token", "image", "advertise")
LIMITS = {"node_name": 1024, "token": 8192, "image": 1024, "advertise": 1024}
BENIGN = {
    "node_name": "node-a",
    "token": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
    "image": "berth/agent:0.1",
    "advertise": "platform.example:5000",
}
BIDI = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff")


def _refused(field: str, value: str) -> bool:
    """Independent of the implementation: what the tests expect to be turned away."""
    if len(value) > LIMITS[field]:
        return True
    if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") or c in BIDI for c in value):
        return True
    if field == "image":
        allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._/:@-")
        return not value or not value[0].isalnum() or not value.isascii() or not set(value) <= allowed
    return False


def _expected_name(value: str) -> str:
    return "".join(value.lower().split())


@dataclass(frozen=True)
class Case:
    field: str
    value: str  # with {m}

    def values(self, marker: Path) -> dict[str, str]:
        return {**BENIGN, self.field: self.value.replace(M, str(marker))}


CASES = [Case(field, value) for field in FIELDS for value in CORPUS]
ACCEPTED = [case for case in CASES if not _refused(case.field, case.value)]
REFUSED = [case for case in CASES if _refused(case.field, case.value)]


def _case_id(case: Case) -> str:
    return f"{case.field}-{CORPUS.index(case.value)}"


@pytest.fixture
def marker() -> Iterator[Path]:
    """A path of lower-case letters, digits and '/' only (it survives the node-name rule)."""
    folder = Path(tempfile.mkdtemp(prefix="berthpwn"))
    assert str(folder) == str(folder).lower() and " " not in str(folder)
    yield folder / "pwned"
    shutil.rmtree(folder, ignore_errors=True)


def _scripts(values: dict[str, str], advertise: str | None = None) -> InstallScripts:
    return InstallScripts(
        templates_dir=TEMPLATES,
        base_url="http://127.0.0.1:8000",
        team="default",
        advertise=values["advertise"] if advertise is None else advertise,
        ca_pem=CA,
        insecure=False,
        image=values["image"],
    )


def _render(values: dict[str, str], node_type: str, script_type: str, root_path: str = "") -> str:
    text, _ = _scripts(values).render(
        node_name=values["node_name"],
        node_type=node_type,
        script_type=script_type,
        token=values["token"],
        root_path=root_path,
    )
    return text


KINDS = [("docker", "shell"), ("docker", "systemd"), ("docker", "powershell"), ("k8s", "shell")]


@pytest.mark.parametrize("case", REFUSED, ids=_case_id)
def test_values_no_script_can_carry_are_refused(case: Case, marker: Path) -> None:
    values = case.values(marker)
    for node_type, script_type in KINDS:
        with pytest.raises(RefusedValue) as caught:
            _render(values, node_type, script_type)
        assert caught.value.field == {"node_name": "name"}.get(case.field, case.field)
        assert isinstance(caught.value, ValueError)


def test_the_corpus_has_both_outcomes_for_every_field() -> None:
    for field in FIELDS:
        assert any(c.field == field for c in ACCEPTED) and any(c.field == field for c in REFUSED), field


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


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("case", ACCEPTED, ids=_case_id)
def test_docker_script_runs_nothing_injected(case: Case, marker: Path, machine: Machine) -> None:
    values = case.values(marker)
    data = machine.folder / "data"
    script = _write(machine.folder, "install-docker.sh", _render(values, "docker", "shell", str(data)))

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
    assert f"NAME={_expected_name(values['node_name'])}" in env_lines
    assert len(env_lines) == 7  # no line was added by a value
    assert f"it connects to {values['advertise']}\n" in real.stderr


def _parse_env_file(text: str) -> dict[str, str]:
    """systemd.exec(5), EnvironmentFile=: one assignment a line; '#' and ';' lines are comments;
    bare values keep interior white space and a backslash keeps the next character; single quotes
    are verbatim; double quotes process a backslash before \\ " ` $ and keep it before others."""
    parsed: dict[str, str] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped[0] in "#;" or "=" not in stripped:
            continue
        key, raw = stripped.split("=", 1)
        parsed[key] = _env_value(raw.strip(" \t\r"))
    return parsed


def _env_value(text: str) -> str:
    if text.startswith("'"):
        assert len(text) >= 2 and text.endswith("'") and "'" not in text[1:-1], text
        return text[1:-1]
    out: list[str] = []
    if text.startswith('"'):
        i = 1
        while text[i] != '"':
            if text[i] == "\\":
                out.append(text[i + 1] if text[i + 1] in '"\\`$' else text[i : i + 2])
                i += 2
            else:
                out.append(text[i])
                i += 1
        assert i == len(text) - 1, f"text after the closing quote: {text!r}"
        return "".join(out)
    i = 0
    while i < len(text):
        out.append(text[i + 1] if text[i] == "\\" else text[i])
        i += 2 if text[i] == "\\" else 1
    return "".join(out)


@pytest.mark.parametrize(
    "value",
    [c.value for c in ACCEPTED if c.field == "token" and c.value.strip() == c.value],
    ids=CORPUS.index,
)
def test_systemd_env_values_read_back_exactly(value: str) -> None:
    assert _parse_env_file(f"# c\nKEY={systemd_env_value(value)}\nNEXT=1\n") == {"KEY": value, "NEXT": "1"}


@pytest.mark.skipif(os.geteuid() != 0, reason="the systemd installer requires root")
@pytest.mark.parametrize("case", ACCEPTED, ids=_case_id)
def test_systemd_script_runs_nothing_injected(case: Case, marker: Path, machine: Machine) -> None:
    values = case.values(marker)
    root = machine.folder / "root"
    script = _write(machine.folder, "install-systemd.sh", _render(values, "docker", "systemd"))
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
    written = _parse_env_file(env_file.read_text(encoding="utf-8"))
    assert written["GRPC_TOKEN"] == values["token"]
    assert written["NAME"] == _expected_name(values["node_name"])
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
    docker = _write(machine.folder, "d.sh", _render(BENIGN, "docker", "shell", f"{data}/"))
    assert machine.run(docker).returncode == 0
    assert data.is_dir()
    systemd = _write(machine.folder, "s.sh", _render(BENIGN, "docker", "systemd", "/var/lib/berth-x"))
    assert "BERTH_DEFAULT_FOLDER='/var/lib/berth-x'\n" in systemd.read_text()


@pytest.mark.parametrize(
    ("advertise", "network"),
    [("127.0.0.1:5000", "host"), ("[::1]:5000", "host"), ("localhost:1", "host"), ("10.1.2.3:5000", None)],
)
def test_docker_script_uses_the_host_network_for_a_loopback_platform(
    advertise: str, network: str | None, machine: Machine
) -> None:
    values = {**BENIGN, "advertise": advertise}
    script = _write(machine.folder, "d.sh", _render(values, "docker", "shell", str(machine.folder / "d")))
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


# -- the Kubernetes manifest ----------------------------------------------------------------------


def _expected_manifest(values: dict[str, str]) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(_render(BENIGN, "k8s", "shell")) if d is not None]
    expected = copy.deepcopy(docs)
    by_kind = {d["kind"]: d for d in expected}
    by_kind["Secret"]["stringData"]["GRPC_TOKEN"] = values["token"]
    deployment = by_kind["Deployment"]
    deployment["metadata"]["annotations"]["io.berth/platform"] = values["advertise"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["image"] = values["image"]
    (name,) = [e for e in container["env"] if e["name"] == "NAME"]
    name["value"] = _expected_name(values["node_name"])
    return expected


def test_benign_manifest_has_the_intended_objects() -> None:
    docs = [d for d in yaml.safe_load_all(_render(BENIGN, "k8s", "shell")) if d is not None]
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        ("Namespace", "berth"),
        ("ServiceAccount", "berth-agent"),
        ("ClusterRole", "berth-agent"),
        ("ClusterRoleBinding", "berth-agent"),
        ("Secret", "berth-install-token"),
        ("ConfigMap", "berth-ca"),
        ("Deployment", "berth-agent"),
    ]
    container = docs[-1]["spec"]["template"]["spec"]["containers"][0]
    assert {e["name"]: e.get("value") for e in container["env"]}["NAME"] == "node-a"


@pytest.mark.parametrize("case", ACCEPTED, ids=_case_id)
def test_manifest_parses_to_the_intended_objects(case: Case, marker: Path) -> None:
    values = case.values(marker)
    text = _render(values, "k8s", "shell")
    assert text.isascii()
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    assert docs == _expected_manifest(values)


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
    manifest = _write(tmp_path, "m.yaml", "---\n".join(_render(values, "k8s", "shell") for values in renders))
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
        assert {e["name"]: e.get("value") for e in env}["NAME"] == _expected_name(values["node_name"])


# -- the PowerShell script (no PowerShell here: its token structure) ---------------------------------

_PS_SINGLE = "'\u2018\u2019\u201a\u201b"
_PS_DOUBLE = '"\u201c\u201d\u201e'


def powershell_tokens(text: str) -> list[tuple[str, str]]:
    """A small PowerShell tokenizer, enough to see where strings and comments begin and end:
    ``#`` and ``<# #>`` comments, single-quoted strings (any of the four single quotes, doubled to
    escape), double-quoted strings (backtick escapes, doubled quotes); everything else is code,
    one token per character. Here-strings make it fail (the template has none)."""
    tokens: list[tuple[str, str]] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "@" and i + 1 < len(text) and text[i + 1] in _PS_SINGLE + _PS_DOUBLE:
            raise AssertionError(f"a here-string at {i}")
        if text.startswith("<#", i):
            end = text.index("#>", i + 2) + 2
            tokens.append(("comment", text[i:end]))
            i = end
        elif char == "#":
            end = text.find("\n", i)
            end = len(text) if end < 0 else end
            tokens.append(("comment", text[i:end]))
            i = end
        elif char in _PS_SINGLE:
            value: list[str] = []
            i += 1
            while True:
                if text[i] in _PS_SINGLE:
                    if i + 1 < len(text) and text[i + 1] in _PS_SINGLE:
                        value.append(text[i])
                        i += 2
                        continue
                    i += 1
                    break
                value.append(text[i])
                i += 1
            tokens.append(("single", "".join(value)))
        elif char in _PS_DOUBLE:
            start = i
            i += 1
            while True:
                if text[i] == "`":
                    i += 2
                elif text[i] in _PS_DOUBLE:
                    if i + 1 < len(text) and text[i + 1] in _PS_DOUBLE:
                        i += 2
                        continue
                    i += 1
                    break
                else:
                    i += 1
            tokens.append(("double", text[start:i]))
        else:
            tokens.append(("code", char))
            i += 1
    return tokens


@pytest.mark.parametrize("case", ACCEPTED, ids=_case_id)
def test_powershell_value_stays_inside_one_single_quoted_string(case: Case, marker: Path) -> None:
    values = case.values(marker)
    benign = powershell_tokens(_render(BENIGN, "docker", "powershell"))
    hostile = powershell_tokens(_render(values, "docker", "powershell"))
    assert len(hostile) == len(benign)
    changed = [(b, h) for b, h in zip(benign, hostile, strict=True) if b != h]
    expected = _expected_name(values[case.field]) if case.field == "node_name" else values[case.field]
    if expected == BENIGN[case.field]:
        assert not changed
        return
    # one string changed, nothing else: no new code, no comment touched
    assert changed == [(("single", BENIGN[case.field]), ("single", expected))]


def test_powershell_tokenizer_sees_a_break_out() -> None:
    """The check above can fail: a raw paste of a quote changes the structure."""
    good = powershell_tokens("$a = 'x''y'\n")
    assert ("single", "x'y") in good
    broken = powershell_tokens("$a = 'x'; touch pwned; ''\n")
    assert ("single", "x") in broken and ("code", "t") in broken
    smart = powershell_tokens("$a = 'x\u2019; touch pwned\n")
    assert ("single", "x") in smart and ("code", "t") in smart


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
        _write(tmp_path, f"case-{n}.sh", _render(case.values(marker), *template))
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


def test_powershell_script_uses_the_host_network_for_a_loopback_platform() -> None:
    for advertise, loopback in (("127.0.0.1:5000", "true"), ("platform.example:5000", "false")):
        tokens = powershell_tokens(_render({**BENIGN, "advertise": advertise}, "docker", "powershell"))
        text = "".join(value if kind == "code" else f"<{kind}:{value}>" for kind, value in tokens)
        assert f"$BerthPlatformLoopback = <single:{loopback}>" in text
        assert 'elseif ($BerthPlatformLoopback -eq <double:"true">)' in text
        assert '$RunArgs += @(<double:"--network">, <double:"host">)' in text


@pytest.mark.skipif(os.geteuid() != 0, reason="the systemd installer requires root")
def test_systemd_script_quotes_the_machines_own_values_for_the_env_file(machine: Machine) -> None:
    """Values from the operator's environment also reach agent.env as systemd reads them back;
    a data folder that the unit file could not carry is refused."""
    root = machine.folder / "root"
    script = _write(machine.folder, "install-systemd.sh", _render(BENIGN, "docker", "systemd"))
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
        written = _parse_env_file((root / "etc/berth/agent.env").read_text())
        assert written["HOST_DOCKER_SOCK_PATH"] == str(odd_socket)
        assert written["DOCKER_HOST"] == f"unix://{odd_socket}"
        assert written["BERTH_PIP_ARGS"] == pip_args
        assert written["BERTH_UPDATE_PACKAGE"] == package

        machine.env["PERSISTENCE_FOLDER"] = str(machine.folder / "my data")
        refused = machine.run(script)
        assert refused.returncode == 2 and "may only hold letters, digits" in refused.stderr
