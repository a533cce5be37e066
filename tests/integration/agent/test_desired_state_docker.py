"""Desired state that survives the platform, on the real engine: the agent keeps the last
successful deployment (0600, no secret in clear); restarted while the platform is down, it
recreates a removed container (its secret decrypted from the stored ciphertext) and reports a
container changed by hand as drift without "fixing" it; ``berth status`` shows both."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import secrets
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import docker
import pysequoia
import pytest
import structlog
from fakeplatform import PlatformServer, agent_settings, eventually, running_agent
from waiting import wait_event, wait_for

from berth.agent.status import print_status
from berth.model import PREFIX_LABEL
from berth.proto import agent_pb2, common_pb2
from berth.runtimes.docker import DockerRuntime
from berth.settings import DockerSettings, ResilienceSettings

pytestmark = pytest.mark.docker

REGISTRY = os.environ.get("BERTH_TEST_REGISTRY", "127.0.0.1:5000")
USER = os.environ.get("BERTH_TEST_REGISTRY_USER", "berth")
PASSWORD = os.environ.get("BERTH_TEST_REGISTRY_PASSWORD", "berth-registry-pass")
SERVE = 'echo "secret=$SECRET"; trap "exit 0" TERM; while true; do sleep 0.1; done'


@pytest.fixture
def prefix() -> Iterator[str]:
    value = f"bd{secrets.token_hex(3)}"
    yield value
    client = docker.from_env()
    for summary in client.api.containers(all=True, filters={"label": f"{PREFIX_LABEL}={value}"}):
        with contextlib.suppress(docker.errors.APIError):
            client.api.remove_container(summary["Id"], force=True)
    client.close()


def workload(name: str, cipher: str) -> agent_pb2.DeployWorkloadRequest:
    return agent_pb2.DeployWorkloadRequest(
        id=f"w-{name}",
        registry=REGISTRY,
        imageName="berth/busybox",
        tag="1",
        registryAuth=agent_pb2.RegistryAuth(name="test", url=REGISTRY, user=USER, password=PASSWORD),
        common=agent_pb2.CommonContainerConfig(
            name=name, commands=["sh", "-c"], args=[SERVE], secrets={"SECRET": cipher}
        ),
        dagent=agent_pb2.DagentContainerConfig(labels={"io.berth.test": "1"}),
    )


def running(client: docker.DockerClient, name: str) -> bool:
    try:
        return bool(client.api.inspect_container(name)["State"]["Running"])
    except docker.errors.NotFound:
        return False


async def test_restart_without_the_platform_recreates_and_reports_drift(tmp_path: Path, prefix: str) -> None:
    data = tmp_path / "data"
    engine = DockerSettings(
        data_mount_path=data,
        internal_mount_path=data,
        stop_grace_s=1.0,
        resilience=ResilienceSettings(reconcile_after_s=0.5),
    )
    client = docker.from_env()
    server = PlatformServer()
    await server.start()
    settings = replace(
        agent_settings(data, server.platform.issue_connection_token()), runtime="docker", docker=engine
    )
    try:
        async with running_agent(settings, runtime=DockerRuntime(engine)) as first:
            await server.platform.wait_accepted(within_s=20)
            key = first.agent.key
            assert key is not None
            cipher = pysequoia.encrypt(
                b"from-the-platform", [pysequoia.Cert.from_bytes(key.public_key.encode())]
            )
            requests = [workload("web", cipher.decode()), workload("api", cipher.decode())]
            await server.platform.send(
                agent_pb2.AgentCommand(
                    deploy=agent_pb2.DeployRequest(id="d1", prefix=prefix, requests=requests)
                )
            )
            status = await server.platform.wait_stream("DeploymentStatus", within_s=20)
            await wait_event(status.done.wait(), 60, "the status stream to finish")
            assert status.messages[-1].deploymentStatus == common_pb2.SUCCESSFUL
    finally:
        await server.stop()

    stored = data / "desired" / f"{prefix}.json"
    assert oct(stored.stat().st_mode & 0o777) == "0o600"
    text = stored.read_text()
    assert "from-the-platform" not in text and PASSWORD not in text and "BEGIN PGP MESSAGE" in text

    # By hand, while the agent is away: one container removed, one replaced by another image
    # (blocking engine calls, slow on a busy machine: off the event loop).
    def tamper() -> dict[str, str]:
        client.api.remove_container(f"{prefix}-web", force=True)
        client.api.remove_container(f"{prefix}-api", force=True)
        created: dict[str, str] = client.api.create_container(
            f"{REGISTRY}/berth/busybox:2",
            name=f"{prefix}-api",
            command=["sh", "-c", SERVE],
            labels={PREFIX_LABEL: prefix, "io.berth.test": "1"},
        )
        client.api.start(created["Id"])
        return created

    changed = await asyncio.to_thread(tamper)

    with structlog.testing.capture_logs() as logs:
        async with running_agent(settings, runtime=DockerRuntime(engine)) as second:
            # the inspect waits while the engine starts the container: off the event loop
            await wait_for(
                lambda: asyncio.to_thread(running, client, f"{prefix}-web"), 30, "web to run", interval_s=0.1
            )
            await eventually(lambda: any(e["event"] == "reconcile_finished" for e in logs), within_s=30)
            runtime = second.agent.runtime
            assert runtime is not None
            items = {item.ref.name: item for item in (await runtime.list_state(prefix)).items}
    events = [entry["event"] for entry in logs]
    assert "platform_unreachable_reconciling" in events and "reconcile_recreated" in events
    drift = next(entry for entry in logs if entry["event"] == "drift_detected")
    assert drift["container"] == f"{prefix}-api" and drift["fixing"] is False
    assert items["api"].reason.startswith("drift: image 127.0.0.1:5000/berth/busybox:2")
    assert items["web"].reason == "running"
    # the drifted container was left alone; the recreated one got its secret from the stored ciphertext
    assert client.api.inspect_container(f"{prefix}-api")["Id"] == changed["Id"]
    web_logs = client.api.logs(f"{prefix}-web").decode()
    assert "secret=from-the-platform" in web_logs

    out, err = io.StringIO(), io.StringIO()
    assert await print_status(settings, out, err) == 1
    lines = out.getvalue().splitlines()
    assert lines[0].startswith(f"prefix {prefix}: deployment d1")
    assert any(line.startswith("  ok") and "web: desired running" in line for line in lines)
    assert any(line.startswith("  DRIFT") and "api: desired running" in line for line in lines)
    client.close()
