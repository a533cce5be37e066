"""Fixtures for the Kubernetes suite: a real kube-apiserver (tools/kube-apiserver.sh), unique
namespaces per test (removed afterwards), and a recorder for deploy events."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from berth.errors import RuntimeFailure
from berth.model import ContainerState, LogLevel
from berth.runtimes.kubernetes import KubernetesRuntime, resources
from berth.runtimes.kubernetes.api import KubeApi
from berth.settings import KubernetesSettings

ROOT = Path(__file__).resolve().parents[3]
BASE = Path(os.environ.get("K8S_DEB_BASE", "/var/tmp/berth-kube"))
TEST_PREFIX = "bt-"

pytestmark = pytest.mark.kube


def _reachable(kubeconfig: str) -> str | None:
    if not Path(kubeconfig).is_file():
        return f"no kubeconfig at {kubeconfig}"
    api = KubeApi(KubernetesSettings(kubeconfig=kubeconfig, request_timeout_s=5))
    try:
        api.version()
    except RuntimeFailure as err:
        return str(err)
    finally:
        api.close()
    return None


@pytest.fixture(scope="session")
def kubeconfig() -> str:
    path = os.environ.get("KUBECONFIG") or str(BASE / "kubeconfig")
    problem = _reachable(path)
    if problem is not None:
        env = {**os.environ, "K8S_DEB_BASE": str(BASE)}
        run = subprocess.run(
            [str(ROOT / "tools/kube-apiserver.sh"), "all"],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if run.returncode != 0:
            last = (run.stderr.strip().splitlines() or ["?"])[-1]
            pytest.skip(f"kube-apiserver cannot run here (tools/kube-apiserver.sh: {last})")
        path = str(BASE / "kubeconfig")
        problem = _reachable(path)
        if problem is not None:
            pytest.skip(f"kube-apiserver started but is unreachable: {problem}")
    return path


@pytest.fixture(scope="session")
def admin(kubeconfig: str) -> Iterator[KubeApi]:
    api = KubeApi(KubernetesSettings(kubeconfig=kubeconfig, field_manager="berth-test"))
    yield api
    listed = api.list(resources.NAMESPACE, None)
    for ns in listed.get("items") or []:
        if ns["metadata"]["name"].startswith(TEST_PREFIX):
            api.delete(resources.NAMESPACE, None, ns["metadata"]["name"])
    api.close()


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


@dataclass
class Recorder:
    """A DeployEvents that keeps everything it is told."""

    logs: list[tuple[LogLevel, str]] = field(default_factory=list)
    instances: list[tuple[str, ContainerState, str]] = field(default_factory=list)
    progress_calls: list[tuple[str, str, float]] = field(default_factory=list)

    async def log(self, level: LogLevel, *lines: str) -> None:
        self.logs.extend((level, line) for line in lines)

    async def instance(
        self, workload_id: str, state: ContainerState, reason: str, level: LogLevel = LogLevel.INFO
    ) -> None:
        self.instances.append((workload_id, state, reason))

    async def progress(self, workload_id: str, status: str, fraction: float) -> None:
        self.progress_calls.append((workload_id, status, fraction))

    def text(self) -> str:
        return "\n".join(line for _, line in self.logs)


@pytest.fixture
def events() -> Recorder:
    return Recorder()
