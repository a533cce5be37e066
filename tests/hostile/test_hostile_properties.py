"""Property-based: generated commands, across and beyond the valid range, through the fake
platform's real gRPC server into the agent. Every one gets a well-formed outcome — a deployment
ends SUCCESSFUL, or FAILED with a message; a callback is answered or gets a CommandError — and the
agent never crashes, hangs or drops its session.

Many examples on the in-memory runtime; a modest number on the real Docker runtime (images kept
to local ones, prefixes kept under the test's own, so nothing on the shared engine is touched).
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import docker
import pytest
from command_strategies import NAMES, callbacks, deploys, plausible_deploys
from fakeplatform import FakePlatform, PlatformServer, RunningAgent, agent_settings, running_agent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kits.fault_kit import DockerAgent, sweep
from waiting import wait_for

from berth.agent.session import is_header_safe
from berth.proto import agent_pb2, common_pb2
from berth.runtimes.memory import MemoryRuntime

ANSWERS = (
    "ContainerInspect",
    "ContainerLog",
    "SecretList",
    "DeleteContainers",
    "CommandError",
    "AbortUpdate",
)
CALLBACKS_WITH_ANSWER = ("containerInspect", "containerLog", "listSecrets", "deleteContainers", "update")
HYPOTHESIS = settings(
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
    derandomize=True,
)


def answers(platform: FakePlatform) -> int:
    return sum(len(platform.calls(method)) for method in ANSWERS)


async def judge(
    platform: FakePlatform, running: RunningAgent, command: agent_pb2.AgentCommand, within_s: float
) -> None:
    """Send one command and check its outcome."""
    metrics = running.agent.metrics
    finished = sum(metrics.commands.values())
    answered = answers(platform)
    deployments = len(platform.streams_of("DeploymentStatus"))
    await platform.send(command)
    started = time.monotonic()
    await _poll(lambda: sum(metrics.commands.values()) > finished, within_s)
    outcomes = {key: count for key, count in metrics.commands.items() if key[1] == "crashed"}
    assert outcomes == {}, f"the agent crashed on {command}"
    kind = command.WhichOneof("command")
    if kind == "deploy" and command.deploy.id and is_header_safe(command.deploy.id):
        stream = await platform.wait_stream("DeploymentStatus", count=deployments + 1, within_s=within_s)
        await _poll(stream.done.is_set, within_s - (time.monotonic() - started))
        statuses = [m.deploymentStatus for m in stream.messages if m.WhichOneof("data") == "deploymentStatus"]
        assert statuses[0] == common_pb2.IN_PROGRESS
        assert statuses[-1] in (common_pb2.SUCCESSFUL, common_pb2.FAILED)
        assert len(statuses) == 2
        if statuses[-1] == common_pb2.FAILED:
            assert any(line.strip() for line in stream.messages[-1].log)
        assert stream.half_closed_by_agent
    if kind == "deploy" and not is_header_safe(command.deploy.id):
        # Unreportable (metadata is ASCII): refused, never run unseen.
        assert len(platform.streams_of("DeploymentStatus")) == deployments
        assert metrics.count("deploy", "failed") + metrics.count("deploy", "ignored") > 0
    if kind in CALLBACKS_WITH_ANSWER and identifiers_reportable(command):
        await platform.wait_for(lambda: answers(platform) > answered, within_s)
        errors = platform.calls("CommandError")
        if len(errors) and answers(platform) == answered + 1 and errors[-1] is platform.unary[-1]:
            assert errors[-1].message.WhichOneof("command") is not None
            which = errors[-1].message.WhichOneof("command")
            assert getattr(errors[-1].message, which).error.strip()
    assert platform.connected and len(platform.connects) == 1, "the session was lost"


def identifiers_reportable(command: agent_pb2.AgentCommand) -> bool:
    """Answers carry the prefix and name as metadata; the protocol cannot carry other text."""
    payload = getattr(command, command.WhichOneof("command") or "")
    found: list[str] = []
    for field in ("container", "target"):
        if payload.DESCRIPTOR.fields_by_name.get(field) is not None and payload.HasField(field):
            inner = getattr(payload, field)
            if field == "target" and inner.HasField("container"):
                inner = inner.container
            found += [getattr(inner, name, "") for name in ("prefix", "name")]
    return all(is_header_safe(value) for value in found)


async def _poll(predicate: Callable[[], bool], within_s: float) -> None:
    await wait_for(
        predicate, max(within_s, 0.1), "no outcome in time: the agent hung on a command", interval_s=0.005
    )


# -- the in-memory runtime: many examples --------------------------------------------------------


@pytest.fixture
async def memory_agent(tmp_path: Path) -> AsyncIterator[tuple[FakePlatform, RunningAgent]]:
    async with PlatformServer() as server:
        runtime = MemoryRuntime()
        settings_ = agent_settings(tmp_path / "data", server.platform.issue_connection_token())
        async with running_agent(settings_, runtime=runtime) as running:
            await server.platform.wait_accepted()
            yield server.platform, running


MEMORY_PREFIXES = st.one_of(NAMES, st.sampled_from(["p", "p-a", "p-a-b"]))
MEMORY_IMAGES = st.tuples(st.one_of(st.just("busybox"), st.text(max_size=30)), st.text(max_size=20))


@settings(HYPOTHESIS, max_examples=int(os.environ.get("BERTH_HYPOTHESIS_EXAMPLES", "400")))
@given(command=st.one_of(deploys(MEMORY_PREFIXES, MEMORY_IMAGES), callbacks(MEMORY_PREFIXES)))
async def test_every_command_gets_a_well_formed_outcome_memory(
    memory_agent: tuple[FakePlatform, RunningAgent], command: agent_pb2.AgentCommand
) -> None:
    platform, running = memory_agent
    await judge(platform, running, command, within_s=5)


# -- the Docker runtime: a modest number of examples ----------------------------------------------

DOCKER_PREFIX = "fhprop"
DOCKER_PREFIXES = st.sampled_from([DOCKER_PREFIX, f"{DOCKER_PREFIX}-x", "UPPER", "../x", "a b", "ü"])
DOCKER_IMAGES = st.sampled_from(
    [("local/busybox", "1"), ("127.0.0.1:5000/berth/absent", "1"), ("local/busybox", "")]
)


@pytest.fixture
def swept(docker_client: docker.DockerClient) -> Iterator[None]:
    for prefix in (DOCKER_PREFIX, f"{DOCKER_PREFIX}-x"):
        sweep(docker_client, prefix)
    yield
    for prefix in (DOCKER_PREFIX, f"{DOCKER_PREFIX}-x"):
        sweep(docker_client, prefix)


@pytest.mark.docker
@settings(HYPOTHESIS, max_examples=int(os.environ.get("BERTH_HYPOTHESIS_DOCKER_EXAMPLES", "15")))
@given(
    command=st.one_of(deploys(DOCKER_PREFIXES, DOCKER_IMAGES, max_workloads=2), callbacks(DOCKER_PREFIXES))
)
async def test_every_command_gets_a_well_formed_outcome_docker(
    swept: None, docker_agent: DockerAgent, command: agent_pb2.AgentCommand
) -> None:
    await judge(docker_agent.platform, docker_agent.running, command, within_s=60)


@pytest.mark.docker
@settings(HYPOTHESIS, max_examples=int(os.environ.get("BERTH_HYPOTHESIS_DOCKER_EXAMPLES", "15")))
@given(command=plausible_deploys(DOCKER_PREFIX))
async def test_deployments_reaching_the_engine_get_a_well_formed_outcome(
    swept: None, docker_agent: DockerAgent, command: agent_pb2.AgentCommand
) -> None:
    await judge(docker_agent.platform, docker_agent.running, command, within_s=60)
