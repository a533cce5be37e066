"""A real kube-apiserver for the tests (tools/kube-apiserver.sh starts it when it is not up):
its kubeconfig and an admin client that removes the namespaces named with ``TEST_PREFIX`` when it
is closed. The conftests of tests/integration/kube and tests/contract make their session fixtures
from these."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from berth.errors import RuntimeFailure
from berth.runtimes.kubernetes import resources
from berth.runtimes.kubernetes.api import KubeApi
from berth.settings import KubernetesSettings

ROOT = Path(__file__).resolve().parents[2]
BASE = Path(os.environ.get("K8S_DEB_BASE", "/var/tmp/berth-kube"))
TEST_PREFIX = "bt-"


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


def kubeconfig_of_a_running_apiserver() -> str:
    """The kubeconfig of the test API server, started when it is not up; skips the test (a
    ``kube``-marked test only) when it cannot run on this machine."""
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


@contextlib.contextmanager
def admin_api(kubeconfig: str) -> Iterator[KubeApi]:
    """A client with the admin token; on exit every namespace named ``TEST_PREFIX…`` is removed."""
    api = KubeApi(KubernetesSettings(kubeconfig=kubeconfig, field_manager="berth-test"))
    yield api
    listed = api.list(resources.NAMESPACE, None)
    for ns in listed.get("items") or []:
        if ns["metadata"]["name"].startswith(TEST_PREFIX):
            api.delete(resources.NAMESPACE, None, ns["metadata"]["name"])
    api.close()
