from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from berth.agent.app import build_runtime, build_store, build_updater
from berth.agent.credentials import FileCredentialStore
from berth.runtimes.memory import MemoryRuntime
from berth.settings import AgentSettings


def test_agent_imports_no_sdk_until_a_runtime_needs_it() -> None:
    code = (
        "import sys, berth.agent.app, berth.agent.session; "
        "heavy = ('docker', 'kubernetes', 'prometheus_client', 'jwt', 'pysequoia'); "
        "heavy = [m for m in heavy if m in sys.modules]; "
        "print(heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


async def test_runtime_store_and_updater_per_runtime(tmp_path: Path) -> None:
    memory = AgentSettings(runtime="memory", data_dir=tmp_path)
    assert isinstance(build_runtime(memory), MemoryRuntime)
    assert isinstance(build_store(memory), FileCredentialStore)
    assert build_updater(memory) is None
    docker = replace(memory, runtime="docker")
    docker_runtime = build_runtime(docker)
    assert type(docker_runtime).__name__ == "DockerRuntime"
    await docker_runtime.aclose()
    assert isinstance(build_store(docker), FileCredentialStore)
    updater = build_updater(docker)
    assert updater is None or type(updater).__name__ == "DockerSelfUpdater"
    systemd = replace(docker, install_method="systemd")
    assert type(build_updater(systemd)).__name__ == "SystemdSelfUpdater"
    kube = replace(memory, runtime="kubernetes")
    assert type(build_store(kube)).__name__ == "KubernetesCredentialStore"
    kube_runtime = build_runtime(kube)
    assert type(kube_runtime).__name__ == "KubernetesRuntime"
    await kube_runtime.aclose()
