"""Names that try to leave the persistence folder or collide, on the real Docker runtime: path
traversal in volume names and init-container volume links, absolute host paths (a deployment may
ask for one on purpose, and gets exactly that), names that collide across prefixes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import docker
import pytest
from kits.fault_kit import (
    PREFIX_LABEL,
    DockerAgent,
    deploy,
    deployment_stream,
    final_status,
    sweep,
    workload,
)

from berth.proto import agent_pb2, common_pb2

pytestmark = [pytest.mark.docker]


def outside(tree: Path, data_dir: Path) -> set[Path]:
    return {p for p in tree.rglob("*") if not p.is_relative_to(data_dir)}


@pytest.mark.parametrize(
    "name", ["../../escape", "a/../../escape", "..", "~root/escape", "x/../../../escape"]
)
async def test_traversing_volume_name_fails_and_writes_nothing_outside(
    docker_agent: DockerAgent, prefix: str, tmp_path: Path, name: str
) -> None:
    before = outside(tmp_path, docker_agent.data_dir)
    volume = agent_pb2.Volume(name=name, path="/data")
    await docker_agent.platform.send(deploy("trav", prefix, workload("web", volumes=[volume])))
    record = await deployment_stream(docker_agent.platform, "trav")
    assert final_status(record) == common_pb2.FAILED
    assert "volume name" in " ".join(record.messages[-1].log)
    assert outside(tmp_path, docker_agent.data_dir) == before


async def test_traversing_init_container_link_creates_nothing_outside(
    docker_agent: DockerAgent, prefix: str, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    before = outside(tmp_path, docker_agent.data_dir)
    init = agent_pb2.InitContainer(
        name="init",
        image="local/busybox:1",
        command=["sh", "-c", "touch /x/planted || true"],
        volumes=[agent_pb2.VolumeLink(name="../../escape", path="/x")],
    )
    request = workload("web", volumes=[agent_pb2.Volume(name="data", path="/data")], init_containers=[init])
    await docker_agent.platform.send(deploy("link", prefix, request))
    record = await deployment_stream(docker_agent.platform, "link")
    outcome = final_status(record)
    assert outcome in (common_pb2.SUCCESSFUL, common_pb2.FAILED)
    if outcome == common_pb2.FAILED:
        assert any(line.strip() for line in record.messages[-1].log)
    assert outside(tmp_path, docker_agent.data_dir) == before
    assert not [p for p in outside(tmp_path, docker_agent.data_dir) if p.name in ("escape", "planted")]


async def test_absolute_host_path_is_bound_exactly_as_asked(
    docker_agent: DockerAgent, prefix: str, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    host = tmp_path / "host-folder"
    host.mkdir()
    request = workload("web", volumes=[agent_pb2.Volume(name=str(host), path="/mnt/host")])
    await docker_agent.platform.send(deploy("abs", prefix, request))
    assert final_status(await deployment_stream(docker_agent.platform, "abs")) == common_pb2.SUCCESSFUL
    mounts = (await asyncio.to_thread(docker_client.api.inspect_container, f"{prefix}-web"))["Mounts"]
    assert [(m["Source"], m["Destination"]) for m in mounts] == [(str(host), "/mnt/host")]


async def test_names_colliding_across_prefixes_do_not_take_over(
    docker_agent: DockerAgent, prefix: str, docker_client: docker.DockerClient
) -> None:
    """``<p>`` + ``b-c`` and ``<p>-b`` + ``c`` are both container ``<p>-b-c``."""
    other = f"{prefix}-b"
    try:
        await docker_agent.platform.send(deploy("mine", prefix, workload("b-c")))
        assert final_status(await deployment_stream(docker_agent.platform, "mine")) == common_pb2.SUCCESSFUL
        first = await asyncio.to_thread(docker_client.api.inspect_container, f"{prefix}-b-c")
        await docker_agent.platform.send(deploy("theirs", other, workload("c")))
        record = await deployment_stream(docker_agent.platform, "theirs")
        after = await asyncio.to_thread(docker_client.api.inspect_container, f"{prefix}-b-c")
        print(
            "cross-prefix outcome:",
            common_pb2.DeploymentStatus.Name(final_status(record)),
            record.messages[-1].log,
        )
        assert final_status(record) == common_pb2.FAILED
        assert after["Id"] == first["Id"]
        assert after["Config"]["Labels"][PREFIX_LABEL] == prefix
        assert after["State"]["Running"]
    finally:
        sweep(docker_client, other)
