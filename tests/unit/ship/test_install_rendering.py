"""Install scripts rendered from hostile values (no script runs here: tests/integration/ship runs
them): a value either renders as one inert literal or is refused with a ``RefusedValue`` naming the
field. The k8s manifest parses to the intended objects with the values verbatim; the PowerShell
script keeps the token structure of a benign rendering, the value sitting inside one single-quoted
string; systemd environment values read back exactly."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from kits.install_corpus import (
    ACCEPTED,
    BENIGN,
    CORPUS,
    FIELDS,
    REFUSED,
    Case,
    case_id,
    expected_name,
    parse_env_file,
    render,
)

from berth.platform.install_scripts import RefusedValue, systemd_env_value

# nothing runs in these tests: the marker (where an injected command would write) never exists
MARKER = Path("/nonexistent/berthpwn/pwned")
KINDS = [("docker", "shell"), ("docker", "systemd"), ("docker", "powershell"), ("k8s", "shell")]


@pytest.mark.parametrize("case", REFUSED, ids=case_id)
def test_values_no_script_can_carry_are_refused(case: Case) -> None:
    values = case.values(MARKER)
    for node_type, script_type in KINDS:
        with pytest.raises(RefusedValue) as caught:
            render(values, node_type, script_type)
        assert caught.value.field == {"node_name": "name"}.get(case.field, case.field)
        assert isinstance(caught.value, ValueError)


def test_the_corpus_has_both_outcomes_for_every_field() -> None:
    for field in FIELDS:
        assert any(c.field == field for c in ACCEPTED) and any(c.field == field for c in REFUSED), field


@pytest.mark.parametrize(
    "value",
    [c.value for c in ACCEPTED if c.field == "token" and c.value.strip() == c.value],
    ids=CORPUS.index,
)
def test_systemd_env_values_read_back_exactly(value: str) -> None:
    assert parse_env_file(f"# c\nKEY={systemd_env_value(value)}\nNEXT=1\n") == {"KEY": value, "NEXT": "1"}


# -- the Kubernetes manifest ----------------------------------------------------------------------


def _expected_manifest(values: dict[str, str]) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(render(BENIGN, "k8s", "shell")) if d is not None]
    expected = copy.deepcopy(docs)
    by_kind = {d["kind"]: d for d in expected}
    by_kind["Secret"]["stringData"]["GRPC_TOKEN"] = values["token"]
    deployment = by_kind["Deployment"]
    deployment["metadata"]["annotations"]["io.berth/platform"] = values["advertise"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["image"] = values["image"]
    (name,) = [e for e in container["env"] if e["name"] == "NAME"]
    name["value"] = expected_name(values["node_name"])
    return expected


def test_benign_manifest_has_the_intended_objects() -> None:
    docs = [d for d in yaml.safe_load_all(render(BENIGN, "k8s", "shell")) if d is not None]
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


@pytest.mark.parametrize("case", ACCEPTED, ids=case_id)
def test_manifest_parses_to_the_intended_objects(case: Case) -> None:
    values = case.values(MARKER)
    text = render(values, "k8s", "shell")
    assert text.isascii()
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    assert docs == _expected_manifest(values)


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
            value, i = _single_quoted(text, i + 1)
            tokens.append(("single", value))
        elif char in _PS_DOUBLE:
            start, i = i, _double_quoted_end(text, i + 1)
            tokens.append(("double", text[start:i]))
        else:
            tokens.append(("code", char))
            i += 1
    return tokens


def _single_quoted(text: str, i: int) -> tuple[str, int]:
    """The value of a single-quoted string whose body starts at ``i``, and the index after it."""
    value: list[str] = []
    while True:
        if text[i] in _PS_SINGLE:
            if i + 1 < len(text) and text[i + 1] in _PS_SINGLE:
                value.append(text[i])
                i += 2
                continue
            return "".join(value), i + 1
        value.append(text[i])
        i += 1


def _double_quoted_end(text: str, i: int) -> int:
    """The index after a double-quoted string whose body starts at ``i``."""
    while True:
        if text[i] == "`":
            i += 2
        elif text[i] in _PS_DOUBLE:
            if i + 1 < len(text) and text[i + 1] in _PS_DOUBLE:
                i += 2
                continue
            return i + 1
        else:
            i += 1


@pytest.mark.parametrize("case", ACCEPTED, ids=case_id)
def test_powershell_value_stays_inside_one_single_quoted_string(case: Case) -> None:
    values = case.values(MARKER)
    benign = powershell_tokens(render(BENIGN, "docker", "powershell"))
    hostile = powershell_tokens(render(values, "docker", "powershell"))
    assert len(hostile) == len(benign)
    changed = [(b, h) for b, h in zip(benign, hostile, strict=True) if b != h]
    expected = expected_name(values[case.field]) if case.field == "node_name" else values[case.field]
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


def test_powershell_script_uses_the_host_network_for_a_loopback_platform() -> None:
    for advertise, loopback in (("127.0.0.1:5000", "true"), ("platform.example:5000", "false")):
        tokens = powershell_tokens(render({**BENIGN, "advertise": advertise}, "docker", "powershell"))
        text = "".join(value if kind == "code" else f"<{kind}:{value}>" for kind, value in tokens)
        assert f"$BerthPlatformLoopback = <single:{loopback}>" in text
        assert 'elseif ($BerthPlatformLoopback -eq <double:"true">)' in text
        assert '$RunArgs += @(<double:"--network">, <double:"host">)' in text
