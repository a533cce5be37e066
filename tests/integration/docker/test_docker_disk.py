"""Disk-aware pulls and pruning on real engines.

Pruning runs on the shared engine (images pushed to the test registry, so Berth really pulls
them). The disk-space tests run on a second, private engine whose data root is a small tmpfs
(tools/small-engine.sh: its own socket, exec root, pid file and containerd, no bridge); a filler
file leaves it a few MiB free."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import docker
import pytest
from docker_support import REGISTRY, RecordingEvents, workload
from pushed_images import build_and_push, remove_local

from berth.agent.metrics import AgentMetrics
from berth.errors import PermanentCommandError
from berth.model import DeploymentSpec, LogLevel, NetworkMode, WorkloadSpec
from berth.runtimes.docker import DockerRuntime
from berth.runtimes.docker.pruning import read_ledger
from berth.settings import DockerSettings, ResilienceSettings

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[3]
SMALL_ENGINE = ROOT / "tools" / "small-engine.sh"
KEEP = 2
LEFT_FREE_BYTES = 8 * 1024 * 1024
BIG_BYTES = 12_000_000  # random, so its compressed layer is as large


def deployment(spec: WorkloadSpec) -> DeploymentSpec:
    return DeploymentSpec(id=f"dep-{spec.tag}", prefix=spec.prefix, workloads=(spec,))


def present(client: docker.DockerClient, reference: str) -> bool:
    try:
        client.api.inspect_image(reference)
    except docker.errors.ImageNotFound:
        return False
    return True


# -- pruning ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tagged_images() -> Iterator[str]:
    """t0..t4 of one repository in the registry; t0 is also local (a deploy of it pulls nothing:
    Berth did not pull it), t1..t4 are not (Berth pulls them)."""
    repository = f"berth/prune-{secrets.token_hex(4)}"
    for index in range(5):
        dockerfile = f'FROM local/busybox:1\nLABEL io.berth.test="1"\nRUN echo {index} > /version\n'
        build_and_push(f"{REGISTRY}/{repository}:t{index}", dockerfile, keep_local=index == 0)
    yield repository
    for index in range(5):
        remove_local(f"{REGISTRY}/{repository}:t{index}")


async def test_pruning_keeps_exactly_n_superseded_images_and_never_foreign_ones(
    settings: DockerSettings,
    prefix: str,
    tagged_images: str,
    docker_client: docker.DockerClient,
    data_dir: Path,
) -> None:
    rt = DockerRuntime(replace(settings, resilience=ResilienceSettings(prune_keep=KEEP)))
    reference = f"{REGISTRY}/{tagged_images}"
    events = RecordingEvents()
    metrics = AgentMetrics()
    metrics.disk = rt.disk_figures
    try:
        for index in range(5):
            spec = workload(prefix, "web", image_name=tagged_images, tag=f"t{index}")
            events = RecordingEvents()
            await rt.deploy(deployment(spec), events)
        figures = rt.disk_figures()
        exposed = metrics.render().decode()
    finally:
        await rt.aclose()
    assert figures.pruned_bytes_total > 0 and figures.free_bytes is not None and figures.free_bytes > 0
    exposed_pruned = next(
        line for line in exposed.splitlines() if line.startswith("berth_node_pruned_image_bytes_total")
    )
    assert float(exposed_pruned.split()[1]) == figures.pruned_bytes_total
    assert "berth_node_disk_free_bytes " in exposed
    # t4 runs; t3 and t2 are kept for rollback; t1 (pulled by Berth) is pruned; t0 was never
    # pulled by Berth and stays, like every image Berth does not know.
    assert [present(docker_client, f"{reference}:t{i}") for i in range(5)] == [True, False, True, True, True]
    assert present(docker_client, "local/busybox:1")
    pruned = [
        line for level, lines in events.logs if level is LogLevel.INFO for line in lines if "Pruned" in line
    ]
    assert pruned == [pruned[0]] and f"{reference}:t1" in pruned[0] and "freed" in pruned[0]
    ledger = read_ledger(data_dir, prefix)
    assert sorted(e.reference.rsplit(":", 1)[1] for e in ledger) == ["t2", "t3", "t4"]
    assert oct((data_dir / prefix / "@images.json").stat().st_mode & 0o777) == "0o600"


async def test_pruning_can_be_switched_off(
    settings: DockerSettings, prefix: str, tagged_images: str, docker_client: docker.DockerClient
) -> None:
    rt = DockerRuntime(replace(settings, resilience=ResilienceSettings(prune_images=False, prune_keep=0)))
    try:
        for index in (1, 2):
            spec = workload(prefix, "web", image_name=tagged_images, tag=f"t{index}")
            await rt.deploy(deployment(spec), RecordingEvents())
    finally:
        await rt.aclose()
    assert present(docker_client, f"{REGISTRY}/{tagged_images}:t1")


# -- a small engine ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_engine() -> Iterator[tuple[str, Path]]:
    run = subprocess.run([str(SMALL_ENGINE), "up"], capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, f"tools/small-engine.sh up failed: {run.stderr.strip()}"
    env = subprocess.run([str(SMALL_ENGINE), "env"], capture_output=True, text=True, check=True).stdout
    values = dict(line.removeprefix("export ").split("=", 1) for line in env.splitlines())
    yield values["BERTH_SMALL_DOCKER_HOST"], Path(values["BERTH_SMALL_DATA_ROOT"])
    subprocess.run([str(SMALL_ENGINE), "down"], capture_output=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def big_image() -> Iterator[str]:
    repository = f"berth/big-{secrets.token_hex(4)}"
    dockerfile = (
        f'FROM local/busybox:1\nLABEL io.berth.test="1"\nRUN head -c {BIG_BYTES} /dev/urandom > /blob\n'
    )
    build_and_push(f"{REGISTRY}/{repository}:1", dockerfile)
    yield repository


@pytest.fixture
def nearly_full(small_engine: tuple[str, Path]) -> Iterator[Path]:
    """Leave only a few MiB free on the small engine's data root."""
    _, data_root = small_engine
    filler = data_root / "berth-test-filler"
    stats = os.statvfs(data_root)
    free = stats.f_bavail * stats.f_frsize
    fd = os.open(filler, os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        os.posix_fallocate(fd, 0, max(1, free - LEFT_FREE_BYTES))
    finally:
        os.close(fd)
    yield filler
    filler.unlink(missing_ok=True)


@pytest.fixture
async def small_runtime(
    small_engine: tuple[str, Path], settings: DockerSettings
) -> AsyncIterator[tuple[DockerRuntime, docker.DockerClient]]:
    base_url, _ = small_engine
    client = docker.DockerClient(base_url=base_url, version="auto")
    rt = DockerRuntime(settings, base_url=base_url)
    yield rt, client
    await rt.aclose()
    for summary in client.api.containers(all=True):
        with contextlib.suppress(docker.errors.APIError):
            client.api.remove_container(summary["Id"], force=True)
    for image in client.api.images():
        with contextlib.suppress(docker.errors.APIError):
            client.api.remove_image(image["Id"], force=True)
    client.close()


def offline(spec: WorkloadSpec) -> WorkloadSpec:
    """The small engine has no bridge network."""
    return replace(spec, docker=replace(spec.docker, network_mode=NetworkMode.NONE))


async def test_a_pull_that_cannot_fit_is_refused_before_it_starts(
    small_runtime: tuple[DockerRuntime, docker.DockerClient], nearly_full: Path, prefix: str, big_image: str
) -> None:
    rt, client = small_runtime
    spec = offline(workload(prefix, "big", image_name=big_image, tag="1"))
    events = RecordingEvents()
    with pytest.raises(PermanentCommandError, match=r"not enough space: need [\d.]+ MiB, have [\d.]+ MiB"):
        await rt.deploy(deployment(spec), events)
    assert events.progress_items == []  # no pull was started
    assert not present(client, f"{REGISTRY}/{big_image}:1")


async def test_running_out_of_space_during_a_pull_is_a_clear_failure_and_the_node_keeps_working(
    small_engine: tuple[str, Path],
    small_runtime: tuple[DockerRuntime, docker.DockerClient],
    nearly_full: Path,
    prefix: str,
    big_image: str,
    settings: DockerSettings,
) -> None:
    rt, client = small_runtime
    unchecked = DockerRuntime(
        replace(settings, resilience=ResilienceSettings(disk_check=False)), base_url=small_engine[0]
    )
    spec = offline(workload(prefix, "big", image_name=big_image, tag="1"))
    events = RecordingEvents()
    try:
        with pytest.raises(PermanentCommandError) as failure:
            await unchecked.deploy(deployment(spec), events)
    finally:
        await unchecked.aclose()
    assert (
        str(failure.value)
        == f"pull {REGISTRY}/{big_image}:1 failed: the engine's disk is full (no space left on device)"
    )
    assert events.instances[-1][2] == str(failure.value) and "Traceback" not in events.text

    await asyncio.to_thread(nearly_full.unlink)  # space again: the same engine deploys as before
    small = offline(workload(prefix, "web"))
    await rt.deploy(deployment(small), RecordingEvents())
    assert client.api.inspect_container(f"{prefix}-web")["State"]["Running"]
