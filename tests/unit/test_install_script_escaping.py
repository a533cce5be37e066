"""The install scripts' escapers, one per target language, and what rendering refuses: each escaper
gives back exactly the value when its language reads the literal (a real ``sh``, PyYAML, a reader of
systemd's EnvironmentFile grammar); a value with control characters, a bad ``rootPath`` or a
template with a raw or commented placeholder is refused."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from berth.platform.install_scripts import (
    DEFAULT_DATA_DIR,
    InstallScripts,
    RefusedValue,
    check_root_path,
    check_text,
    fill_template,
    is_loopback_address,
    k8s_name_part,
    powershell_literal,
    sh_literal,
    systemd_env_value,
    yaml_scalar,
)
from berth.platform.problems import ServerMisconfigured

# Everything a shell, PowerShell, YAML or an env file might read as syntax (NUL excepted: no
# escaper takes it, see test_nul_is_refused_by_every_escaper).
TRICKY = [
    "",
    "plain",
    "'",
    '"',
    "''",
    'it\'s "quoted"',
    "$(touch /tmp/x)",
    "`touch /tmp/x`",
    "${IFS}",
    "$HOME $1 $$ $? $!",
    "a; b && c || d | e & f",
    "\\",
    "\\'",
    "'\\''",
    "a\nb",
    "a\r\nb",
    "\n",
    "tab\there",
    "trailing\\",
    "\u202egnp.exe",
    "🚢 emoji 👩\u200d👩\u200d👧",
    "名前 \u210c \ufb01",
    ": #{a: b} [c] &anchor *alias !!python/object:os.system | > % @ ? - ,",
    "--- \n...",
    "\u2018smart\u2019 \u201alow\u201b \u201cdouble\u201d \u201elow\u201d",
    "$env:PATH @' '@ @\" \"@ <# #>",
    "%h %n %% $$",
    "x" * 10240,
]


def _sh_value(literal: str) -> str:
    result = subprocess.run(
        ["sh", "-c", f"v={literal}\nprintf '%s' \"$v\""], capture_output=True, timeout=10, check=True
    )
    return result.stdout.decode()


@pytest.mark.parametrize("value", TRICKY)
def test_sh_literal_reads_back_exactly_in_a_real_shell(value: str) -> None:
    assert _sh_value(sh_literal(value)) == value


def test_sh_literal_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for value in (f"$(touch {marker})", f"`touch {marker}`", f"'; touch {marker}; '", f"\ntouch {marker}\n"):
        _sh_value(sh_literal(value))
    assert not marker.exists()


@pytest.mark.parametrize("value", TRICKY)
def test_yaml_scalar_reads_back_exactly_and_is_ascii(value: str) -> None:
    literal = yaml_scalar(value)
    assert literal.isascii() and "\n" not in literal
    assert yaml.safe_load(f"key: {literal}\nother: 1\n") == {"key": value, "other": 1}


def test_yaml_scalar_refuses_a_lone_surrogate() -> None:
    with pytest.raises(ValueError, match="surrogate"):
        yaml_scalar("a\udcff")


def parse_systemd_env_value(text: str) -> str:
    """The value part of ``KEY=<text>`` as systemd.exec(5) describes EnvironmentFile=: bare text
    keeps interior white space, a backslash keeps the next character; single quotes are verbatim;
    double quotes process backslash before \\ " ` $ and a line break, and keep other backslashes."""
    text = text.strip(" \t\r")
    if text.startswith("'"):
        assert text.endswith("'") and len(text) >= 2 and "'" not in text[1:-1]
        return text[1:-1]
    if text.startswith('"'):
        out: list[str] = []
        i = 1
        while True:
            char = text[i]
            if char == "\\":
                following = text[i + 1]
                if following == "\n":
                    pass
                elif following in '"\\`$':
                    out.append(following)
                else:
                    out.extend((char, following))
                i += 2
            elif char == '"':
                assert text[i + 1 :].strip() == "", f"text after the closing quote in {text!r}"
                return "".join(out)
            else:
                out.append(char)
                i += 1
    out = []
    i = 0
    while i < len(text):
        if text[i] == "\\":
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


@pytest.mark.parametrize("value", [v for v in TRICKY if v.strip(" \t\r\n") == v or v == ""])
def test_systemd_env_value_reads_back_exactly(value: str) -> None:
    literal = systemd_env_value(value)
    assert parse_systemd_env_value(literal) == value
    if "\n" not in value:
        assert "\n" not in literal


def test_systemd_env_value_leaves_plain_values_bare() -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln-_"
    assert systemd_env_value(token) == token
    assert systemd_env_value("it's") == '"it\'s"'
    assert systemd_env_value('a"b$c`d\\e') == '"a\\"b\\$c\\`d\\\\e"'


def _powershell_single_quoted(literal: str) -> str:
    """Reads one PowerShell single-quoted string the way its tokenizer does: any of the four
    single-quote characters ends it, unless the next character is one too (then it stands for
    the first)."""
    quotes = "'\u2018\u2019\u201a\u201b"
    assert literal[0] in quotes
    out: list[str] = []
    i = 1
    while True:
        char = literal[i]
        if char in quotes:
            if i + 1 < len(literal) and literal[i + 1] in quotes:
                out.append(char)
                i += 2
                continue
            assert i == len(literal) - 1, f"the literal ends early at {i}: {literal!r}"
            return "".join(out)
        out.append(char)
        i += 1


@pytest.mark.parametrize("value", TRICKY)
def test_powershell_literal_reads_back_exactly(value: str) -> None:
    assert _powershell_single_quoted(powershell_literal(value)) == value


def test_powershell_literal_doubles_every_kind_of_single_quote() -> None:
    assert powershell_literal("a'b\u2019c") == "'a''b\u2019\u2019c'"


@pytest.mark.parametrize(
    "escape", [sh_literal, powershell_literal, systemd_env_value], ids=lambda f: str(f.__name__)
)
def test_nul_is_refused_by_every_escaper(escape: object) -> None:
    assert callable(escape)
    with pytest.raises(ValueError, match="NUL"):
        escape("a\0b")


def test_k8s_name_part_accepts_only_short_dns_labels() -> None:
    assert k8s_name_part("berth-e2e-1") == "berth-e2e-1"
    for bad in ("", "Berth", "a_b", "-a", "a-", "a.b", 'a"', "a b", "a\n", "x" * 41):
        with pytest.raises(ValueError, match="DNS label"):
            k8s_name_part(bad)


@pytest.mark.parametrize(
    "value",
    ["a\0b", "a\nb", "a\rb", "\tx", "\x1b[31m", "\x7f", "\x85", "a\u2028b", "\u202eabc", "\u2066", "\ufeff"],
    ids=repr,
)
def test_control_characters_are_refused(value: str) -> None:
    with pytest.raises(RefusedValue, match="control character") as caught:
        check_text("name", value, 100)
    assert caught.value.field == "name"


def test_lone_surrogates_non_characters_and_long_text_are_refused() -> None:
    with pytest.raises(RefusedValue, match="not valid UTF-8"):
        check_text("name", "a\udc80", 100)
    with pytest.raises(RefusedValue, match="non-character"):
        check_text("name", "a\ufffe", 100)
    with pytest.raises(RefusedValue, match="longer than 100"):
        check_text("name", "x" * 101, 100)
    assert check_text("name", "🚢 名前 'it' \"is\" $(x)", 100)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", DEFAULT_DATA_DIR),
        ("/srv/berth", "/srv/berth"),
        ("/data", "/data"),
        ("/var/lib/berth-agent_2/v1.0/", "/var/lib/berth-agent_2/v1.0"),
        ("/home/ops/.berth", "/home/ops/.berth"),
    ],
)
def test_good_root_paths(value: str, expected: str) -> None:
    assert check_root_path(value) == expected


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("srv/berth", "absolute path"),
        ("/", "absolute path"),
        ("//srv", "absolute path"),
        ("/srv//berth", "absolute path"),
        ("/srv/ber th", "absolute path"),
        ("/srv/berth'", "absolute path"),
        ('/srv/"berth', "absolute path"),
        ("/srv/$(touch /tmp/x)", "absolute path"),
        ("/srv/`id`", "absolute path"),
        ("/srv/a;b", "absolute path"),
        ("/srv/a&&b", "absolute path"),
        ("/srv/${IFS}", "absolute path"),
        ("/srv/ä", "absolute path"),
        ("/srv/%n", "absolute path"),
        ("/srv/a\\b", "absolute path"),
        ("~/berth", "absolute path"),
        ("/srv/berth\n", "control character"),
        ("/srv/\0", "control character"),
        ("/srv/\u202eb", "control character"),
        ("/srv/../etc", "'..' segments"),
        ("/srv/./berth", "'..' segments"),
        ("/..", "'..' segments"),
        ("/etc", "system folder"),
        ("/etc/berth", "system folder"),
        ("/usr/local/berth", "system folder"),
        ("/proc/1", "system folder"),
        ("/var", "system folder"),
        ("/tmp", "system folder"),
        ("/" + "a" * 1024, "longer than 1024"),
    ],
)
def test_bad_root_paths_are_refused(value: str, problem: str) -> None:
    with pytest.raises(RefusedValue, match=problem) as caught:
        check_root_path(value)
    assert caught.value.field == "rootPath"
    assert isinstance(caught.value, ValueError)


def test_loopback_addresses() -> None:
    for address in ("127.0.0.1:5000", "127.3.4.5:1", "localhost:5000", "[::1]:5000", "::1", "LOCALHOST"):
        assert is_loopback_address(address), address
    for address in ("10.0.0.1:5000", "platform.example:443", "[2001:db8::1]:5000", "'; x", "", "[::1"):
        assert not is_loopback_address(address), address


def test_a_placeholder_must_name_a_known_language() -> None:
    values = {"NODE_NAME": "n"}
    assert fill_template("t", "A=@@sh:NODE_NAME@@\n", values) == "A='n'\n"
    for template in (
        "A=@@NODE_NAME@@\n",
        "A='@@NODE_NAME@@'\n",
        "A=@@raw:NODE_NAME@@\n",
        "A=@@SH:NODE_NAME@@\n",
        "A=@@sh:node_name@@\n",
        "A=@@sh:NODE_NAME\n",
        "A=@@sh:NODE_NAME@@ @@\n",
    ):
        with pytest.raises(ServerMisconfigured, match=r"line 1: .*(language|unterminated)"):
            fill_template("t", template, values)
    with pytest.raises(ServerMisconfigured, match="has no value"):
        fill_template("t", "A=@@sh:OTHER@@\n", values)


def test_no_placeholder_inside_a_comment() -> None:
    values = {"NODE_NAME": "n"}
    for template in ("# @@sh:NODE_NAME@@\n", "x\n  # name @@sh:NODE_NAME@@\n", "a=1 # @@sh:NODE_NAME@@\n"):
        with pytest.raises(ServerMisconfigured, match="inside a comment"):
            fill_template("t", template, values)
    # `${#var}` and `$#` are not comments
    assert fill_template("t", 'n=${#x} "$#" @@sh:NODE_NAME@@\n', values) == "n=${#x} \"$#\" 'n'\n"


def test_a_value_is_never_scanned_again() -> None:
    values = {"A": "@@sh:B@@", "B": "$(x)"}
    assert fill_template("t", "@@sh:A@@ @@yaml:B@@\n", values) == "'@@sh:B@@' \"$(x)\"\n"


def _scripts(tmp_path: Path, **overrides: object) -> InstallScripts:
    templates = tmp_path / "templates"
    templates.mkdir(exist_ok=True)
    fields: dict[str, object] = {
        "templates_dir": templates,
        "base_url": "http://127.0.0.1:8000",
        "team": "default",
        "advertise": "platform.example:5000",
        "ca_pem": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        "insecure": False,
        "image": "berth:0.1",
        **overrides,
    }
    return InstallScripts(**fields)  # type: ignore[arg-type]


def test_render_refuses_bad_values_before_reading_the_template(tmp_path: Path) -> None:
    scripts = _scripts(tmp_path)
    good = {"node_name": "n", "node_type": "docker", "script_type": "shell", "token": "t", "root_path": ""}
    for field, key, value in (
        ("name", "node_name", "a\0b"),
        ("name", "node_name", "a\nb"),
        ("name", "node_name", "x" * 1025),
        ("token", "token", "t\r"),
        ("rootPath", "root_path", "/srv/$(id)"),
    ):
        with pytest.raises(RefusedValue) as caught:
            scripts.render(**{**good, key: value})
        assert caught.value.field == field
    with pytest.raises(RefusedValue, match="no powershell install script for k8s"):
        scripts.render(**{**good, "node_type": "k8s", "script_type": "powershell"})
    with pytest.raises(ServerMisconfigured, match=r"install-docker\.sh\.tmpl is missing"):
        scripts.render(**good)


def test_platform_values_are_checked_when_built(tmp_path: Path) -> None:
    for field, overrides in (
        ("advertise", {"advertise": "host:1\n"}),
        ("image", {"image": "img\0"}),
        ("caPem", {"ca_pem": "-----BEGIN\u202e"}),
        ("workloadName", {"workload_name": "Berth"}),
    ):
        with pytest.raises(RefusedValue) as caught:
            _scripts(tmp_path, **overrides)
        assert caught.value.field == field


def test_one_line_commands_quote_the_url(tmp_path: Path) -> None:
    scripts = _scripts(tmp_path)
    url = "http://127.0.0.1:8000/api/default/nodes/n1/script"
    assert scripts.one_line_command("n1", "docker", "shell") == f"curl -sSfL '{url}' | sh -"
    assert scripts.one_line_command("n1", "docker", "systemd") == f"curl -sSfL '{url}' | sudo sh -"
    assert scripts.one_line_command("n1", "k8s", "shell") == f"curl -sSfL '{url}' | kubectl apply -f -"
    assert f"-Uri '{url}' " in scripts.one_line_command("n1", "docker", "powershell")
