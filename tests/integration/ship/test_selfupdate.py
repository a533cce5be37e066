"""DockerSelfUpdater on the real engine and registry, with busybox containers standing in for the
agent: the test process acts as the agent of a container it started (``own_container=``)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import requests.exceptions
from waiting import wait_event, wait_for

from berth.errors import UpdateRefused
from berth.imageref import with_tag
from berth.runtimes.docker.probe import container_id_candidates
from berth.runtimes.docker.selfupdate import (
    DockerSelfUpdater,
    _Pending,
    collisions,
    successor_config,
)
from berth.settings import DockerSettings

pytestmark = pytest.mark.docker

RUN = uuid.uuid4().hex[:12]  # this test run: its sweep leaves other runs' containers alone
TEST_LABEL = {"io.berth.test": "1"}
BASE = os.environ.get("BERTH_TEST_LOCAL_IMAGE", "local/busybox:1")


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    c = docker.from_env(timeout=60, version="1.41")  # no version probe that could leak a socket
    try:
        c.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as err:
        c.close()
        pytest.skip(f"no Docker engine: {err}")
    yield c
    c.close()


def _build(client: docker.DockerClient, tag: str, body: str) -> None:
    dockerfile = f"FROM {BASE}\nLABEL io.berth.test=1 io.berth.variant={tag.rsplit(':', 1)[1]}\n{body}\n"
    client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True, labels=TEST_LABEL)


@pytest.fixture(scope="module")
def repo(client: docker.DockerClient) -> Iterator[str]:
    """One repository with an ``old`` agent, a ``good`` successor and a ``bad`` one that exits."""
    name = f"local/berth-selfupdate-{uuid.uuid4().hex[:8]}"
    _build(client, f"{name}:old", 'ENV IMAGE_ENV=old\nVOLUME /data-anon\nCMD ["sleep", "600"]')
    _build(client, f"{name}:good", 'ENV IMAGE_ENV=good\nCMD ["sleep", "600"]')
    _build(client, f"{name}:bad", 'CMD ["sh", "-c", "exit 3"]')
    yield name
    for tag in ("old", "good", "bad"):
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(f"{name}:{tag}", force=True)


@pytest.fixture
def sweep(client: docker.DockerClient) -> Iterator[list[str]]:
    """Names of networks made by a test; every container this test run labelled is removed after
    (only this run's: other runs may share the engine)."""
    networks: list[str] = []
    yield networks
    for c in client.api.containers(all=True, filters={"label": f"io.berth.selfupdate-test={RUN}"}):
        with contextlib.suppress(docker.errors.NotFound):
            client.api.remove_container(c["Id"], force=True, v=True)
    for n in networks:
        with contextlib.suppress(docker.errors.APIError):
            client.networks.get(n).remove()


def _start_old(client: docker.DockerClient, image: str, tmp_path: Path, network: str, **extra: Any) -> Any:
    name = f"berth-su-{uuid.uuid4().hex[:8]}"
    return client.containers.run(
        image,
        name=name,
        detach=True,
        environment={"GRPC_TOKEN": "x.y.z", "NAME": "node-a"},
        labels={**TEST_LABEL, "io.berth.selfupdate-test": RUN, "operator.label": "kept"},
        restart_policy={"Name": "on-failure", "MaximumRetryCount": 3},
        extra_hosts={"host.docker.internal": "host-gateway"},
        volumes={str(tmp_path): {"bind": "/srv/dagent", "mode": "rw"}},
        network=network,
        **extra,
    )


def _inspect(client: docker.DockerClient, name: str) -> dict[str, Any]:
    attrs: dict[str, Any] = client.api.inspect_container(name)
    return attrs


async def _wait_successor(client: docker.DockerClient, name: str, old_id: str) -> dict[str, Any]:
    async def running_successor() -> dict[str, Any] | None:
        attrs = await asyncio.to_thread(_inspect, client, name)
        return attrs if attrs["Id"] != old_id and attrs["State"]["Running"] else None

    return await wait_for(
        running_successor, 10, "the successor to run", interval_s=0.1, ignoring=(docker.errors.NotFound,)
    )


async def test_update_copies_the_full_config_and_self_destruct_removes_the_old_agent(
    client: docker.DockerClient, repo: str, sweep: list[str], tmp_path: Path
) -> None:
    network = f"berth-su-net-{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(client.networks.create, network, labels=TEST_LABEL)
    sweep.append(network)
    old = await asyncio.to_thread(_start_old, client, f"{repo}:old", tmp_path, network)
    (tmp_path / "token.jwt").write_text("kept")
    await asyncio.to_thread(old.exec_run, ["sh", "-c", "echo anon > /data-anon/file"])
    updater = DockerSelfUpdater(DockerSettings(), own_container=old.id)
    assert await asyncio.to_thread(updater.own_container_name) == old.name

    update = asyncio.create_task(updater.begin_update("good", 60), name="test-update")
    new = await _wait_successor(client, old.name, old.id)
    old_now = await asyncio.to_thread(_inspect, client, old.id)
    assert old_now["Name"] == f"/{old.name}-update" and old_now["State"]["Running"]

    assert new["Config"]["Image"] == f"{repo}:good"
    env = new["Config"]["Env"]
    assert "GRPC_TOKEN=x.y.z" in env and "NAME=node-a" in env
    assert "IMAGE_ENV=good" in env and "IMAGE_ENV=old" not in env  # the new image's env applies
    labels = new["Config"]["Labels"]
    assert labels["operator.label"] == "kept" and labels["io.berth.variant"] == "good"
    host = new["HostConfig"]
    assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert host["ExtraHosts"] == ["host.docker.internal:host-gateway"]
    assert host["NetworkMode"] == network
    assert f"{tmp_path}:/srv/dagent:rw" in host["Binds"]
    assert network in new["NetworkSettings"]["Networks"]
    assert new["Config"]["Hostname"] == new["Id"][:12]  # the engine's own, not the old one
    token = await asyncio.to_thread(new_exec, client, new["Id"], "cat /srv/dagent/token.jwt")
    anon = await asyncio.to_thread(new_exec, client, new["Id"], "cat /data-anon/file")
    assert (token, anon) == ("kept", "anon")

    assert await updater.self_destruct() is True
    await wait_event(update, 10, "the update task to finish")
    with pytest.raises(docker.errors.NotFound):
        await asyncio.to_thread(_inspect, client, old.id)
    assert await updater.self_destruct() is False  # nothing pending any more


def new_exec(client: docker.DockerClient, container_id: str, command: str) -> str:
    result = client.containers.get(container_id).exec_run(["sh", "-c", command])
    return bytes(result.output).decode().strip()


async def _assert_rolled_back(client: docker.DockerClient, old: Any) -> None:
    attrs = await asyncio.to_thread(_inspect, client, old.name)
    assert attrs["Id"] == old.id and attrs["State"]["Running"]
    summaries = await asyncio.to_thread(client.api.containers, all=True)
    names = {n.lstrip("/") for c in summaries for n in c["Names"]}
    assert f"{old.name}-update" not in names


async def test_successor_that_exits_is_rolled_back(
    client: docker.DockerClient, repo: str, sweep: list[str], tmp_path: Path
) -> None:
    old = await asyncio.to_thread(_start_old, client, f"{repo}:old", tmp_path, "bridge")
    updater = DockerSelfUpdater(DockerSettings(), own_container=old.name)
    with pytest.raises(UpdateRefused, match=r"exited with code 3 before the platform accepted it"):
        await updater.begin_update("bad", 60)
    await _assert_rolled_back(client, old)


async def test_successor_not_accepted_before_the_deadline_is_rolled_back(
    client: docker.DockerClient, repo: str, sweep: list[str], tmp_path: Path
) -> None:
    old = await asyncio.to_thread(_start_old, client, f"{repo}:old", tmp_path, "bridge")
    updater = DockerSelfUpdater(DockerSettings(), own_container=old.name)
    with pytest.raises(UpdateRefused, match="not accepted by the platform before the deadline"):
        await updater.begin_update("good", 3)
    await _assert_rolled_back(client, old)
    assert await updater.self_destruct() is False


async def test_update_with_a_published_host_port_is_refused_without_touching_anything(
    client: docker.DockerClient, repo: str, sweep: list[str], tmp_path: Path
) -> None:
    free = _free_port()
    old = await asyncio.to_thread(
        _start_old, client, f"{repo}:old", tmp_path, "bridge", ports={"8080/tcp": ("127.0.0.1", free)}
    )
    updater = DockerSelfUpdater(DockerSettings(), own_container=old.name)
    with pytest.raises(UpdateRefused, match=f"host port {free}"):
        await updater.begin_update("good", 30)
    await _assert_rolled_back(client, old)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_pull_uses_credentials_and_reports_unauthorized_and_missing_tags(
    client: docker.DockerClient, sweep: list[str], tmp_path: Path
) -> None:
    registry = os.environ.get("BERTH_TEST_REGISTRY")
    user = os.environ.get("BERTH_TEST_REGISTRY_USER", "")
    password = os.environ.get("BERTH_TEST_REGISTRY_PASSWORD", "")
    if not registry:
        pytest.skip('BERTH_TEST_REGISTRY is not set (eval "$(tools/testenv.sh env)")')
    repo = f"{registry}/berth/selfupdate-{uuid.uuid4().hex[:6]}"
    auth = {"username": user, "password": password}
    await asyncio.to_thread(_build, client, f"{repo}:old", 'CMD ["sleep", "600"]')
    await asyncio.to_thread(_build, client, f"{repo}:new", 'ENV V=new\nCMD ["sleep", "600"]')
    await asyncio.to_thread(client.images.push, repo, tag="new", auth_config=auth)
    await asyncio.to_thread(client.images.remove, f"{repo}:new", force=True)
    try:
        old = await asyncio.to_thread(_start_old, client, f"{repo}:old", tmp_path, "bridge")
        anonymous = DockerSelfUpdater(DockerSettings(), own_container=old.name)
        with pytest.raises(UpdateRefused, match="Update failed: registry access: unauthorized"):
            await anonymous.begin_update("new", 30)
        settings = DockerSettings(update_registry_user=user, update_registry_password=password)
        with pytest.raises(UpdateRefused, match="Update failed: image cannot be found"):
            await DockerSelfUpdater(settings, own_container=old.name).begin_update("missing", 30)
        await _assert_rolled_back(client, old)

        updater = DockerSelfUpdater(settings, own_container=old.name)
        update = asyncio.create_task(updater.begin_update("new", 60), name="test-update-registry")
        new = await _wait_successor(client, old.name, old.id)
        assert "V=new" in new["Config"]["Env"]
        assert await updater.self_destruct() is True
        await wait_event(update, 10, "the update task to finish")
    finally:
        for tag in ("old", "new"):
            with contextlib.suppress(docker.errors.APIError):
                await asyncio.to_thread(client.images.remove, f"{repo}:{tag}", force=True)


# -- pure parts (no engine) ------------------------------------------------------------------------

ID = "92f4fb41d22ccd6aeaba493688dd83e9f011cefd21bf874d4cc250c26704c422"


@pytest.mark.parametrize(
    ("cgroup", "mountinfo", "hostname", "expected"),
    [
        (f"12:pids:/docker/{ID}\n1:cpu:/docker/{ID}", "", "abc", [ID, "abc"]),
        (f"0::/machine.slice/libpod-{ID}.scope", "", None, [ID]),
        (
            "0::/",
            f"98 79 254:0 /var/lib/containers/storage/overlay-containers/{ID}/userdata/hostname"
            " /etc/hostname rw",
            "node-host",
            [ID, "node-host"],
        ),
        ("0::/", f"98 79 254:0 /var/lib/docker/containers/{ID}/hostname /etc/hostname rw", None, [ID]),
        ("", "", "b2c3", ["b2c3"]),
        ("", "", None, []),
    ],
)
def test_own_container_candidates(
    cgroup: str, mountinfo: str, hostname: str | None, expected: list[str]
) -> None:
    assert container_id_candidates(cgroup, mountinfo, hostname) == expected


@pytest.mark.parametrize(
    ("current", "tag", "expected"),
    [
        ("berth/agent:0.1", "0.2", "berth/agent:0.2"),
        ("127.0.0.1:5000/berth/agent:1", "2", "127.0.0.1:5000/berth/agent:2"),
        ("registry:5000/agent", "2", "registry:5000/agent:2"),
        ("ghcr.io/x/agent:1@sha256:" + "a" * 64, "2", "ghcr.io/x/agent:2"),
    ],
)
def test_new_image_reference_keeps_the_repository(current: str, tag: str, expected: str) -> None:
    assert with_tag(current, tag) == expected


@pytest.mark.parametrize("tag", ["", "a/b", "x@y", "two words"])
def test_new_image_reference_refuses_odd_tags(tag: str) -> None:
    with pytest.raises(UpdateRefused):
        with_tag("berth/agent:1", tag)


def test_successor_config_keeps_operator_settings_and_drops_image_defaults() -> None:
    container = {
        "Id": ID,
        "Config": {
            "Hostname": ID[:12],
            "Image": "berth/agent:1",
            "Env": ["PATH=/image", "GRPC_TOKEN=t", "NAME=n"],
            "Labels": {"org.opencontainers.image.version": "1", "operator": "yes"},
            "Cmd": ["agent"],
            "Entrypoint": ["berth"],
            "Volumes": {"/srv/dagent": {}},
        },
        "HostConfig": {
            "Binds": ["/data:/srv/dagent"],
            "NetworkMode": "appnet",
            "RestartPolicy": {"Name": "always"},
            "ExtraHosts": ["host.docker.internal:host-gateway"],
            "ContainerIDFile": "/tmp/cid",
            "LogConfig": {"Type": "json-file", "Config": {"max-size": "1m"}},
        },
        "Mounts": [{"Type": "bind", "Destination": "/srv/dagent"}],
        "NetworkSettings": {
            "Networks": {
                "appnet": {"Aliases": [ID[:12], "agent"], "Links": None},
                "other": {"Aliases": None, "Links": None},
            }
        },
    }
    image = {
        "Config": {
            "Env": ["PATH=/image"],
            "Labels": {"org.opencontainers.image.version": "1"},
            "Cmd": ["agent"],
            "Entrypoint": ["berth"],
            "Volumes": {"/srv/dagent": {}},
        }
    }
    body, extra = successor_config(container, image, "berth/agent:2")
    assert body["Image"] == "berth/agent:2"
    assert body["Env"] == ["GRPC_TOKEN=t", "NAME=n"]
    assert body["Labels"] == {"operator": "yes"}
    assert "Cmd" not in body and "Entrypoint" not in body and "Hostname" not in body
    assert body["HostConfig"]["RestartPolicy"] == {"Name": "always"}
    assert body["HostConfig"]["ExtraHosts"] == ["host.docker.internal:host-gateway"]
    assert body["HostConfig"]["LogConfig"]["Config"] == {"max-size": "1m"}
    assert "ContainerIDFile" not in body["HostConfig"]
    assert body["NetworkingConfig"] == {"EndpointsConfig": {"appnet": {"Aliases": ["agent"], "Links": None}}}
    assert set(extra) == {"other"}


def test_collisions_name_fixed_ports_static_ips_and_macs() -> None:
    container = {
        "Config": {"MacAddress": "02:42:ac:11:00:02"},
        "HostConfig": {
            "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}], "81/tcp": [{"HostPort": ""}]}
        },
        "NetworkSettings": {"Networks": {"net": {"IPAMConfig": {"IPv4Address": "10.0.0.5"}}}},
    }
    assert collisions(container) == [
        "host port 8080 (80/tcp)",
        "a fixed MAC address",
        "a static IP address on network net",
    ]


class _SlowStartUpdater(DockerSelfUpdater):
    """Starting the successor blocks until released: the successor is already running (and may
    already be accepted) while the starting thread has not returned yet."""

    def __init__(self) -> None:
        super().__init__(DockerSettings(), own_container="agent")
        self.release = threading.Event()
        self.starting = threading.Event()
        self.removed: list[str] = []

    def _start_successor(self, tag: str, timeout_s: int, accepted: asyncio.Event) -> _Pending:
        self.starting.set()
        self.release.wait(10)
        return _Pending(
            "own-id", "agent", "agent-update", "new-id", f"img:{tag}", time.monotonic() + 30, accepted
        )

    def _remove(self, container_id: str) -> None:
        self.removed.append(container_id)


async def test_self_destruct_that_outruns_the_successor_start_still_removes_the_old_agent() -> None:
    updater = _SlowStartUpdater()
    update = asyncio.create_task(updater.begin_update("new", 30), name="test-slow-start-update")
    await wait_for(updater.starting.is_set, 5, "begin_update to enter the starting thread")
    destruct = asyncio.create_task(updater.self_destruct(), name="test-early-self-destruct")
    await asyncio.sleep(0.05)  # a chance to answer too early, which it must not take
    assert not destruct.done()  # it waits for the start to settle instead of answering False
    updater.release.set()
    assert await wait_event(destruct, 5, "the destruct task to finish") is True
    await wait_event(update, 5, "the update task to finish")
    assert updater.removed == ["own-id"]
