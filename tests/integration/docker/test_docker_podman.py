"""A representative subset on Podman's Docker-compatible socket (tools/podman.sh): deploy, state,
logs, delete. Skipped with the reason when Podman cannot run on this machine."""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import docker
import pytest
from docker_support import SERVE_FOREVER, TEST_LABEL, RecordingEvents, next_item, workload
from waiting import wait_event

from berth.model import ContainerRef, ContainerState, DeploymentSpec, PrefixTarget
from berth.runtimes.docker import DockerRuntime
from berth.settings import DockerSettings

pytestmark = pytest.mark.podman

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def podman_socket() -> Iterator[str]:
    result = subprocess.run(
        [str(REPO / "tools" / "podman.sh"), "up"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        pytest.skip(f"podman cannot run here: {result.stderr.strip()[-300:]}")
    sock = result.stdout.strip().split("=", 1)[1]
    client = docker.DockerClient(base_url=f"unix://{sock}", version="auto")
    try:
        yield f"unix://{sock}"
    finally:
        for summary in client.api.containers(all=True, filters={"label": f"{TEST_LABEL}=1"}):
            with contextlib.suppress(docker.errors.APIError):
                client.api.remove_container(summary["Id"], force=True)
        client.close()


@pytest.fixture
async def podman_runtime(podman_socket: str) -> AsyncIterator[DockerRuntime]:
    with tempfile.TemporaryDirectory(prefix="berth-podman-test-") as folder:
        settings = DockerSettings(
            data_mount_path=Path(folder), internal_mount_path=Path(folder), stop_grace_s=1.0
        )
        rt = DockerRuntime(settings, base_url=podman_socket)
        yield rt
        await rt.aclose()


async def test_podman_deploy_state_logs_delete(podman_runtime: DockerRuntime, prefix: str) -> None:
    info = await podman_runtime.preflight()
    assert info.kind == "podman"
    spec = workload(
        prefix,
        "web",
        registry="localhost",
        image_name="berth-busybox",
        tag="1",
        registry_auth=None,
        args=(f"echo hello-podman; {SERVE_FOREVER}",),
    )
    updates = podman_runtime.watch(prefix)
    try:
        assert (await anext(updates)).initial
        events = RecordingEvents()
        await podman_runtime.deploy(DeploymentSpec(id="d", prefix=prefix, workloads=(spec,)), events)
        web = ContainerRef(prefix, "web")
        await next_item(updates, lambda i: i.ref == web and i.state is ContainerState.RUNNING)

        follow = podman_runtime.logs(web, follow=True, tail_lines=10)
        try:
            first = await wait_event(anext(follow), 10, "the first log line")
            assert "hello-podman" in str(first)
        finally:
            await follow.aclose()
        lines = [i async for i in podman_runtime.logs(web, follow=False, tail_lines=10)]
        assert any("hello-podman" in str(line) for line in lines)

        await podman_runtime.stop(web)
        await next_item(updates, lambda i: i.ref == web and i.state is ContainerState.EXITED)
        await podman_runtime.delete(PrefixTarget(prefix))
        await next_item(updates, lambda i: i.ref == web and i.state is ContainerState.REMOVED)
        assert (await podman_runtime.list_state(prefix)).items == ()
    finally:
        await updates.aclose()
