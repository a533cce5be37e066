"""The pure parts of the dagent/crane drop-in: quantities, the Kubernetes list of ignored fields,
secret masking, the update tag check and the hardening settings."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from berth.agent.updater_systemd import SystemdSelfUpdater
from berth.errors import ConfigError, InvalidSpec, UpdateRefused
from berth.imageref import check_update_tag
from berth.model import (
    SECRET_KEYS_LABEL,
    ContainerState,
    DockerOptions,
    ExpectedState,
    LogConfig,
    LogDriver,
    NetworkMode,
    Port,
    RestartPolicy,
    Routing,
    WorkloadSpec,
    frozen_map,
)
from berth.runtimes.docker.compat import cpu_nanos, memory_bytes
from berth.runtimes.docker.compat import ignored_fields as docker_ignored
from berth.runtimes.docker.guard import mask_secrets
from berth.runtimes.kubernetes.compat import ignored_fields, rollout_timeout_s
from berth.settings import AgentSettings, DockerSettings, KubernetesSettings, load_agent_settings


def test_kubernetes_quantities_become_engine_units() -> None:
    assert memory_bytes("f", "128Mi") == 128 * 1024**2
    assert memory_bytes("f", "1G") == 10**9
    assert memory_bytes("f", "1000") == 1000
    assert cpu_nanos("f", "500m") == 500_000_000
    assert cpu_nanos("f", "2") == 2_000_000_000
    for bad, parse in (("1Gi", cpu_nanos), ("5m", memory_bytes), ("lots", memory_bytes)):
        with pytest.raises(InvalidSpec, match="f"):
            parse("f", bad)


def _workload(**fields: object) -> WorkloadSpec:
    return WorkloadSpec(id="w", prefix="p", name="web", image_name="img", **fields)  # type: ignore[arg-type]


def test_kubernetes_names_each_dagent_field_it_does_not_honour() -> None:
    dagent = DockerOptions(
        restart_policy=RestartPolicy.NO,
        network_mode=NetworkMode.HOST,
        networks=("backend",),
        log_config=LogConfig(driver=LogDriver.SYSLOG),
        labels=frozen_map({"team": "a"}),
        expected_state=ExpectedState(ContainerState.EXITED, timeout_s=5, exit_code=0),
    )
    workload = _workload(docker=dagent, ports=(Port(80, 8080),), routing=Routing(domain="a.example.test"))
    lines = "\n".join(ignored_fields(workload))
    for field in (
        "dagent.restartPolicy NO",
        "dagent.networkMode HOST",
        "dagent.networks backend",
        "dagent.logConfig SYSLOG",
        "dagent.labels team",
        "dagent.expectedState EXITED",
        "ports[].external 8080->80",
        "routing: not used, the workload is not exposed",
    ):
        assert field in lines


def test_the_platforms_dagent_defaults_raise_no_warning_on_kubernetes() -> None:
    dagent = DockerOptions(restart_policy=RestartPolicy.UNLESS_STOPPED, network_mode=NetworkMode.BRIDGE)
    assert ignored_fields(_workload(docker=dagent, ports=(Port(80),))) == []


def test_an_expected_running_state_bounds_the_rollout_wait() -> None:
    settings = KubernetesSettings(rollout_timeout_s=120)
    running = DockerOptions(expected_state=ExpectedState(ContainerState.RUNNING, timeout_s=7))
    assert rollout_timeout_s(_workload(docker=running), settings) == 7
    assert ignored_fields(_workload(docker=running)) == []
    assert rollout_timeout_s(_workload(), settings) == 120


def test_secret_values_are_masked_wherever_they_appear() -> None:
    attrs = {
        "Config": {
            "Labels": {SECRET_KEYS_LABEL: "TOKEN,PIN"},
            "Env": ["TOKEN=abcdef123", "PIN=7", "OTHER=7"],
            "Cmd": ["sh", "-c", "curl -H 'x: abcdef123' host"],
        },
        "Args": ["7", "abcdef123"],
    }
    masked = mask_secrets(attrs)
    assert masked["Config"]["Env"] == ["TOKEN=******", "PIN=******", "OTHER=7"]
    assert masked["Config"]["Cmd"][2] == "curl -H 'x: ******' host"
    assert masked["Args"] == ["******", "******"]  # a short value only where it is the whole string
    assert mask_secrets({"Config": {"Env": ["A=b"]}}) == {"Config": {"Env": ["A=b"]}}
    # the agent's own container (no secret label) never shows its token either
    agent = mask_secrets({"Config": {"Env": ["GRPC_TOKEN=eyJhbGciOi.x.y", "NAME=n"]}})
    assert agent["Config"]["Env"] == ["GRPC_TOKEN=******", "NAME=n"]


@pytest.mark.parametrize("tag", ["1.2.3", "latest", "0.15.4-berth.1", "v2_rc1"])
def test_update_tags_that_name_a_version_pass(tag: str) -> None:
    assert check_update_tag(tag) == tag


@pytest.mark.parametrize("tag", ["", "1 --index-url x", "../x", "a/b", "x@sha256:1", "-rf", "a" * 129])
def test_update_tags_that_could_be_anything_else_are_refused(tag: str) -> None:
    with pytest.raises(UpdateRefused, match="not a valid image tag"):
        check_update_tag(tag)


async def test_the_systemd_updater_refuses_a_bad_tag_before_touching_anything(tmp_path: Path) -> None:
    settings = replace(AgentSettings(), install_method="systemd", systemd_prefix=tmp_path)
    updater = SystemdSelfUpdater(settings, systemctl="false", systemd_run="false")
    with pytest.raises(UpdateRefused, match="not a valid image tag"):
        await updater.begin_update("1.0 --index-url=http://elsewhere", 60)
    assert await asyncio.to_thread(lambda: list(tmp_path.iterdir())) == []


def test_hardening_settings_are_read_and_checked() -> None:
    base = {"GRPC_TOKEN": "x"}
    settings = load_agent_settings(
        {
            **base,
            "BERTH_MANAGED_ONLY": "true",
            "BERTH_ALLOWED_HOST_PATHS": "/srv/data:/mnt/shared/",
            "BERTH_PUBLISH_HOST_IP": "::",
        }
    ).docker
    assert settings.managed_only
    assert settings.allowed_host_paths == ("/srv/data", "/mnt/shared")
    assert settings.publish_host_ip == "::"
    with pytest.raises(ConfigError, match="BERTH_ALLOWED_HOST_PATHS"):
        load_agent_settings({**base, "BERTH_ALLOWED_HOST_PATHS": "relative/path"})
    with pytest.raises(ConfigError, match="BERTH_PUBLISH_HOST_IP"):
        load_agent_settings({**base, "BERTH_PUBLISH_HOST_IP": "localhost"})


def test_docker_names_networks_and_ports_a_host_network_drops() -> None:
    dagent = DockerOptions(network_mode=NetworkMode.HOST, networks=("backend",))
    lines = "\n".join(docker_ignored(_workload(docker=dagent, ports=(Port(80, 8080),)), DockerSettings()))
    assert "dagent.networks backend: not joined" in lines
    assert "ports[].external / portRanges: not published with networkMode HOST" in lines
