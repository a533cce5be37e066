"""Drop-in for dagent on the real engine: nothing in a request is ignored silently, Docker
equivalents of the ``crane`` block are honoured, ports are published on IPv4 and IPv6, inspect
masks secrets, and the agent refuses to touch its own or its Traefik container."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import docker
import docker.errors
import pytest
from docker_support import (
    REGISTRY,
    REGISTRY_PASSWORD,
    REGISTRY_USER,
    SERVE_FOREVER,
    TEST_LABEL,
    RecordingEvents,
)
from docker_support import workload as labelled_workload
from fakeplatform import PlatformServer, agent_settings, running_agent
from waiting import wait_event, wait_for_blocking

from berth.errors import InvalidSpec, PermanentCommandError
from berth.model import (
    MANAGED_LABEL,
    PREFIX_LABEL,
    ConfigContainer,
    ContainerRef,
    DeploymentSpec,
    DeploymentStrategy,
    ExposeStrategy,
    HealthCheck,
    KubernetesOptions,
    LogLevel,
    Marker,
    Metrics,
    Port,
    PrefixTarget,
    ResourceConfig,
    Resources,
    Routing,
    SecretValue,
    Volume,
    VolumeType,
    WorkloadSpec,
    frozen_map,
)
from berth.proto import agent_pb2, common_pb2
from berth.runtimes.docker import DockerRuntime
from berth.runtimes.docker.traefik import ROLE_LABEL, TRAEFIK_ROLE
from berth.settings import DockerSettings

pytestmark = pytest.mark.docker


def _remove_prefix(client: docker.DockerClient, prefix: str) -> None:
    for summary in client.api.containers(all=True, filters={"label": f"{PREFIX_LABEL}={prefix}"}):
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            client.api.remove_container(summary["Id"], force=True, v=True)


@pytest.fixture
def prefix(docker_client: docker.DockerClient) -> Iterator[str]:
    """A unique prefix, swept by its own label only (the shared sweep also removes every
    test-labelled container, racing other test runs on this engine)."""
    value = f"bd{secrets.token_hex(3)}"
    yield value
    _remove_prefix(docker_client, value)


def workload(prefix: str, name: str, **overrides: object) -> WorkloadSpec:
    """The shared test workload without the shared test label: other test runs on this engine
    sweep that label at any time; the ``prefix`` fixture sweeps these by their prefix."""
    spec = labelled_workload(prefix, name, **overrides)
    labels = {k: v for k, v in spec.docker.labels.items() if k != TEST_LABEL}
    return replace(spec, docker=replace(spec.docker, labels=frozen_map(labels)))


HTTPD = "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 8080 -h /www"


def deployment(prefix: str, *workloads: WorkloadSpec) -> DeploymentSpec:
    return DeploymentSpec(id="dep-dropin", prefix=prefix, workloads=workloads)


def warnings_of(events: RecordingEvents) -> str:
    return "\n".join(line for level, lines in events.logs if level is LogLevel.WARNING for line in lines)


def http_get(host: str, port: int, within_s: float = 10.0) -> bytes:
    """Blocking (call it in a thread): the answer of the server behind a published port; the
    server may still be starting (the engine's proxy then accepts and resets), so retry."""

    def answer() -> bytes:
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
            return data

    return wait_for_blocking(
        answer,
        within_s,
        f"an answer on [{host}]:{port}",
        ignoring=(ConnectionResetError, ConnectionRefusedError),
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_every_field_docker_does_not_honour_is_named_in_a_warning(
    runtime: DockerRuntime, prefix: str, docker_client: docker.DockerClient
) -> None:
    crane = KubernetesOptions(
        deployment_strategy=DeploymentStrategy.ROLLING_UPDATE,
        proxy_headers=True,
        use_load_balancer=True,
        annotations=Marker(deployment=frozen_map({"a": "1"})),
        labels=Marker(service=frozen_map({"b": "2"})),
        metrics=Metrics(port=9090, path="/metrics"),
        custom_headers=("X-Test",),
        extra_lb_annotations=frozen_map({"lb": "x"}),
        health_check=HealthCheck(liveness_path="/live"),  # no port anywhere: cannot be honoured
    )
    spec = workload(
        prefix,
        "web",
        config_container=ConfigContainer(image="busybox", volume="conf", path="/conf"),
        volumes=(
            Volume(name="keys", path="/keys", type=VolumeType.SECRET),
            Volume(name="data", path="/data", size="1Gi", storage_class="fast"),
        ),
        expose=ExposeStrategy.EXPOSE,
        routing=Routing(domain="web.example.test"),
        kubernetes=crane,
    )
    hidden = workload(prefix, "hidden", routing=Routing(domain="hidden.example.test"))
    events = RecordingEvents()
    await runtime.deploy(deployment(prefix, spec, hidden), events)

    assert (await asyncio.to_thread(docker_client.api.inspect_container, f"{prefix}-web"))["State"]["Running"]
    warned = warnings_of(events)
    assert "routing: not used, the workload is not exposed" in warned
    for field in (
        "configContainer",
        "volumes[keys].type SECRET",
        "volumes[data].size",
        "volumes[data].class",
        "expose: TRAEFIK_ENABLED is off",
        "crane.deploymentStrategy ROLLING_UPDATE",
        "crane.healthCheckConfig",
        "crane.proxyHeaders",
        "crane.useLoadBalancer",
        "crane.annotations",
        "crane.labels",
        "crane.metrics",
        "crane.customHeaders",
        "crane.extraLBAnnotations",
    ):
        assert field in warned, f"no warning names {field}:\n{warned}"
    assert "not honoured" in warned


async def test_a_plain_workload_gets_no_warning(runtime: DockerRuntime, prefix: str) -> None:
    events = RecordingEvents()
    await runtime.deploy(deployment(prefix, workload(prefix, "plain")), events)
    assert warnings_of(events) == ""


async def test_crane_resources_and_health_check_become_docker_limits_and_a_health_check(
    runtime: DockerRuntime, prefix: str, docker_client: docker.DockerClient
) -> None:
    crane = KubernetesOptions(
        resources=ResourceConfig(
            limits=Resources(cpu="500m", memory="64Mi"), requests=Resources(cpu="250m", memory="32Mi")
        ),
        health_check=HealthCheck(port=8080, liveness_path="/index.html", readiness_path="/ready"),
    )
    spec = workload(prefix, "web", args=(HTTPD,), ports=(Port(8080),), kubernetes=crane)
    events = RecordingEvents()
    await runtime.deploy(deployment(prefix, spec), events)

    attrs = await asyncio.to_thread(docker_client.api.inspect_container, f"{prefix}-web")
    host = attrs["HostConfig"]
    assert host["Memory"] == 64 * 1024 * 1024
    assert host["NanoCpus"] == 500_000_000
    assert host["MemoryReservation"] == 32 * 1024 * 1024
    assert host["CpuShares"] == 256
    health = attrs["Config"]["Healthcheck"]
    assert health["Test"][0] == "CMD-SHELL"
    assert "http://127.0.0.1:8080/index.html" in health["Test"][1]
    assert health["Interval"] == 10 * 10**9 and health["Retries"] == 3
    # the check command works in the image (busybox wget) against the running server
    exec_id = (
        await asyncio.to_thread(docker_client.api.exec_create, attrs["Id"], ["sh", "-c", health["Test"][1]])
    )["Id"]
    await asyncio.to_thread(docker_client.api.exec_start, exec_id)
    assert (await asyncio.to_thread(docker_client.api.exec_inspect, exec_id))["ExitCode"] == 0
    text = events.text
    assert "Docker memory limit: 67108864" in text
    assert "Docker health check: GET http://127.0.0.1:8080/index.html" in text
    # the readiness path cannot be a second Docker check: said, not dropped silently
    assert "crane.healthCheckConfig.readinessProbe: not honoured" in warnings_of(events)


async def test_an_invalid_quantity_fails_before_anything_changes(
    runtime: DockerRuntime, prefix: str, docker_client: docker.DockerClient
) -> None:
    crane = KubernetesOptions(resources=ResourceConfig(limits=Resources(memory="lots")))
    with pytest.raises(InvalidSpec, match=r"crane\.resourceConfig\.limits\.memory"):
        await runtime.deploy(deployment(prefix, workload(prefix, "web", kubernetes=crane)), RecordingEvents())
    assert (
        await asyncio.to_thread(docker_client.api.containers, all=True, filters={"name": f"{prefix}-web"})
    ) == []


async def test_ports_are_published_on_every_address_family(
    runtime: DockerRuntime, prefix: str, docker_client: docker.DockerClient
) -> None:
    port = free_port()
    spec = workload(prefix, "web", args=(HTTPD,), ports=(Port(8080, port),))
    await runtime.deploy(deployment(prefix, spec), RecordingEvents())

    attrs = await asyncio.to_thread(docker_client.api.inspect_container, f"{prefix}-web")
    assert attrs["HostConfig"]["PortBindings"]["8080/tcp"] == [{"HostIp": "", "HostPort": str(port)}]
    published = {b["HostIp"] for b in attrs["NetworkSettings"]["Ports"]["8080/tcp"]}
    assert "0.0.0.0" in published
    if "::" not in published:
        pytest.skip(f"the engine publishes on {sorted(published)} only: IPv6 is not enabled on this host")
    assert b"ok" in await asyncio.to_thread(http_get, "::1", port)


async def test_a_publish_address_pins_one_family(
    settings: DockerSettings, prefix: str, docker_client: docker.DockerClient
) -> None:
    runtime = DockerRuntime(replace(settings, publish_host_ip="127.0.0.1"))
    try:
        port = free_port()
        spec = workload(prefix, "web", ports=(Port(8080, port),))
        await runtime.deploy(deployment(prefix, spec), RecordingEvents())
    finally:
        await runtime.aclose()
    attrs = await asyncio.to_thread(docker_client.api.inspect_container, f"{prefix}-web")
    assert attrs["HostConfig"]["PortBindings"]["8080/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": str(port)}]


async def test_inspect_masks_secret_values_everywhere(
    runtime: DockerRuntime, prefix: str, docker_client: docker.DockerClient
) -> None:
    secret = "s3cr3t-value-4711"
    spec = workload(
        prefix,
        "web",
        args=(f"echo {secret} >/dev/null; {SERVE_FOREVER}",),
        environment=frozen_map({"PLAIN": "visible-value"}),
        secrets={"API_KEY": SecretValue(secret), "PIN": SecretValue("42")},
    )
    await runtime.deploy(deployment(prefix, spec), RecordingEvents())
    raw = json.dumps(await asyncio.to_thread(docker_client.api.inspect_container, f"{prefix}-web"))
    assert secret in raw  # the engine itself shows it

    answer = await runtime.inspect(ContainerRef(prefix, "web"))
    assert secret not in answer
    document = json.loads(answer)
    env = document["Config"]["Env"]
    assert "API_KEY=******" in env and "PIN=******" in env and "PLAIN=visible-value" in env
    assert all(secret not in part for part in document["Args"])


def _bystander(client: docker.DockerClient, prefix: str, name: str, labels: dict[str, str]) -> str:
    """A container the agent did not create (swept by the ``prefix`` fixture through its label)."""
    container = client.api.create_container(
        f"{REGISTRY}/berth/busybox:1",
        ["sh", "-c", SERVE_FOREVER],
        name=name,
        labels={PREFIX_LABEL: prefix, **labels},
    )
    client.api.start(container["Id"])
    return str(container["Id"])


async def test_the_agent_never_touches_its_own_container(
    settings: DockerSettings, prefix: str, docker_client: docker.DockerClient
) -> None:
    # The deployment would replace a container of the same name: the agent's own one.
    own = f"{prefix}-agent"
    _bystander(docker_client, prefix, own, {})
    runtime = DockerRuntime(settings, own_container=own)
    try:
        for action in (runtime.stop, runtime.restart):
            with pytest.raises(PermanentCommandError, match=r"agent's own container"):
                await action(ContainerRef("", own))
        with pytest.raises(PermanentCommandError, match=r"refusing to delete .*agent's own container"):
            await runtime.delete(ContainerRef("", own))
        events = RecordingEvents()
        with pytest.raises(PermanentCommandError, match=r"refusing to replace .*agent's own container"):
            await runtime.deploy(deployment(prefix, workload(prefix, "agent")), events)
    finally:
        await runtime.aclose()
    attrs = await asyncio.to_thread(docker_client.api.inspect_container, own)
    assert attrs["State"]["Running"] and attrs["Name"] == f"/{own}"


async def test_the_agent_never_touches_its_traefik_container(
    runtime: DockerRuntime, prefix: str, docker_client: docker.DockerClient
) -> None:
    name = f"{prefix}-traefik"
    _bystander(docker_client, prefix, name, {ROLE_LABEL: TRAEFIK_ROLE})
    with pytest.raises(PermanentCommandError, match="Traefik container"):
        await runtime.stop(ContainerRef("", name))
    with pytest.raises(PermanentCommandError, match="Traefik container"):
        await runtime.delete(PrefixTarget(prefix))
    assert (await asyncio.to_thread(docker_client.api.inspect_container, name))["State"]["Running"]


async def test_managed_only_restricts_commands_to_berths_containers(
    settings: DockerSettings, prefix: str, docker_client: docker.DockerClient
) -> None:
    foreign = f"{prefix}-foreign"
    _bystander(docker_client, prefix, foreign, {})
    runtime = DockerRuntime(replace(settings, managed_only=True))
    try:
        await runtime.deploy(deployment(prefix, workload(prefix, "own")), RecordingEvents())
        await runtime.restart(ContainerRef(prefix, "own"))  # created by Berth: allowed
        with pytest.raises(PermanentCommandError, match="BERTH_MANAGED_ONLY"):
            await runtime.stop(ContainerRef("", foreign))
        with pytest.raises(PermanentCommandError, match="BERTH_MANAGED_ONLY"):
            await runtime.inspect(ContainerRef("", foreign))
        with pytest.raises(PermanentCommandError, match="BERTH_MANAGED_ONLY"):
            async for _ in runtime.logs(ContainerRef("", foreign), follow=False, tail_lines=1):
                pass
    finally:
        await runtime.aclose()
    assert (await asyncio.to_thread(docker_client.api.inspect_container, foreign))["State"]["Running"]
    labels = (await asyncio.to_thread(docker_client.api.inspect_container, f"{prefix}-own"))["Config"][
        "Labels"
    ]
    assert labels[MANAGED_LABEL] == "true"


async def test_absolute_volumes_bind_only_inside_the_allowlist(
    settings: DockerSettings, prefix: str, data_dir: Path, docker_client: docker.DockerClient
) -> None:
    allowed = data_dir / "shared"
    allowed.mkdir()
    runtime = DockerRuntime(replace(settings, allowed_host_paths=(str(allowed),)))
    try:
        events = RecordingEvents()
        outside = workload(prefix, "web", volumes=(Volume(name="/etc", path="/host-etc"),))
        with pytest.raises(InvalidSpec, match="outside BERTH_ALLOWED_HOST_PATHS"):
            await runtime.deploy(deployment(prefix, outside), events)
        assert (
            await asyncio.to_thread(docker_client.api.containers, all=True, filters={"name": f"{prefix}-web"})
        ) == []
        inside = workload(prefix, "web", volumes=(Volume(name=str(allowed / "a"), path="/a"),))
        await runtime.deploy(deployment(prefix, inside), RecordingEvents())
    finally:
        await runtime.aclose()
    binds = (await asyncio.to_thread(docker_client.api.inspect_container, f"{prefix}-web"))["HostConfig"][
        "Binds"
    ]
    assert binds == [f"{allowed / 'a'}:/a:rw"]


async def test_the_platform_receives_the_warnings_as_warning_lines(
    settings: DockerSettings, prefix: str, tmp_path: Path
) -> None:
    """Through the agent's session: the ``crane`` block as the platform sends it (always), with
    limits Docker honours and fields it cannot; the WARNING lines reach the event log."""
    workload = agent_pb2.DeployWorkloadRequest(
        id="w-web",
        registry=REGISTRY,
        imageName="berth/busybox",
        tag="1",
        registryAuth=agent_pb2.RegistryAuth(
            name="test", url=REGISTRY, user=REGISTRY_USER, password=REGISTRY_PASSWORD
        ),
        common=agent_pb2.CommonContainerConfig(
            name="web", commands=["sh", "-c"], args=[SERVE_FOREVER], secrets={}
        ),
        crane=agent_pb2.CraneContainerConfig(
            deploymentStrategy=common_pb2.ROLLING_UPDATE,
            useLoadBalancer=True,
            resourceConfig=common_pb2.ResourceConfig(limits=common_pb2.Resource(memory="48Mi")),
        ),
    )
    command = agent_pb2.AgentCommand(
        deploy=agent_pb2.DeployRequest(id="dep-wire", prefix=prefix, requests=[workload])
    )
    async with PlatformServer() as server:
        config = agent_settings(tmp_path / "agent", server.platform.issue_connection_token())
        async with running_agent(config, runtime=DockerRuntime(settings)):
            await server.platform.wait_accepted(within_s=20)
            await server.platform.send(command)
            stream = await server.platform.wait_stream("DeploymentStatus", within_s=30)
            await wait_event(stream.done.wait(), 60, "the stream to finish")
    assert stream.messages[-1].deploymentStatus == common_pb2.SUCCESSFUL
    warned = [line for m in stream.messages if m.logLevel == common_pb2.WARNING for line in m.log]
    assert any(line.startswith("crane.deploymentStrategy ROLLING_UPDATE") for line in warned), warned
    assert any(line.startswith("crane.useLoadBalancer") for line in warned), warned
    info = [line for m in stream.messages if m.logLevel == common_pb2.INFO for line in m.log]
    assert "crane.resourceConfig → Docker memory limit: 50331648" in info
