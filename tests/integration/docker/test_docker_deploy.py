"""deploy on the real engine: pulls, failures, redeploy safety, init containers, expected state."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.request
from dataclasses import replace
from pathlib import Path

import docker
import pytest
from docker_support import (
    REGISTRY,
    PushedImage,
    RecordingEvents,
    registry_auth,
    workload,
)
from waiting import wait_for

from berth.errors import InvalidSpec, PermanentCommandError
from berth.model import (
    PREFIX_LABEL,
    SECRET_KEYS_LABEL,
    ContainerRef,
    ContainerState,
    DeploymentSpec,
    DockerOptions,
    ExpectedState,
    InitContainer,
    LogLevel,
    Port,
    PrefixTarget,
    RestartPolicy,
    SecretValue,
    Volume,
    VolumeLink,
    VolumeType,
    frozen_map,
)
from berth.runtimes.docker import DockerRuntime
from berth.settings import DockerSettings

pytestmark = pytest.mark.docker

# Started, then fails its expected state: exits with 3 where 0 is expected (deterministic, unlike
# a RUNNING check racing a container that exits right after its start).
FAILS_AFTER_START = DockerOptions(
    restart_policy=RestartPolicy.NO,
    expected_state=ExpectedState(ContainerState.EXITED, timeout_s=10, exit_code=0),
)


def deployment(prefix: str, *workloads: object, **fields: object) -> DeploymentSpec:
    return DeploymentSpec(id="dep-1", prefix=prefix, workloads=tuple(workloads), **fields)  # type: ignore[arg-type]


async def test_authenticated_pull_reads_labels_after_the_pull(
    runtime: DockerRuntime, prefix: str, fresh_image: PushedImage, docker_client: docker.DockerClient
) -> None:
    events = RecordingEvents()
    spec = workload(prefix, "web", image_name=fresh_image.repository, tag="1")
    await runtime.deploy(deployment(prefix, spec), events)

    attrs = await asyncio.to_thread(docker_client.api.inspect_container, f"{prefix}-web")
    assert attrs["State"]["Running"]
    # the capability label came from the freshly pulled image and published its port
    assert attrs["Config"]["Labels"]["io.dyrector.cap.network.v1"]
    assert "8080/tcp" in attrs["HostConfig"]["PortBindings"]
    fractions = [f for wid, _, f in events.progress_items if wid == spec.id]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert all(0.0 <= f <= 1.0 for f in fractions)
    assert "Pull complete" in events.text
    assert (spec.id, ContainerState.RUNNING, "running", LogLevel.INFO) in events.instances
    # pull-if-newer: the local digest now matches the registry's, so a redeploy does not pull
    again = RecordingEvents()
    await runtime.deploy(deployment(prefix, spec), again)
    assert again.progress_items == []


async def test_wrong_credentials_fail_clearly(runtime: DockerRuntime, prefix: str) -> None:
    events = RecordingEvents()
    spec = workload(prefix, "web", registry_auth=registry_auth("wrong-password"))
    with pytest.raises(PermanentCommandError, match="registry refused access") as caught:
        await runtime.deploy(deployment(prefix, spec), events)
    assert "wrong-password" not in str(caught.value)
    assert events.instances[-1][1:] == (ContainerState.UNSPECIFIED, str(caught.value), LogLevel.ERROR)


async def test_missing_image_fails(runtime: DockerRuntime, prefix: str) -> None:
    events = RecordingEvents()
    spec = workload(prefix, "web", image_name="berth/does-not-exist", tag="9")
    with pytest.raises(PermanentCommandError, match="does not exist"):
        await runtime.deploy(deployment(prefix, spec), events)
    assert events.instances[-1][1] is ContainerState.UNSPECIFIED


@pytest.mark.parametrize(
    ("prefix_value", "name", "field"),
    [("Bad_Prefix", "web", "prefix"), ("ok", "web_", "container name"), ("ok", "x" * 70, "container name")],
)
async def test_invalid_names_fail_before_touching_the_engine(
    runtime: DockerRuntime, prefix_value: str, name: str, field: str, docker_client: docker.DockerClient
) -> None:
    events = RecordingEvents()
    with pytest.raises(InvalidSpec) as caught:
        await runtime.deploy(deployment(prefix_value, workload(prefix_value, name)), events)
    assert caught.value.field == field
    assert (
        await asyncio.to_thread(
            docker_client.api.containers, all=True, filters={"label": f"{PREFIX_LABEL}={prefix_value}"}
        )
    ) == []


async def test_volume_escaping_the_data_folder_is_refused(
    runtime: DockerRuntime, prefix: str, data_dir: Path
) -> None:
    spec = workload(prefix, "web", volumes=(Volume("../../etc", "/x"),))
    with pytest.raises(InvalidSpec, match="escapes"):
        await runtime.deploy(deployment(prefix, spec), RecordingEvents())
    assert not (data_dir / prefix).exists()


async def test_container_configuration_mapping(
    runtime: DockerRuntime, prefix: str, docker_client: docker.DockerClient, data_dir: Path
) -> None:
    net = f"{prefix}-net"
    await asyncio.to_thread(docker_client.api.create_network, net, labels={"io.berth.test": "1"})
    spec = workload(
        prefix,
        "web",
        environment=frozen_map({"PLAIN": "1", "OVERRIDDEN": "plain"}),
        secrets={"OVERRIDDEN": SecretValue("from-secret"), "TOKEN": SecretValue("s3cr3t")},
        tty=True,
        working_directory="/tmp",
        user=0,
        volumes=(
            Volume("data", "/data"),
            Volume("config", "/config", type=VolumeType.RO),
            Volume("scratch", "/scratch", size="8Mi", type=VolumeType.MEM),
        ),
        docker=DockerOptions(
            networks=(net,),
            restart_policy=RestartPolicy.ON_FAILURE,
            labels=frozen_map({"user.label": "x"}),
        ),
    )
    await runtime.deploy(deployment(prefix, spec), RecordingEvents())
    attrs = await asyncio.to_thread(docker_client.api.inspect_container, f"{prefix}-web")
    config, host = attrs["Config"], attrs["HostConfig"]
    assert config["Hostname"] == f"{prefix}-web"
    assert config["Tty"] is True
    assert config["WorkingDir"] == "/tmp" and config["User"] == "0"
    assert "OVERRIDDEN=from-secret" in config["Env"] and "PLAIN=1" in config["Env"]
    labels = config["Labels"]
    assert labels[PREFIX_LABEL] == prefix
    assert labels[SECRET_KEYS_LABEL] == "OVERRIDDEN,TOKEN"
    assert labels["user.label"] == "x"
    assert host["RestartPolicy"]["Name"] == "on-failure"
    assert "host.docker.internal:host-gateway" in host["ExtraHosts"]
    assert host["Tmpfs"] == {"/scratch": f"rw,size={8 * 1024 * 1024}"}
    # RO stays writable unless strict_read_only_volumes: the platform sends RO by default
    binds = {b.split(":")[1]: b for b in host["Binds"]}
    assert binds["/config"].endswith(":rw")
    assert binds["/data"] == f"{data_dir}/{prefix}/web/data:/data:rw"
    assert (data_dir / prefix / "web" / "data").is_dir()
    aliases = attrs["NetworkSettings"]["Networks"][net]["Aliases"]
    assert f"{prefix}-web" in aliases and "web" in aliases
    exec_id = await asyncio.to_thread(
        docker_client.api.exec_create, attrs["Id"], ["sh", "-c", "echo $TOKEN; touch /config/w && echo ok"]
    )
    output = (await asyncio.to_thread(docker_client.api.exec_start, exec_id)).decode()
    assert "s3cr3t" in output and "ok" in output


async def test_strict_read_only_volumes(
    prefix: str, docker_client: docker.DockerClient, settings: DockerSettings
) -> None:
    rt = DockerRuntime(replace(settings, strict_read_only_volumes=True))
    try:
        spec = workload(prefix, "web", volumes=(Volume("config", "/config", type=VolumeType.RO),))
        await rt.deploy(deployment(prefix, spec), RecordingEvents())
    finally:
        await rt.aclose()
    binds = (await asyncio.to_thread(docker_client.api.inspect_container, f"{prefix}-web"))["HostConfig"][
        "Binds"
    ]
    assert binds[0].endswith("/config:ro")


async def test_failing_redeploy_restores_the_previous_container(
    runtime: DockerRuntime, prefix: str, docker_client: docker.DockerClient
) -> None:
    good = workload(prefix, "web")
    await runtime.deploy(deployment(prefix, good), RecordingEvents())
    before = (await asyncio.to_thread(docker_client.api.inspect_container, f"{prefix}-web"))["Id"]

    broken = replace(good, args=("exit 3",), docker=replace(FAILS_AFTER_START, labels=good.docker.labels))
    events = RecordingEvents()
    with pytest.raises(PermanentCommandError, match="exited with code 3"):
        await runtime.deploy(deployment(prefix, broken), events)

    after = await asyncio.to_thread(docker_client.api.inspect_container, f"{prefix}-web")
    assert after["Id"] == before
    assert after["State"]["Running"]
    names = [
        c["Names"][0]
        for c in (
            await asyncio.to_thread(
                docker_client.api.containers, all=True, filters={"label": f"{PREFIX_LABEL}={prefix}"}
            )
        )
    ]
    assert names == [f"/{prefix}-web"]
    assert "Restored the previous container" in events.text
    assert "kept as" in events.text


async def test_successful_redeploy_replaces_the_container(
    runtime: DockerRuntime, prefix: str, docker_client: docker.DockerClient
) -> None:
    first = workload(prefix, "web")
    await runtime.deploy(deployment(prefix, first), RecordingEvents())
    before = (await asyncio.to_thread(docker_client.api.inspect_container, f"{prefix}-web"))["Id"]
    events = RecordingEvents()
    await runtime.deploy(deployment(prefix, replace(first, tag="2")), events)
    after = await asyncio.to_thread(docker_client.api.inspect_container, f"{prefix}-web")
    assert after["Id"] != before and after["Config"]["Image"].endswith(":2")
    with pytest.raises(docker.errors.NotFound):
        await asyncio.to_thread(docker_client.api.inspect_container, before)
    assert [s for _, s, _, _ in events.instances][-3:] == [
        ContainerState.RUNNING,
        ContainerState.WAITING,
        ContainerState.RUNNING,
    ]


async def test_init_container_exiting_non_zero_fails(
    runtime: DockerRuntime, prefix: str, docker_client: docker.DockerClient
) -> None:
    spec = workload(
        prefix,
        "web",
        init_containers=(
            InitContainer(
                name="migrate",
                image=f"{REGISTRY}/berth/busybox:1",
                command=("sh", "-c"),
                args=("echo boom; exit 4",),
            ),
        ),
    )
    events = RecordingEvents()
    with pytest.raises(PermanentCommandError, match=f"{prefix}-web-migrate exited with code 4"):
        await runtime.deploy(deployment(prefix, spec), events)
    assert f"{prefix}-web-migrate: boom" in events.text
    assert (
        await asyncio.to_thread(
            docker_client.api.containers, all=True, filters={"label": f"{PREFIX_LABEL}={prefix}"}
        )
    ) == []


async def test_init_container_with_parent_config_prepares_a_volume(
    runtime: DockerRuntime, prefix: str, data_dir: Path
) -> None:
    spec = workload(
        prefix,
        "web",
        environment=frozen_map({"GREETING": "hello"}),
        volumes=(Volume("data", "/data"),),
        init_containers=(
            InitContainer(
                name="seed",
                image=f"{REGISTRY}/berth/busybox:1",
                use_parent_config=True,
                volumes=(VolumeLink("data", "/seed"),),
                command=("sh", "-c"),
                args=("echo $GREETING > /seed/greeting",),
            ),
        ),
    )
    await runtime.deploy(deployment(prefix, spec), RecordingEvents())
    assert (data_dir / prefix / "web" / "data" / "greeting").read_text() == "hello\n"


@pytest.mark.parametrize(("exit_code", "ok"), [(0, True), (5, False)])
async def test_expected_exited_state_compares_the_exit_code(
    runtime: DockerRuntime, prefix: str, exit_code: int, ok: bool
) -> None:
    spec = workload(
        prefix,
        "job",
        args=("exit 0",),
        docker=DockerOptions(
            restart_policy=RestartPolicy.NO,
            expected_state=ExpectedState(ContainerState.EXITED, timeout_s=10, exit_code=exit_code),
        ),
    )
    if ok:
        await runtime.deploy(deployment(prefix, spec), RecordingEvents())
    else:
        with pytest.raises(PermanentCommandError, match="exited with code 0, expected 5"):
            await runtime.deploy(deployment(prefix, spec), RecordingEvents())


async def test_expected_state_timeout(runtime: DockerRuntime, prefix: str) -> None:
    spec = workload(
        prefix, "job", docker=DockerOptions(expected_state=ExpectedState(ContainerState.EXITED, timeout_s=1))
    )
    with pytest.raises(PermanentCommandError, match="did not reach the expected state EXITED within 1 s"):
        await runtime.deploy(deployment(prefix, spec), RecordingEvents())


async def test_several_workloads_in_order_with_shared_secrets_and_release_record(
    runtime: DockerRuntime, prefix: str, data_dir: Path, docker_client: docker.DockerClient
) -> None:
    specs = [workload(prefix, f"w{i}", tag=str(1 + i % 2)) for i in range(4)]
    events = RecordingEvents()
    shared = frozen_map(
        {"DB_PASSWORD": "-----BEGIN PGP MESSAGE-----\nabc\n-----END PGP MESSAGE-----\n", "API": ""}
    )
    await runtime.deploy(
        deployment(prefix, *specs, version_name="1.0.0", release_notes="first", shared_secrets=shared), events
    )
    started = [line for _, lines in events.logs for line in lines if line.startswith("Started container")]
    assert started == [f"Started container: {prefix}-w{i}" for i in range(4)]
    assert await runtime.secret_keys(PrefixTarget(prefix)) == ["DB_PASSWORD", "API"]
    record = (data_dir / prefix / "@release" / "1.0.0.yml").read_text()
    assert "version: 1.0.0" in record and f"{prefix}-w3" in record
    assert len(list((data_dir / prefix / "@release").iterdir())) == 1  # once per deployment
    await runtime.deploy(deployment(prefix, specs[0], version_name="1.0.0"), RecordingEvents())
    assert len(list((data_dir / prefix / "@release").iterdir())) == 2  # the older one kept as backup


async def test_secret_keys_and_inspect(runtime: DockerRuntime, prefix: str) -> None:
    spec = workload(prefix, "web", secrets={"A": SecretValue("1"), "B": SecretValue("2")})
    await runtime.deploy(deployment(prefix, spec), RecordingEvents())
    assert await runtime.secret_keys(ContainerRef(prefix, "web")) == ["A", "B"]
    assert await runtime.secret_keys(ContainerRef("", f"{prefix}-web")) == ["A", "B"]
    assert await runtime.secret_keys(ContainerRef(prefix, "missing")) == []
    assert await runtime.secret_keys(PrefixTarget(prefix)) == []
    document = json.loads(await runtime.inspect(ContainerRef(prefix, "web")))
    assert document["Name"] == f"/{prefix}-web" and "HostConfig" in document
    assert "2" not in json.dumps(document["Config"]["Labels"][SECRET_KEYS_LABEL])


async def test_empty_deployment_succeeds(runtime: DockerRuntime, prefix: str) -> None:
    events = RecordingEvents()
    await runtime.deploy(deployment(prefix), events)
    assert events.instances == []


async def test_unreachable_registry_falls_back_to_the_local_image_with_a_warning(
    runtime: DockerRuntime, prefix: str
) -> None:
    # local/busybox:1 exists only locally; its registry (Docker Hub) is not reachable here
    spec = workload(prefix, "web", registry=None, registry_auth=None, image_name="local/busybox", tag="1")
    events = RecordingEvents()
    await runtime.deploy(deployment(prefix, spec), events)
    warnings = [lines for level, lines in events.logs if level is LogLevel.WARNING]
    assert any(
        "not reachable" in line and "using the local image" in line for lines in warnings for line in lines
    )


async def test_traefik_boot_container_fails_clearly_without_its_image(
    settings: DockerSettings, docker_client: docker.DockerClient
) -> None:
    existing = await asyncio.to_thread(docker_client.api.containers, all=True, filters={"name": "^/traefik$"})
    if existing:
        pytest.skip("a container named traefik already exists on this engine")
    rt = DockerRuntime(replace(settings, traefik_enabled=True))
    try:
        with pytest.raises(PermanentCommandError, match="start Traefik"):
            await rt.preflight()
    finally:
        await rt.aclose()
    assert (settings.internal_mount_path / "traefik" / "logs").is_dir()


async def test_a_container_left_aside_by_an_interrupted_redeploy_is_recovered(
    runtime: DockerRuntime, prefix: str, docker_client: docker.DockerClient
) -> None:
    leftover = f"{prefix}-web-berth-previous"
    await asyncio.to_thread(
        docker_client.api.create_container,
        "local/busybox:1",
        name=leftover,
        command=["true"],
        labels={"io.berth.test": "1", PREFIX_LABEL: prefix},
    )
    broken = workload(prefix, "web", args=("exit 3",), docker=FAILS_AFTER_START)
    events = RecordingEvents()
    with pytest.raises(PermanentCommandError):
        await runtime.deploy(deployment(prefix, broken), events)
    assert "kept aside" in events.text
    restored = await asyncio.to_thread(docker_client.api.inspect_container, f"{prefix}-web")
    assert restored["Name"] == f"/{prefix}-web" and restored["Config"]["Cmd"] == ["true"]

    await runtime.deploy(deployment(prefix, workload(prefix, "web")), RecordingEvents())
    listed = await asyncio.to_thread(
        docker_client.api.containers, all=True, filters={"label": f"{PREFIX_LABEL}={prefix}"}
    )
    assert [c["Names"][0] for c in listed] == [f"/{prefix}-web"]


async def test_invalid_prefix_never_names_a_folder(runtime: DockerRuntime, data_dir: Path) -> None:
    with pytest.raises(InvalidSpec):
        await runtime.deploy(
            DeploymentSpec(id="d", prefix="../escape", shared_secrets=frozen_map({"A": "x"})),
            RecordingEvents(),
        )
    assert not (data_dir.parent / "escape").exists()


async def test_published_port_serves_on_the_host(
    runtime: DockerRuntime, prefix: str, docker_client: docker.DockerClient
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        host_port = probe.getsockname()[1]
    spec = workload(prefix, "web", commands=("httpd",), args=("-f", "-p", "80", "-h", "/www"))
    spec = replace(spec, ports=(Port(internal=80, external=host_port), Port(internal=81)))
    await runtime.deploy(deployment(prefix, spec), RecordingEvents())

    attrs = await asyncio.to_thread(docker_client.api.inspect_container, f"{prefix}-web")
    assert set(attrs["Config"]["ExposedPorts"]) == {"80/tcp", "81/tcp"}
    body = await wait_for(  # httpd binds a moment after the container starts
        lambda: asyncio.to_thread(_fetch, f"http://127.0.0.1:{host_port}/"),
        10,
        f"httpd to answer on host port {host_port}",
        interval_s=0.1,
        ignoring=(OSError,),
    )
    assert b"berth demo" in body


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=2) as answer:
        data: bytes = answer.read()
    return data
