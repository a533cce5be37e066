"""dyrector.io's own Docker install script, with Berth's image in place of dagent's, on the real
engine: a test copy of the script's ``docker run`` line (``-v "$PERSISTENCE_FOLDER/":/srv/dagent``,
``DATA_MOUNT_PATH`` set, ``INTERNAL_MOUNT_PATH`` unset). The agent connects to a fake platform
with the install token, deploys a workload with a volume, is recreated as the script does (stop,
remove, run again with the same, already used, install token) and reconnects with the persisted
connection token; then a self-update's successor finds the same key and the new token."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
import requests.exceptions
from fakeplatform import PlatformServer, mint_token
from waiting import wait_event, wait_for

from berth.proto import agent_pb2, common_pb2

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(420)]

ROOT = Path(__file__).resolve().parents[3]
REPO = "berth/agent"
REGISTRY = os.environ.get("BERTH_TEST_REGISTRY", "127.0.0.1:5000")
SOCK = "/var/run/docker.sock"


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    c = docker.from_env(timeout=120, version="1.41")
    try:
        c.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as err:
        c.close()
        pytest.skip(f"no Docker engine: {err}")
    yield c
    c.close()


@pytest.fixture(scope="module")
def agent_tags(client: docker.DockerClient) -> Iterator[tuple[str, str]]:
    """Berth's image from tools/build-image.sh (as the install e2e builds it, under a tag of this
    module's own so that parallel runs cannot swap it) and a second tag to update to."""
    tag = f"dropin-{secrets.token_hex(3)}"
    built = subprocess.run(
        [str(ROOT / "tools/build-image.sh"), f"{REPO}:{tag}"], capture_output=True, text=True, timeout=600
    )
    if built.returncode != 0:
        pytest.skip(f"the agent image cannot be built here: {built.stderr.strip()[-800:]}")
    client.images.build(
        fileobj=io.BytesIO(f"FROM {REPO}:{tag}\nLABEL io.berth.test-variant=2\n".encode()),
        tag=f"{REPO}:{tag}-2",
        rm=True,
    )
    yield tag, f"{tag}-2"
    for name in (f"{REPO}:{tag}-2", f"{REPO}:{tag}"):
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(name, force=True)


def platform_docker_run(name: str, image: str, token: str, folder: Path) -> list[str]:
    """install-docker.sh's ``docker run`` line (platform 0.15.x) with the optional ``--network``
    (host, to reach the test platform on 127.0.0.1) and ``DEBUG=true`` (its plaintext gRPC)."""
    return [
        "docker", "run", "--restart", "on-failure", "--network", "host",
        "-e", f"GRPC_TOKEN={token}",
        "-e", "NAME=dropin-node",
        "-e", f"DATA_MOUNT_PATH={folder}",
        "-e", "DEBUG=true",
        "-e", f"HOST_DOCKER_SOCK_PATH={SOCK}",
        "--add-host=host.docker.internal:host-gateway",
        "--name", name,
        "-v", f"{folder}/:/srv/dagent",
        "-v", f"{SOCK}:/var/run/docker.sock",
        "-d", image,
    ]  # fmt: skip


def script_replaces(client: docker.DockerClient, name: str) -> None:
    """What the script does first: stop and remove a previous container of the same name."""
    with contextlib.suppress(docker.errors.NotFound):
        client.api.stop(name)
        client.api.remove_container(name)


def run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def deploy_command(deployment_id: str, prefix: str) -> agent_pb2.AgentCommand:
    workload = agent_pb2.DeployWorkloadRequest(
        id="w-web",
        registry=REGISTRY,
        imageName="berth/busybox",
        tag="1",
        registryAuth=agent_pb2.RegistryAuth(
            name="test",
            url=REGISTRY,
            user=os.environ.get("BERTH_TEST_REGISTRY_USER", "berth"),
            password=os.environ.get("BERTH_TEST_REGISTRY_PASSWORD", "berth-registry-pass"),
        ),
        common=agent_pb2.CommonContainerConfig(
            name="web",
            commands=["sh", "-c"],
            args=["trap 'exit 0' TERM; while true; do sleep 0.1; done"],
            volumes=[agent_pb2.Volume(name="data", path="/data")],
        ),
    )
    return agent_pb2.AgentCommand(
        deploy=agent_pb2.DeployRequest(id=deployment_id, prefix=prefix, requests=[workload])
    )


async def poll(predicate: Callable[[], bool], within_s: float) -> None:
    """For conditions outside the fake platform (files the agent writes)."""
    await wait_for(predicate, within_s, "the agent's file to appear", interval_s=0.1)


def logs_of(client: docker.DockerClient, name: str) -> str:
    with contextlib.suppress(docker.errors.NotFound):
        return client.api.logs(name).decode(errors="replace")[-3000:]
    return ""


def remove_all(client: docker.DockerClient, name: str, prefix: str) -> None:
    for summary in client.api.containers(all=True):
        names = [n.lstrip("/") for n in summary["Names"]]
        if any(n.startswith((name, prefix)) for n in names):
            with contextlib.suppress(docker.errors.APIError):
                client.api.remove_container(summary["Id"], force=True)


async def test_the_platforms_docker_run_line_installs_recreates_and_updates_berth(
    client: docker.DockerClient, agent_tags: tuple[str, str], tmp_path: Path
) -> None:
    tag, next_tag = agent_tags
    name = f"dropin-agent-{secrets.token_hex(3)}"
    prefix = f"dropin-{secrets.token_hex(3)}"
    folder = tmp_path / "persistence"
    folder.mkdir()
    async with PlatformServer() as server:
        platform = server.platform
        install = platform.issue_install_token()
        try:
            # install: the install token is swapped for a connection token, kept in the folder
            started = time.monotonic()
            await asyncio.to_thread(run, platform_docker_run(name, f"{REPO}:{tag}", install, folder))
            first = await platform.wait_accepted(within_s=60)
            connected_s = time.monotonic() - started
            await platform.wait_unary("TokenReplaced", within_s=30)
            await poll(lambda: (folder / "token.jwt").is_file(), within_s=10)
            assert (folder / "secret.key").is_file()
            assert first.info.containerName == name
            stored = (folder / "token.jwt").read_text().strip()
            assert platform._claims(stored)["type"] == "connection"

            # deploy: the volume lands under DATA_MOUNT_PATH on the host
            await platform.send(deploy_command("dep-1", prefix))
            stream = await platform.wait_stream("DeploymentStatus", within_s=60)
            await wait_event(stream.done.wait(), 60, "the stream to finish")
            lines = [line for m in stream.messages for line in m.log]
            assert stream.messages[-1].deploymentStatus == common_pb2.SUCCESSFUL, lines
            web = client.api.inspect_container(f"{prefix}-web")
            assert web["HostConfig"]["Binds"] == [f"{folder}/{prefix}/web/data:/data:rw"]
            assert (folder / prefix / "web" / "data").is_dir()

            # recreate as the script does: the used install token is still in GRPC_TOKEN
            await asyncio.to_thread(script_replaces, client, name)
            await platform.wait_for(lambda: not platform.connected, within_s=30)
            await asyncio.to_thread(run, platform_docker_run(name, f"{REPO}:{tag}", install, folder))
            again = await platform.wait_accepted(count=2, within_s=60)
            assert again.token == stored  # the persisted connection token
            assert again.info.publicKey == first.info.publicKey  # the persisted key
            refused = [c for c in platform.connects if c.status.name != "OK"]
            assert refused == [], [(c.status, c.token == install) for c in refused]

            # in its container the agent finds itself: it refuses to delete itself and its
            # inspect shows no token
            own = common_pb2.ContainerIdentifier(prefix="", name=name)
            await platform.send(
                agent_pb2.AgentCommand(
                    deleteContainers=common_pb2.DeleteContainersRequest(
                        target=common_pb2.ContainerOrPrefix(container=own)
                    )
                )
            )
            refusal = (await platform.wait_unary("CommandError", within_s=30)).message
            assert "refusing to delete" in refusal.deleteContainers.error, refusal
            assert "agent's own container" in refusal.deleteContainers.error
            await platform.send(
                agent_pb2.AgentCommand(containerInspect=agent_pb2.ContainerInspectRequest(container=own))
            )
            inspected = (await platform.wait_unary("ContainerInspect", within_s=30)).message.data
            assert install not in inspected and "GRPC_TOKEN=******" in inspected
            assert client.api.inspect_container(name)["State"]["Running"]

            # self-update: the successor reads the same folder (key, new token)
            new_token = platform.mint("connection")
            platform.pending_connection_token = new_token
            await platform.send(
                agent_pb2.AgentCommand(
                    update=agent_pb2.AgentUpdateRequest(tag=next_tag, timeoutSeconds=120, token=new_token)
                )
            )
            # The successor dials while the old agent still holds the session; the platform then
            # tells the old agent to go (SELF_DESTRUCT), and the successor's next dial is accepted.
            await platform.wait_for(lambda: any(c.token == new_token for c in platform.connects), within_s=90)
            await platform.send(
                agent_pb2.AgentCommand(close=agent_pb2.CloseConnectionRequest(reason=agent_pb2.SELF_DESTRUCT))
            )
            successor = await platform.wait_for(
                lambda: next(
                    (c for c in platform.connects if c.token == new_token and c.status.name == "OK"), None
                ),
                within_s=90,
            )
            assert successor.info.publicKey == first.info.publicKey
            assert (folder / "token.jwt").read_text().strip() == new_token
            running = await asyncio.to_thread(client.api.inspect_container, name)
            assert running["Config"]["Image"] == f"{REPO}:{next_tag}" and running["State"]["Running"]
            mounts = {m["Destination"]: m["Source"] for m in running["Mounts"]}
            assert mounts["/srv/dagent"] == str(folder)
            print(f"\nFIGURE platform docker run line -> connected: {connected_s:.1f} s")
        except BaseException:
            print(logs_of(client, name))
            raise
        finally:
            await asyncio.to_thread(remove_all, client, name, prefix)


def test_the_image_entrypoint_accepts_init(
    client: docker.DockerClient, agent_tags: tuple[str, str], tmp_path: Path
) -> None:
    """The platform's manifest runs the image with ``args: [init]``: the entrypoint takes it."""
    image = f"{REPO}:{agent_tags[0]}"
    folder = tmp_path / "init"
    folder.mkdir()
    base = ["docker", "run", "--rm", "--network", "none", "-v", f"{folder}/:/srv/dagent"]
    missing = subprocess.run([*base, image, "init"], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1, missing.stderr
    assert "no usable token" in missing.stderr
    token = mint_token(iss="platform.example.test:5443", sub="node-1")
    done = subprocess.run(
        [*base, "-e", f"GRPC_TOKEN={token}", image, "init"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "private key created" in done.stdout and (folder / "secret.key").is_file()
    again = subprocess.run(
        [*base, "-e", f"GRPC_TOKEN={token}", image, "i"], capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 0 and "private key kept" in again.stdout, again.stderr
