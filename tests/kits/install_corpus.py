"""The hostile-value corpus of the install-script tests and what they share: rendering a script
from a set of values, the expected outcome of each value (independent of the implementation), and a
reader of systemd environment files. Used by tests/unit/ship (rendering only) and
tests/integration/ship (running the rendered scripts)."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import Path

from berth.platform.install_scripts import InstallScripts, fill_template
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


def refused(field: str, value: str) -> bool:
    """Independent of the implementation: what the tests expect to be turned away."""
    if len(value) > LIMITS[field]:
        return True
    if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") or c in BIDI for c in value):
        return True
    if field == "image":
        allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._/:@-")
        return not value or not value[0].isalnum() or not value.isascii() or not set(value) <= allowed
    return False


def expected_name(value: str) -> str:
    return "".join(value.lower().split())


@dataclass(frozen=True)
class Case:
    field: str
    value: str  # with {m}

    def values(self, marker: Path) -> dict[str, str]:
        return {**BENIGN, self.field: self.value.replace(M, str(marker))}


CASES = [Case(field, value) for field in FIELDS for value in CORPUS]
ACCEPTED = [case for case in CASES if not refused(case.field, case.value)]
REFUSED = [case for case in CASES if refused(case.field, case.value)]


def case_id(case: Case) -> str:
    return f"{case.field}-{CORPUS.index(case.value)}"


def fill(template: Path, **overrides: str) -> str:
    """The platform's rule (``fill_template``): every ``@@language:KEY@@`` replaced by its value
    escaped for that language."""
    values = {
        "GRPC_TOKEN": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
        "NODE_NAME": "node-a",
        "PLATFORM_ADDRESS": "127.0.0.1:5000",
        "PLATFORM_LOOPBACK": "true",
        "CA_PEM": CA.rstrip("\n"),
        "INSECURE": "false",
        "IMAGE": "berth/agent:0.1",
        "WORKLOAD_NAME": "berth",
        "DATA_DIR": "/srv/berth",
        **overrides,
    }
    text = fill_template(template.name, template.read_text(), values)
    assert "@@" not in text
    return text


def scripts(values: dict[str, str], advertise: str | None = None) -> InstallScripts:
    return InstallScripts(
        templates_dir=TEMPLATES,
        base_url="http://127.0.0.1:8000",
        team="default",
        advertise=values["advertise"] if advertise is None else advertise,
        ca_pem=CA,
        insecure=False,
        image=values["image"],
    )


def render(values: dict[str, str], node_type: str, script_type: str, root_path: str = "") -> str:
    text, _ = scripts(values).render(
        node_name=values["node_name"],
        node_type=node_type,
        script_type=script_type,
        token=values["token"],
        root_path=root_path,
    )
    return text


KINDS = [("docker", "shell"), ("docker", "systemd"), ("docker", "powershell"), ("k8s", "shell")]


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def parse_env_file(text: str) -> dict[str, str]:
    """systemd.exec(5), EnvironmentFile=: one assignment a line; '#' and ';' lines are comments;
    bare values keep interior white space and a backslash keeps the next character; single quotes
    are verbatim; double quotes process a backslash before \\ " ` $ and keep it before others."""
    parsed: dict[str, str] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped[0] in "#;" or "=" not in stripped:
            continue
        key, raw = stripped.split("=", 1)
        parsed[key] = env_value(raw.strip(" \t\r"))
    return parsed


def env_value(text: str) -> str:
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
