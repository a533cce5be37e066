"""The extras table in berth/extras.py says what pyproject.toml installs, and turns a missing
module of an extra into one line naming it (the wheel tests run it from a real plain install)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from berth.extras import EXTRAS, extra_providing, missing_extra_message

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _names(requirements: list[str]) -> set[str]:
    return {re.match(r"[A-Za-z0-9._-]+", r).group(0).lower() for r in requirements}  # type: ignore[union-attr]


# The developers' extras (tests, lint, benchmark plots): no command of berth needs them.
TOOL_EXTRAS = {"dev", "bench"}


def test_the_table_lists_exactly_the_distributions_of_each_extra() -> None:
    declared = {
        name: deps for name, deps in PROJECT["optional-dependencies"].items() if name not in TOOL_EXTRAS
    }
    assert set(declared) == set(EXTRAS)
    for extra, distributions in EXTRAS.items():
        assert {d.lower() for d in distributions} == _names(declared[extra]), extra


def test_no_extra_repeats_a_core_dependency() -> None:
    core = _names(PROJECT["dependencies"])
    for extra, distributions in EXTRAS.items():
        assert not core & {d.lower() for d in distributions}, extra


def test_a_missing_module_of_an_extra_names_the_extra() -> None:
    err = ModuleNotFoundError("No module named 'kubernetes'", name="kubernetes.client")
    assert missing_extra_message("berth agent", err) == (
        "berth agent: needs the optional 'kubernetes' extra (the kubernetes module is not installed);"
        " install it with: pip install 'berth[kubernetes]'"
    )
    assert extra_providing("jwt") == "platform"


def test_a_module_of_no_extra_is_not_explained_away() -> None:
    assert extra_providing("berth.agent.nonexistent") is None
    assert extra_providing(None) is None
    assert missing_extra_message("berth agent", ModuleNotFoundError("x", name="docker")) is None
