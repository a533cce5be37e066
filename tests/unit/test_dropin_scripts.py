"""dyrector.io's PowerShell install script (Docker Desktop), checked statically: the environment
its ``docker run`` line gives the container, plus the image's own ENV, makes Berth read and write
its key and tokens in the mounted folder and bind workload volumes from the host's view of it."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from berth.model import Volume
from berth.runtimes.docker.mounts import plan_mounts
from berth.runtimes.docker.traefik import boot_container_config
from berth.settings import load_agent_settings

ROOT = Path(__file__).resolve().parents[2]

# install-docker.ps1 (platform 0.15.x) turns C:/.dyrectorio-persistence into Docker Desktop's
# host path and runs: -e DATA_MOUNT_PATH=$DATA_MOUNT_PATH -e HOST_DOCKER_SOCK_PATH=//var/run/docker.sock
# -v ${DATA_MOUNT_PATH}:/srv/dagent -v //var/run/docker.sock:/var/run/docker.sock (no INTERNAL_MOUNT_PATH).
DESKTOP_PATH = "/run/desktop/mnt/host/c/.dyrectorio-persistence"
PS1_ENV = {
    "GRPC_TOKEN": "a.b.c",
    "NAME": "windows-node",
    "DATA_MOUNT_PATH": DESKTOP_PATH,
    "HOST_DOCKER_SOCK_PATH": "//var/run/docker.sock",
    "TRAEFIK_ENABLED": "true",
}
PS1_MOUNT_TARGET = "/srv/dagent"


def image_env() -> dict[str, str]:
    """The ENV of Berth's final image stage, read from the Dockerfile."""
    text = (ROOT / "Dockerfile").read_text()
    final = text.rsplit("\nFROM ", 1)[1]
    block = re.search(r"^ENV (.+?)(?<!\\)\n", final, re.S | re.M)
    assert block is not None
    pairs = re.findall(r"([A-Z_]+)=(\S+)", block.group(1))
    return dict(pairs)


def test_the_image_keeps_its_state_where_dagents_scripts_mount_the_folder() -> None:
    env = image_env()
    assert env["INTERNAL_MOUNT_PATH"] == PS1_MOUNT_TARGET
    assert "BERTH_RUNTIME" not in env  # CRANE_IN_CLUSTER=true alone must select Kubernetes
    settings = load_agent_settings({**env, **PS1_ENV})
    assert settings.runtime == "docker"
    assert settings.data_dir == Path(PS1_MOUNT_TARGET)  # secret.key, token.jwt
    assert settings.docker.data_mount_path == Path(DESKTOP_PATH)
    kube = load_agent_settings({**env, "GRPC_TOKEN": "a.b.c", "CRANE_IN_CLUSTER": "true"})
    assert kube.runtime == "kubernetes"


def test_volumes_bind_from_the_hosts_view_and_are_created_through_the_mount() -> None:
    settings = load_agent_settings({**image_env(), **PS1_ENV}).docker
    plan = plan_mounts(settings, "shop", "web", (Volume(name="data", path="/data"),))
    (bind,) = plan.binds
    assert bind.host_path == f"{DESKTOP_PATH}/shop/web/data"
    assert bind.agent_path is not None
    assert PurePosixPath(bind.agent_path).is_relative_to(PS1_MOUNT_TARGET)


def test_traefik_gets_the_sock_path_the_script_passes() -> None:
    settings = load_agent_settings({**image_env(), **PS1_ENV}).docker
    config = boot_container_config(settings)
    assert "//var/run/docker.sock:/var/run/docker.sock:ro" in config["host_config"]["binds"]
    assert f"{DESKTOP_PATH}/traefik/logs:/var/log/traefik:rw" in config["host_config"]["binds"]
