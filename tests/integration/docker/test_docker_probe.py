"""The SDK-free engine check the agent runs before its first Connect, on the real engine."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest
from docker_support import TEST_LABEL

from berth.errors import PermanentCommandError, TemporaryCommandError
from berth.runtimes.docker.probe import EngineProbe, runtime_info

pytestmark = pytest.mark.docker


async def test_preflight_answers_what_the_sdk_sees(docker_client: docker.DockerClient) -> None:
    probe = EngineProbe.for_environment()
    assert probe is not None
    info = await probe.preflight()
    version = docker_client.version()
    assert (info.kind, info.version, info.api_version) == (
        "docker",
        version["Version"],
        version["ApiVersion"],
    )


async def test_own_container_name_is_the_first_candidate_the_engine_knows(
    docker_client: docker.DockerClient, prefix: str
) -> None:
    created = docker_client.api.create_container(
        "local/busybox:1",
        name=f"{prefix}-self",
        labels={TEST_LABEL: "1", "org.dyrectorio.container.prefix": prefix},
    )
    probe = EngineProbe.for_environment()
    assert probe is not None
    assert await probe.own_container_name([f"{prefix}-missing", created["Id"]]) == f"{prefix}-self"
    assert await probe.own_container_name([f"{prefix}-missing"]) is None
    assert await probe.own_container_name([]) is None


async def test_an_absent_socket_is_temporary(tmp_path: Path) -> None:
    probe = EngineProbe.for_environment({"DOCKER_HOST": f"unix://{tmp_path / 'none.sock'}"})
    assert probe is not None
    with pytest.raises(TemporaryCommandError, match="not reachable"):
        await probe.preflight()


def test_only_a_local_socket_is_probed() -> None:
    assert EngineProbe.for_environment({}) is not None
    assert EngineProbe.for_environment({"DOCKER_HOST": "unix:///run/podman.sock"}) is not None
    assert EngineProbe.for_environment({"DOCKER_HOST": "tcp://10.0.0.1:2376"}) is None
    assert EngineProbe.for_environment({"DOCKER_HOST": "ssh://node"}) is None


def test_version_rules() -> None:
    assert runtime_info({"Version": "24.0.7", "ApiVersion": "1.43"}).warnings == ()
    assert runtime_info({"Version": "20.10.24"}).warnings != ()
    podman = runtime_info({"Version": "4.9.3", "Components": [{"Name": "Podman Engine", "Version": "4.9.3"}]})
    assert (podman.kind, podman.version) == ("podman", "4.9.3")
    with pytest.raises(PermanentCommandError, match="too old"):
        runtime_info({"Version": "19.03.1"})
