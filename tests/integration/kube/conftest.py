"""Fixtures for the Kubernetes suite: a real kube-apiserver (tools/kube-apiserver.sh), unique
namespaces per test (removed afterwards), and a recorder for deploy events."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from kits.fake_kubelet import FakeKubelet
from kits.kube_cluster import TEST_PREFIX, admin_api, kubeconfig_of_a_running_apiserver
from kits.kube_node import registered_node
from kits.kube_objects import Recorder

from berth.runtimes.kubernetes import KubernetesRuntime, resources
from berth.runtimes.kubernetes.api import KubeApi
from berth.settings import KubernetesSettings

pytestmark = pytest.mark.kube


@pytest.fixture(scope="session")
def kubeconfig() -> str:
    return kubeconfig_of_a_running_apiserver()


@pytest.fixture(scope="session")
def admin(kubeconfig: str) -> Iterator[KubeApi]:
    with admin_api(kubeconfig) as api:
        yield api


@pytest.fixture
def kubelet(tmp_path: Path) -> Iterator[FakeKubelet]:
    fake = FakeKubelet(tmp_path)
    yield fake
    fake.close()


@pytest.fixture
def node(admin: KubeApi, kubelet: FakeKubelet) -> Iterator[str]:
    with registered_node(admin, kubelet) as name:
        yield name


@pytest.fixture
def settings(kubeconfig: str) -> KubernetesSettings:
    return KubernetesSettings(
        kubeconfig=kubeconfig,
        wait_for_rollout=False,
        rollout_timeout_s=3.0,
        root_domain="example.test",
        resync_interval_s=30.0,
    )


@pytest.fixture
def prefix(admin: KubeApi) -> Iterator[str]:
    name = f"{TEST_PREFIX}{secrets.token_hex(4)}"
    yield name
    admin.delete(resources.NAMESPACE, None, name)


@pytest.fixture
async def runtime(settings: KubernetesSettings) -> AsyncIterator[KubernetesRuntime]:
    rt = KubernetesRuntime(settings)
    yield rt
    await rt.aclose()


@pytest.fixture
async def make_runtime(settings: KubernetesSettings) -> AsyncIterator[object]:
    made: list[KubernetesRuntime] = []

    def make(**changes: object) -> KubernetesRuntime:
        rt = KubernetesRuntime(replace(settings, **changes))  # type: ignore[arg-type]
        made.append(rt)
        return rt

    yield make
    for rt in made:
        await rt.aclose()


@pytest.fixture
def events() -> Recorder:
    return Recorder()
