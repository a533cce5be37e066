"""The one declaration per command kind (``route()``): what it says for each kind, and proof that
mypy refuses a kind (or a lane, or a protocol member) that is added without being handled."""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path

import pytest

from berth.agent import commands as cmd
from berth.agent.commands import CallbackKind
from berth.agent.routing import ErrorAnswer, Ignored, Inline, OnLifecycle, Queued, Stream, Supersede
from berth.model import (
    CloseReason,
    ContainerOperation,
    ContainerRef,
    DeploymentSpec,
    PrefixTarget,
    WorkloadSpec,
)

ROOT = Path(__file__).resolve().parents[2]
REF = ContainerRef("p", "web")


def _deploy() -> cmd.Deploy:
    workload = WorkloadSpec(id="w1", prefix="p", name="web", image_name="nginx", tag="1")
    return cmd.Deploy(DeploymentSpec(id="d1", prefix="p", version_name="v", workloads=(workload,)))


def test_every_kind_in_the_union_declares_a_route() -> None:
    kinds = typing.get_args(cmd.Command)
    assert len(kinds) == 13
    assert all(callable(getattr(kind, "route", None)) for kind in kinds)


@pytest.mark.parametrize(
    ("command", "kind", "lane", "answer"),
    [
        (_deploy(), "deploy", Queued("prefix:p"), None),
        (cmd.WatchState("p"), "container_state", Stream("state:p"), None),
        (cmd.LegacyDelete(REF), "container_delete", Queued("container:p-web"), None),
        (cmd.LegacyDeploy("r1"), "deploy_legacy", Ignored("legacy deploy is not supported"), None),
        (
            cmd.ListSecrets(PrefixTarget("p")),
            "list_secrets",
            Queued("prefix:p"),
            ErrorAnswer(CallbackKind.LIST_SECRETS, PrefixTarget("p")),
        ),
        (cmd.Update("2", 60, "t"), "update", Queued("agent"), None),
        (cmd.Close(CloseReason.CLOSE), "close", Inline(), None),
        (
            cmd.ContainerCommand(REF, ContainerOperation.START),
            "container_command",
            Queued("container:p-web"),
            None,
        ),
        (
            cmd.DeleteContainers(None),
            "delete_containers",
            Queued("none"),
            ErrorAnswer(CallbackKind.DELETE_CONTAINERS, None),
        ),
        (cmd.ContainerLogs(REF, streaming=True, tail_lines=10), "container_log", Stream("log:p-web"), None),
        (
            cmd.ContainerLogs(REF, streaming=False, tail_lines=10),
            "container_log",
            Queued("container:p-web"),
            ErrorAnswer(CallbackKind.CONTAINER_LOG, REF),
        ),
        (cmd.ReplaceToken("t"), "replace_token", Inline(), None),
        (
            cmd.Inspect(REF),
            "container_inspect",
            Queued("container:p-web"),
            ErrorAnswer(CallbackKind.CONTAINER_INSPECT, REF),
        ),
        (cmd.Unknown("empty"), "unknown", Ignored("not understood by this agent"), None),
    ],
)
def test_the_route_of_each_kind(command: cmd.Command, kind: str, lane: object, answer: object) -> None:
    route = command.route()
    assert (route.kind, route.lane, route.answer) == (kind, lane, answer)


@pytest.mark.parametrize(
    ("command", "supersedes"),
    [
        (_deploy(), Supersede("deployment d1", "p", frozenset({"web"}))),
        (cmd.DeleteContainers(PrefixTarget("p")), Supersede("deleteContainers of prefix p", "p")),
        (cmd.DeleteContainers(REF), Supersede("deleteContainers of p-web", "p", frozenset({"web"}))),
        (cmd.LegacyDelete(REF), Supersede("deleteContainers of p-web", "p", frozenset({"web"}))),
        (
            cmd.ContainerCommand(REF, ContainerOperation.STOP),
            Supersede("stop of p-web", "p", frozenset({"web"})),
        ),
        (cmd.ContainerCommand(REF, ContainerOperation.RESTART), None),
        (cmd.Close(CloseReason.SHUTDOWN), Supersede("close(SHUTDOWN)")),
        (cmd.Close(CloseReason.REVOKE_TOKEN), Supersede("close(REVOKE_TOKEN)")),
        (cmd.Close(CloseReason.SELF_DESTRUCT), None),
        (cmd.DeleteContainers(None), None),
    ],
)
def test_which_waits_a_command_ends(command: cmd.Command, supersedes: Supersede | None) -> None:
    assert command.route().supersedes == supersedes


@pytest.mark.parametrize(
    "command",
    [
        cmd.ReplaceToken("t"),
        cmd.Update("2", 60, "t"),
        *(cmd.Close(reason) for reason in CloseReason),
    ],
)
def test_token_and_lifecycle_commands_need_no_runtime(command: cmd.Command) -> None:
    """Served by the life-cycle handler alone: a fresh install's replaceToken, a revoke or a
    shutdown never builds the runtime and its SDK."""
    assert isinstance(command.route().serve, OnLifecycle)


@pytest.mark.parametrize(
    "command",
    [
        _deploy(),
        cmd.WatchState("p"),
        cmd.ContainerLogs(REF, streaming=True, tail_lines=10),
        cmd.ContainerLogs(REF, streaming=False, tail_lines=10),
        cmd.ListSecrets(PrefixTarget("p")),
        cmd.DeleteContainers(None),
        cmd.Inspect(REF),
        cmd.ContainerCommand(REF, ContainerOperation.STOP),
        cmd.LegacyDelete(REF),
    ],
)
def test_container_commands_are_served_by_the_runtime_backed_handlers(command: cmd.Command) -> None:
    assert not isinstance(command.route().serve, OnLifecycle)


# -- mypy refuses what is added without being handled ----------------------------------------------

REBOOT = "@dataclass(frozen=True, slots=True)\nclass Reboot:\n    delay_s: int\n\n\n"
EDITS = {
    # a command kind without a route
    "src/berth/agent/commands.py": (
        "Command = (\n    Deploy\n",
        f"{REBOOT}Command = (\n    Reboot\n    | Deploy\n",
    ),
    # a lane the dispatcher does not run
    "src/berth/agent/routing.py": (
        "Lane = Inline | Queued | Stream | Ignored",
        "class Paused:\n    pass\n\n\nLane = Inline | Queued | Stream | Ignored | Paused",
    ),
    # a protocol command the codec does not decode
    "src/berth/proto/agent_pb2.pyi": (
        '"replaceToken", "containerInspect"]',
        '"replaceToken", "containerInspect", "reboot"]',
    ),
}


CHECKED = ("src/berth/agent/dispatcher.py", "src/berth/agent/codec.py")


@pytest.fixture(scope="module")
def mypy_errors(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """mypy's errors for the dispatcher and the codec, as if the sources had ``EDITS`` applied
    (one run, with mypy's --shadow-file)."""
    folder = tmp_path_factory.mktemp("shadows")
    shadows: list[str] = []
    for original, (old, new) in EDITS.items():
        source = (ROOT / original).read_text()
        assert old in source, f"{original} no longer contains the text this test edits"
        shadow = folder / Path(original).name
        shadow.write_text(source.replace(old, new, 1))
        shadows += ["--shadow-file", original, str(shadow)]
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(folder / "cache"), *shadows, *CHECKED],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return [line for line in result.stdout.splitlines() if ": error: " in line]


def test_only_the_edits_fail_type_checking(mypy_errors: list[str]) -> None:
    """The unedited sources type-check (``make lint``); here every error comes from an edit (the
    codec's table lookup also loses its type, "Returning Any")."""
    assert mypy_errors
    for line in mypy_errors:
        assert line.startswith(CHECKED), line
        assert any(word in line for word in ("Reboot", "Paused", '"reboot"', "Returning Any")), line


def test_a_command_kind_without_a_route_fails_type_checking(mypy_errors: list[str]) -> None:
    assert any(
        line.startswith("src/berth/agent/dispatcher.py") and 'Item "Reboot" of' in line and '"route"' in line
        for line in mypy_errors
    ), mypy_errors


def test_a_lane_the_dispatcher_does_not_run_fails_type_checking(mypy_errors: list[str]) -> None:
    assert any(
        line.startswith("src/berth/agent/dispatcher.py") and '"assert_never"' in line and 'Paused"' in line
        for line in mypy_errors
    ), mypy_errors


def test_a_protocol_command_the_codec_does_not_decode_fails_type_checking(mypy_errors: list[str]) -> None:
    assert any(
        line.startswith("src/berth/agent/codec.py") and 'TypedDict "_Decoders" has no key "reboot"' in line
        for line in mypy_errors
    ), mypy_errors
