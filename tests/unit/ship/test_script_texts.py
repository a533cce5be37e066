"""The install-script templates as text: the systemd unit embedded verbatim, the PowerShell script's
structure (no PowerShell here; running the shell scripts: tests/integration/ship)."""

from __future__ import annotations

import re

from kits.install_corpus import CA, TEMPLATES, fill


def test_systemd_script_embeds_the_unit_file_verbatim() -> None:
    text = (TEMPLATES / "install-systemd.sh.tmpl").read_text()
    embedded = text.split("<<'UNIT_FILE'\n", 1)[1].split("\nUNIT_FILE\n", 1)[0] + "\n"
    assert embedded == (TEMPLATES / "berth-agent.service").read_text()


def test_powershell_script_renders_and_is_balanced() -> None:
    """No PowerShell on this machine: check what can be checked without one. Every placeholder is
    known, the CA is one single-quoted string, brackets balance outside strings, and the
    token goes into an env file, never onto a command line."""
    text = fill(TEMPLATES / "install-docker.ps1.tmpl")
    assert f"$BerthCaPem = '{CA.strip()}'\n" in text
    code = text.replace(f"'{CA.strip()}'", "''")  # the one string over several lines
    code = re.sub(r"'[^'\n]*'", "''", code)
    code = re.sub(r'"(?:`.|[^"`\n])*"', '""', code)
    code = "\n".join(line.split("#", 1)[0] for line in code.splitlines())
    for opening, closing in ("{}", "()", "[]"):
        assert code.count(opening) == code.count(closing), (opening, closing)
    assert '"GRPC_TOKEN=$BerthToken"' in text and "--env-file" in text
    assert "exit " not in code  # exit would close the user's shell under Invoke-Expression
