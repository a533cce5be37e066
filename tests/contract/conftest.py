"""The ``rig`` fixture: every contract scenario runs once per runtime (memory, Docker, Kubernetes),
marked ``docker`` or ``kube`` so that the fast tier runs the memory rig alone."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from kits.runtime_rigs import DockerRig, KubernetesRig, MemoryRig, RecordedEvents, Rig

RUNTIMES = [
    pytest.param("memory", id="memory"),
    pytest.param("docker", id="docker", marks=pytest.mark.docker),
    pytest.param("kubernetes", id="kubernetes", marks=pytest.mark.kube),
]


@pytest.fixture(scope="session")
def kubeconfig() -> str:
    from kits.kube_cluster import kubeconfig_of_a_running_apiserver

    return kubeconfig_of_a_running_apiserver()


@pytest.fixture(scope="session")
def kube_admin(kubeconfig: str) -> Iterator[object]:
    from kits.kube_cluster import admin_api

    with admin_api(kubeconfig) as api:
        yield api


def _memory_rig() -> Iterator[Rig]:
    yield MemoryRig()


def _docker_rig() -> Iterator[Rig]:
    from kits.fault_kit import REGISTRY, REGISTRY_PASSWORD, REGISTRY_USER, engine, sweep

    from berth.model import RegistryAuth
    from berth.runtimes.docker import DockerRuntime
    from berth.settings import DockerSettings

    client = engine()
    with tempfile.TemporaryDirectory(prefix="berth-contract-") as folder:
        data = Path(folder)
        settings = DockerSettings(
            data_mount_path=data, internal_mount_path=data, stop_grace_s=1.0, resync_interval_s=30.0
        )
        auth = RegistryAuth(name="test", url=REGISTRY, user=REGISTRY_USER, password=REGISTRY_PASSWORD)
        rig = DockerRig(DockerRuntime(settings), client, REGISTRY, auth)
        try:
            yield rig
        finally:
            sweep(client, rig.prefix)
            client.close()


def _kubernetes_rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    from kits.fake_kubelet import FakeKubelet
    from kits.kube_node import registered_node

    from berth.runtimes.kubernetes import KubernetesRuntime, resources
    from berth.settings import KubernetesSettings

    kubeconfig = request.getfixturevalue("kubeconfig")
    admin = request.getfixturevalue("kube_admin")
    settings = KubernetesSettings(kubeconfig=kubeconfig, wait_for_rollout=False, resync_interval_s=30.0)
    kubelet = FakeKubelet(tmp_path)
    try:
        with registered_node(admin, kubelet) as node:
            rig = KubernetesRig(KubernetesRuntime(settings), admin, kubelet, node)
            try:
                yield rig
            finally:
                admin.delete(resources.NAMESPACE, None, rig.prefix)
    finally:
        kubelet.close()


@pytest.fixture(params=RUNTIMES)
def built_rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    """The rig, built and removed outside the event loop (SDK imports and clients, test
    namespaces and containers)."""
    if request.param == "memory":
        yield from _memory_rig()
    elif request.param == "docker":
        yield from _docker_rig()
    else:
        yield from _kubernetes_rig(request, tmp_path)


@pytest.fixture
async def rig(built_rig: Rig) -> AsyncIterator[Rig]:
    yield built_rig
    await built_rig.runtime.aclose()


@pytest.fixture
def events() -> RecordedEvents:
    return RecordedEvents()
