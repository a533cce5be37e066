"""One declaration per setting: every environment name kept, defaults that follow other settings,
Literal choices, empty = unset, and the README's tables equal to the declarations."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from berth import __version__
from berth.errors import ConfigError
from berth.settings import (
    AgentSettings,
    ConnectionSettings,
    DockerSettings,
    KubernetesSettings,
    declared_settings,
    load_agent_settings,
    markdown_table,
    readme_with_tables,
)

ROOT = Path(__file__).resolve().parents[2]

# Every name the agent has read (dagent/crane's and ours); install scripts and users rely on them.
KNOWN_NAMES = [
    "GRPC_TOKEN",
    "GRPC_KEEPALIVE",
    "DEFAULT_TIMEOUT",
    "DEBUG",
    "BERTH_INSECURE",
    "BERTH_CA_FILE",
    "BERTH_PLATFORM_ADDRESS",
    "BERTH_AGENT_VERSION",
    "BERTH_BACKOFF_INITIAL",
    "BERTH_BACKOFF_MAX",
    "BERTH_HEALTHY_AFTER",
    "DATA_MOUNT_PATH",
    "INTERNAL_MOUNT_PATH",
    "HOST_DOCKER_SOCK_PATH",
    "DEFAULT_REGISTRY",
    "DEFAULT_TAG",
    "IMPORT_CONTAINER_IMAGE",
    "ROOT_DOMAIN",
    "BERTH_STRICT_RO_VOLUMES",
    "TRAEFIK_ENABLED",
    "TRAEFIK_TLS",
    "TRAEFIK_ACME_MAIL",
    "TRAEFIK_LOG_LEVEL",
    "TRAEFIK_PORT",
    "TRAEFIK_TLS_PORT",
    "BERTH_STOP_GRACE",
    "BERTH_LOG_BUFFER_LINES",
    "BERTH_RESYNC_INTERVAL",
    "BERTH_UPDATE_REGISTRY_USER",
    "BERTH_UPDATE_REGISTRY_PASSWORD",
    "BERTH_PUBLISH_HOST_IP",
    "BERTH_MANAGED_ONLY",
    "BERTH_ALLOWED_HOST_PATHS",
    "BERTH_HEALTH_GATE",
    "BERTH_HEALTH_TIMEOUT",
    "BERTH_HEALTH_SLACK",
    "BERTH_DISK_CHECK",
    "BERTH_PRUNE_IMAGES",
    "BERTH_PRUNE_KEEP",
    "BERTH_DESIRED_STATE",
    "BERTH_RECONCILE",
    "BERTH_RECONCILE_AFTER",
    "BERTH_FIX_DRIFT",
    "CRANE_IN_CLUSTER",
    "BERTH_KUBECONFIG",
    "KUBECONFIG",
    "DEFAULT_KUBE_TIMEOUT",
    "FIELD_MANAGER_NAME",
    "FORCE_ON_CONFLICTS",
    "SECRET_NAME",
    "SECRET_NAMESPACE",
    "CRANE_DEPLOYMENT_NAME",
    "CRANE_DEPLOYMENT_NAMESPACE",
    "DEFAULT_LIMITS_CPU",
    "DEFAULT_LIMITS_MEMORY",
    "DEFAULT_REQUESTS_CPU",
    "DEFAULT_REQUESTS_MEMORY",
    "DEFAULT_VOLUME_SIZE",
    "BERTH_INGRESS_CLASS",
    "BERTH_WAIT_FOR_ROLLOUT",
    "BERTH_ROLLOUT_TIMEOUT",
    "NAME",
    "BERTH_RUNTIME",
    "BERTH_LOG_FORMAT",
    "BERTH_LOG_LEVEL",
    "BERTH_HEALTH_SOCKET",
    "BERTH_METRICS_ADDRESS",
    "BERTH_MAX_CONCURRENT_COMMANDS",
    "BERTH_SHUTDOWN_GRACE",
    "BERTH_INSTALL",
    "BERTH_SYSTEMD_PREFIX",
    "BERTH_UPDATE_PACKAGE",
    "BERTH_PIP_ARGS",
]


def _declared_names() -> list[str]:
    return [name for row in declared_settings() for name in row.setting.env]


def test_every_setting_has_a_one_line_doc() -> None:
    for row in declared_settings():
        assert row.doc, row.setting.env
        assert "\n" not in row.doc and "|" not in row.doc, row.setting.env


def test_every_known_name_is_declared_exactly_once() -> None:
    names = _declared_names()
    assert sorted(names) == sorted(set(names))
    assert set(KNOWN_NAMES) <= set(names)


def test_the_readme_tables_are_the_declarations() -> None:
    readme = (ROOT / "README.md").read_text()
    assert readme_with_tables(readme) == readme, "run: python -m berth.settings --readme README.md"
    for topic in {row.topic for row in declared_settings()}:
        assert f"<!-- settings: {topic} -->\n{markdown_table(topic)}\n<!-- /settings -->" in readme
    assert all(f"| `{name}`" in readme or f", `{name}`" in readme for name in _declared_names())


def test_the_table_is_printed_for_a_topic() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "berth.settings", "--markdown", "resilience"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert shown.splitlines()[0] == "| variable | default | meaning |"
    assert "| `BERTH_PRUNE_KEEP` | `2` | superseded images kept per workload for rollback |" in shown


def test_defaults_without_environment(tmp_path: Path) -> None:
    settings = load_agent_settings({"TMPDIR": str(tmp_path)})
    assert settings == dataclasses.replace(
        AgentSettings(),
        health_socket=tmp_path / "dyrectorio" / "agenthealth.sock",
        connection=ConnectionSettings(version=f"0.15.4-berth.{__version__}"),
    )
    assert settings.docker == DockerSettings()
    assert settings.kubernetes == KubernetesSettings()


def test_defaults_that_follow_other_settings() -> None:
    cluster = load_agent_settings({"CRANE_IN_CLUSTER": "true", "DEBUG": "true", "DATA_MOUNT_PATH": "/data"})
    assert cluster.runtime == "kubernetes"
    assert cluster.log_level == "debug"
    assert cluster.connection.allow_plaintext
    assert cluster.docker.internal_mount_path == cluster.data_dir == Path("/data")
    chosen = load_agent_settings(
        {
            "CRANE_IN_CLUSTER": "true",
            "BERTH_RUNTIME": "memory",
            "DEBUG": "true",
            "BERTH_LOG_LEVEL": "error",
            "DATA_MOUNT_PATH": "/data",
            "INTERNAL_MOUNT_PATH": "/inside",
        }
    )
    assert (chosen.runtime, chosen.log_level, chosen.data_dir) == ("memory", "error", Path("/inside"))


def test_one_setting_feeds_both_runtimes() -> None:
    settings = load_agent_settings({"DEFAULT_REGISTRY": "registry.example", "BERTH_RESYNC_INTERVAL": "1m"})
    assert settings.docker.default_registry == settings.kubernetes.default_registry == "registry.example"
    assert settings.docker.resync_interval_s == settings.kubernetes.resync_interval_s == 60.0


def test_the_first_of_several_names_wins() -> None:
    assert load_agent_settings({"KUBECONFIG": "/b"}).kubernetes.kubeconfig == "/b"
    assert load_agent_settings({"KUBECONFIG": "/b", "BERTH_KUBECONFIG": "/a"}).kubernetes.kubeconfig == "/a"


def test_an_empty_variable_counts_as_unset() -> None:
    blank = {
        "NAME": "",
        "BERTH_RUNTIME": " ",
        "BERTH_HEALTH_GATE": "",
        "GRPC_KEEPALIVE": "",
        "SECRET_NAME": "",
    }
    settings = load_agent_settings(blank)
    assert (settings.node_name, settings.runtime) == ("berth", "docker")
    assert settings.docker.resilience.health_gate
    assert settings.connection.keepalive_s == 30.0
    assert settings.kubernetes.secret_name == "dyrectorio-secret"


@pytest.mark.parametrize(
    ("field", "name", "alias"),
    [
        ("runtime", "BERTH_RUNTIME", "Runtime"),
        ("log_format", "BERTH_LOG_FORMAT", "LogFormat"),
        ("log_level", "BERTH_LOG_LEVEL", "LogLevel"),
        ("install_method", "BERTH_INSTALL", "InstallMethod"),
    ],
)
def test_choices_are_literal_types(field: str, name: str, alias: str) -> None:
    from berth import settings as module

    hints = typing.get_type_hints(AgentSettings, vars(module))
    assert hints[field] is getattr(module, alias)
    options = typing.get_args(hints[field])
    for option in options:
        assert getattr(load_agent_settings({name: option.upper()}), field) == option
    with pytest.raises(ConfigError) as caught:
        load_agent_settings({name: "something-else"})
    assert caught.value.setting == name
    assert ", ".join(options) in str(caught.value)


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"GRPC_KEEPALIVE": "soon"}, "GRPC_KEEPALIVE"),
        ({"BERTH_CA_FILE": "/nonexistent/ca.pem"}, "BERTH_CA_FILE"),
        ({"BERTH_PLATFORM_ADDRESS": "no-port"}, "BERTH_PLATFORM_ADDRESS"),
        ({"BERTH_AGENT_VERSION": "1"}, "BERTH_AGENT_VERSION"),
        ({"TRAEFIK_PORT": "0"}, "TRAEFIK_PORT"),
        ({"BERTH_PUBLISH_HOST_IP": "everywhere"}, "BERTH_PUBLISH_HOST_IP"),
        ({"BERTH_ALLOWED_HOST_PATHS": "/srv:../etc"}, "BERTH_ALLOWED_HOST_PATHS"),
        ({"DEFAULT_LIMITS_CPU": "lots"}, "DEFAULT_LIMITS_CPU"),
        ({"FORCE_ON_CONFLICTS": "maybe"}, "FORCE_ON_CONFLICTS"),
        ({"BERTH_KUBECONFIG": "", "BERTH_METRICS_ADDRESS": "9100"}, "BERTH_METRICS_ADDRESS"),
    ],
)
def test_an_invalid_value_is_refused_naming_the_variable(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_agent_settings(environ)
    assert caught.value.setting == named
