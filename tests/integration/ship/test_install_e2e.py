"""Shipping end to end on the real engine with the real image: the embedded platform (TLS) renders
install-docker.sh, running it starts the agent container, which connects; re-running replaces it;
self-update to a second local tag succeeds; an update to a tag whose agent cannot connect is
rolled back and the platform records the AbortUpdate. Prints the figures the README quotes."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import httpx
import pytest
import requests.exceptions
from waiting import wait_for

from berth.platform.app import PlatformServer, Started
from berth.platform.config import PlatformConfig

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(420)]

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[3]
REPO = "berth/agent"
TAG_1, TAG_2, TAG_BAD = "e2e-1", "e2e-2", "e2e-unreachable"


def _figure(name: str, value: str) -> None:
    print(f"\nFIGURE {name}: {value}")


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    c = docker.from_env(timeout=120, version="1.41")  # no version probe that could leak a socket
    try:
        c.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as err:
        c.close()
        pytest.skip(f"no Docker engine: {err}")
    yield c
    c.close()


@pytest.fixture(scope="module")
def images(client: docker.DockerClient) -> Iterator[None]:
    """The agent image from tools/build-image.sh, a second locally built tag, and a tag whose
    agent dials a closed port (it can never be accepted)."""
    started = time.monotonic()
    built = subprocess.run(
        [str(ROOT / "tools/build-image.sh"), f"{REPO}:{TAG_1}"], capture_output=True, text=True, timeout=300
    )
    if built.returncode != 0:
        pytest.skip(f"the agent image cannot be built here: {built.stderr.strip()[-800:]}")
    _figure("image build (tools/build-image.sh)", f"{time.monotonic() - started:.0f} s")
    _figure("image size", built.stdout.strip().splitlines()[-1])
    for tag, extra in (
        (TAG_2, "LABEL io.berth.test-variant=2"),
        (TAG_BAD, "ENV BERTH_PLATFORM_ADDRESS=127.0.0.1:9"),
    ):
        dockerfile = f"FROM {REPO}:{TAG_1}\n{extra}\n"
        client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=f"{REPO}:{tag}", rm=True)
    yield
    for tag in (TAG_2, TAG_BAD):
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(f"{REPO}:{tag}", force=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Platform:
    """The embedded platform, restartable with another agent image (like an operator upgrading
    it) on the same address and data folder, so the agent's tokens stay valid."""

    data_dir: Path
    grpc_port: int
    server: PlatformServer | None = None
    started: Started | None = None
    api: httpx.AsyncClient | None = None

    async def start(self, image: str, update_window_s: float = 120.0) -> None:
        config = PlatformConfig(
            data_dir=self.data_dir,
            grpc_listen=f"127.0.0.1:{self.grpc_port}",
            http_listen="127.0.0.1:0",
            advertise=f"127.0.0.1:{self.grpc_port}",
            insecure=False,
            agent_image=image,
            update_window_s=update_window_s,
        )
        self.server = PlatformServer(config)
        self.started = await self.server.start()
        self.api = httpx.AsyncClient(
            base_url=f"{self.started.http_url}/api/default",
            headers={"authorization": f"Bearer {self.started.api_token}"},
            timeout=15,
        )

    async def stop(self) -> None:
        if self.api is not None:
            await self.api.aclose()
        if self.server is not None:
            await self.server.stop()
        self.server = self.api = None

    async def node(self, node_id: str) -> dict[str, Any]:
        assert self.api is not None
        response = await self.api.get(f"/nodes/{node_id}")
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    async def wait_status(self, node_id: str, status: str, within_s: float = 60) -> dict[str, Any]:
        async def reached() -> dict[str, Any] | None:
            node = await self.node(node_id)
            return node if node["status"] == status else None

        return await wait_for(reached, within_s, f"node status {status!r}", interval_s=0.2)

    async def events(self, node_id: str) -> list[dict[str, Any]]:
        assert self.api is not None
        response = await self.api.get(f"/nodes/{node_id}/audit", params={"take": 100})
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    p = Platform(data_dir=tmp_path / "platform", grpc_port=_free_port())
    yield p
    await p.stop()


@pytest.fixture
def agent_name(client: docker.DockerClient) -> Iterator[str]:
    name = f"berth-e2e-{uuid.uuid4().hex[:8]}"
    yield name
    for c in client.api.containers(all=True, filters={"label": "io.berth.test=1"}):
        if any(n.lstrip("/").startswith(name) for n in c["Names"]):
            with contextlib.suppress(docker.errors.NotFound):
                client.api.remove_container(c["Id"], force=True, v=True)


def _run_script(
    script: Path, folder: Path, name: str, *args: str, extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PERSISTENCE_FOLDER": str(folder),
        "BERTH_CONTAINER_NAME": name,
        "BERTH_PULL": "never",
        "BERTH_RUN_ARGS": "--label io.berth.test=1 --env BERTH_BACKOFF_MAX=2s",
        **(extra or {}),
    }
    return subprocess.run(["sh", str(script), *args], env=env, capture_output=True, text=True, timeout=120)


def _container(client: docker.DockerClient, name: str) -> dict[str, Any] | None:
    try:
        attrs: dict[str, Any] = client.api.inspect_container(name)
    except docker.errors.NotFound:
        return None
    return attrs


def _leftovers(client: docker.DockerClient, name: str) -> list[str]:
    """Containers an install or an update moved aside and should have removed."""
    names = (n.lstrip("/") for c in client.api.containers(all=True) for n in c["Names"])
    return sorted(n for n in names if n.startswith((f"{name}-update", f"{name}-replaced")))


async def _install(
    platform: Platform,
    client: docker.DockerClient,
    name: str,
    tmp_path: Path,
    extra: dict[str, str] | None = None,
) -> tuple[str, Path]:
    """Node created on the platform, install script rendered by it and run: connected over TLS.
    The node's name is hostile (quotes, a command substitution): it reaches the agent as text and
    runs nothing. The platform advertises 127.0.0.1, so the script picks the host's network."""
    assert platform.api is not None
    # short, so that the name stays within the platform's 100 characters; lower case, as the node
    # name is lower-cased on its way to NAME
    marker = Path("/tmp") / f"bp-{uuid.uuid4().hex[:8]}"
    hostile = f"Ship 'Node' \"$(touch${{IFS}}{marker})\" `touch${{IFS}}{marker}` \U0001f6a2"
    created = await platform.api.post("/nodes", json={"name": hostile})
    assert created.status_code == 201, created.text
    node_id = created.json()["id"]
    generated = await platform.api.post(
        f"/nodes/{node_id}/script", json={"type": "docker", "scriptType": "shell"}
    )
    assert generated.status_code == 201, generated.text
    text = (await platform.api.get(f"/nodes/{node_id}/script", headers={"authorization": ""})).text
    assert "@@" not in text and "BEGIN CERTIFICATE" in text
    script = tmp_path / "install-docker.sh"
    script.write_text(text)
    folder = tmp_path / "node-data"
    started = time.monotonic()
    result = await asyncio.to_thread(functools.partial(_run_script, script, folder, name, extra=extra))
    assert result.returncode == 0, result.stderr
    await platform.wait_status(node_id, "connected")
    _figure("install script -> node connected", f"{time.monotonic() - started:.1f} s")
    assert (folder / "platform-ca.pem").is_file() and (folder / "token.jwt").is_file()
    assert not marker.exists(), "a command in the node name ran"
    assert "is a loopback address" in result.stderr
    cri_env = {**os.environ, **(extra or {})}
    inspected = await asyncio.to_thread(
        subprocess.run,
        [cri_env.get("CRI_EXECUTABLE", "docker"), "container", "inspect", name],
        env=cri_env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert inspected.returncode == 0, inspected.stderr
    attrs = json.loads(inspected.stdout)[0]
    assert attrs["HostConfig"]["NetworkMode"] == "host"
    assert f"NAME={''.join(hostile.lower().split())}" in attrs["Config"]["Env"]
    return node_id, script


async def _deploy_workload(platform: Platform, node_id: str, prefix: str) -> None:
    assert platform.api is not None
    created = await platform.api.post(
        "/registries",
        json={
            "name": "test",
            "url": os.environ.get("BERTH_TEST_REGISTRY", "127.0.0.1:5000"),
            "user": os.environ.get("BERTH_TEST_REGISTRY_USER", "berth"),
            "password": os.environ.get("BERTH_TEST_REGISTRY_PASSWORD", "berth-registry-pass"),
        },
    )
    assert created.status_code == 201, created.text
    instance = {
        "image": "berth/busybox",
        "tag": "1",
        "registryId": created.json()["id"],
        "config": {
            "common": {"name": "web", "commands": ["sleep", "600"]},
            "dagent": {"labels": {"io.berth.test": "1"}},
        },
    }
    deployment = await platform.api.post(
        "/deployments", json={"nodeId": node_id, "prefix": prefix, "instances": [instance]}
    )
    assert deployment.status_code == 201, deployment.text
    deployment_id = deployment.json()["id"]
    started = await platform.api.post(f"/deployments/{deployment_id}/start")
    assert started.status_code == 204, started.text
    status = await _poll(
        lambda: _deployment_status(platform, deployment_id), lambda s: s in ("successful", "failed"), 60
    )
    assert status == "successful", (await platform.api.get(f"/deployments/{deployment_id}/log")).text


async def _deployment_status(platform: Platform, deployment_id: str) -> str:
    assert platform.api is not None
    return str((await platform.api.get(f"/deployments/{deployment_id}")).json()["status"])


async def test_install_dry_run_reinstall_deploy_and_self_update(
    client: docker.DockerClient, images: None, platform: Platform, agent_name: str, tmp_path: Path
) -> None:
    await platform.start(f"{REPO}:{TAG_1}")
    assert platform.api is not None
    node_id, script = await _install(platform, client, agent_name, tmp_path)

    # --dry-run checks the machine and prints the commands; it changes nothing
    dry_folder = tmp_path / "dry"
    dry = await asyncio.to_thread(_run_script, script, dry_folder, f"{agent_name}-dry", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "run --detach" in dry.stderr and "dry run: nothing was changed" in dry.stderr
    assert await asyncio.to_thread(_container, client, f"{agent_name}-dry") is None
    assert not dry_folder.exists()

    node = await platform.node(node_id)
    assert node["version"].startswith("0.15.4-")
    health = await asyncio.to_thread(client.containers.get(agent_name).exec_run, ["berth", "health"])
    assert health.exit_code == 0, health.output
    await _deploy_workload(platform, node_id, f"{agent_name}-wl")
    workload = await asyncio.to_thread(_container, client, f"{agent_name}-wl-web")
    assert workload is not None and workload["State"]["Running"]
    first_id = (await asyncio.to_thread(_container, client, agent_name) or {})["Id"]

    # re-run: replaces the container cleanly; the node comes back with the stored token
    again = await asyncio.to_thread(_run_script, script, tmp_path / "node-data", agent_name)
    assert again.returncode == 0, again.stderr
    second = await asyncio.to_thread(_container, client, agent_name)
    assert second is not None and second["Id"] != first_id and second["State"]["Running"]
    assert await asyncio.to_thread(_leftovers, client, agent_name) == []
    await platform.wait_status(node_id, "connected")

    # update to a second locally built tag (the operator upgraded the platform's agent image)
    await platform.stop()
    await platform.start(f"{REPO}:{TAG_2}")
    await platform.wait_status(node_id, "connected")
    started = time.monotonic()
    response = await platform.api.post(f"/nodes/{node_id}/update")
    assert response.status_code == 204, response.text
    await _poll(lambda: _to_thread(_running_image, client, agent_name), lambda i: i == f"{REPO}:{TAG_2}", 60)
    await _poll(lambda: _to_thread(_leftovers, client, agent_name), lambda names: names == [], 60)
    await _wait_event(platform, node_id, "'updated'", 30)
    await platform.wait_status(node_id, "connected")
    _figure(
        "self-update (update command -> successor accepted, old container gone)",
        f"{time.monotonic() - started:.1f} s",
    )
    updated = await asyncio.to_thread(_container, client, agent_name)
    assert updated is not None
    assert updated["HostConfig"]["NetworkMode"] == "host"
    assert "host.docker.internal:host-gateway" in updated["HostConfig"]["ExtraHosts"]
    assert updated["HostConfig"]["RestartPolicy"]["Name"] == "on-failure"
    assert updated["Config"]["Labels"]["io.berth.test"] == "1"
    assert updated["Config"]["Labels"]["org.berth.role"] == "agent"
    # the node keeps working: the workload is listed through the new agent
    listed = await platform.api.get(f"/nodes/{node_id}/{agent_name}-wl/containers")
    assert listed.status_code == 200 and "web" in listed.text, listed.text


async def test_update_to_an_agent_that_cannot_connect_is_rolled_back(
    client: docker.DockerClient, images: None, platform: Platform, agent_name: str, tmp_path: Path
) -> None:
    await platform.start(f"{REPO}:{TAG_1}")
    node_id, _ = await _install(platform, client, agent_name, tmp_path)
    installed = await asyncio.to_thread(_container, client, agent_name)
    assert installed is not None

    await platform.stop()
    await platform.start(f"{REPO}:{TAG_BAD}", update_window_s=12)
    assert platform.api is not None
    await platform.wait_status(node_id, "connected")
    response = await platform.api.post(f"/nodes/{node_id}/update")
    assert response.status_code == 204, response.text
    aborted = await _wait_event(platform, node_id, "update_aborted", 40)
    assert "not accepted by the platform before the deadline" in str(aborted)
    after = await asyncio.to_thread(_container, client, agent_name)
    assert after is not None and after["Id"] == installed["Id"] and after["State"]["Running"]
    assert await asyncio.to_thread(_leftovers, client, agent_name) == []
    node = await platform.wait_status(node_id, "connected")
    assert not node["updating"]


def _running_image(client: docker.DockerClient, name: str) -> str | None:
    attrs = _container(client, name)
    if attrs is None or not attrs["State"]["Running"]:
        return None
    return str(attrs["Config"]["Image"])


async def _to_thread(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(fn, *args)


async def _poll(probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], within_s: float) -> T:
    async def reached() -> tuple[T] | None:
        value = await probe()
        return (value,) if done(value) else None

    (value,) = await wait_for(reached, within_s, "the probe's condition", interval_s=0.3)
    return value


async def _wait_event(platform: Platform, node_id: str, kind: str, within_s: float) -> dict[str, Any]:
    events = await _poll(
        lambda: platform.events(node_id), lambda items: any(kind in str(e) for e in items), within_s
    )
    return next(e for e in events if kind in str(e))


PODMAN_DIR = Path(os.environ.get("BERTH_PODMAN_DIR", "/var/tmp/berth-podman"))


@pytest.mark.podman
async def test_install_with_podman(
    client: docker.DockerClient, images: None, platform: Platform, tmp_path: Path
) -> None:
    """The same rendered script with CRI_EXECUTABLE=podman and the Podman API socket: the agent
    runs in a Podman container and drives Podman through the Docker-compatible API."""
    sock = Path(os.environ.get("BERTH_PODMAN_SOCK", PODMAN_DIR / "podman.sock"))
    if shutil.which("podman") is None or not await asyncio.to_thread(sock.is_socket):
        pytest.skip("no Podman API socket (tools/podman.sh up starts one)")
    podman_env = {**os.environ, "CONTAINERS_CONF": str(PODMAN_DIR / "containers.conf")}
    loaded = await asyncio.to_thread(
        subprocess.run,
        f"docker save {REPO}:{TAG_1} | podman load -q",
        shell=True,
        env=podman_env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert loaded.returncode == 0, loaded.stderr
    name = f"berth-e2e-podman-{uuid.uuid4().hex[:6]}"
    try:
        await platform.start(f"{REPO}:{TAG_1}")
        extra = {
            "CRI_EXECUTABLE": "podman",
            "HOST_DOCKER_SOCK_PATH": str(sock),
            "CONTAINERS_CONF": podman_env["CONTAINERS_CONF"],
        }
        node_id, _ = await _install(platform, client, name, tmp_path, extra)
        node = await platform.node(node_id)
        assert node["version"].startswith("0.15.4-")
    finally:
        await asyncio.to_thread(
            subprocess.run, ["podman", "rm", "-f", "-v", name], env=podman_env, capture_output=True
        )
