"""The desired-state file: round trip of a full deployment, 0600, merge/forget/mark, no clear
secrets, and the spec hash."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from berth.desired_state import DesiredDeployment, DesiredStateStore, spec_hash, strip_secrets
from berth.model import (
    ContainerRef,
    ContainerState,
    DeploymentSpec,
    DockerOptions,
    ExpectedState,
    InitContainer,
    LogConfig,
    LogDriver,
    Port,
    RegistryAuth,
    RestartPolicy,
    SecretValue,
    Volume,
    VolumeType,
    WorkloadSpec,
    frozen_map,
)


def workload(name: str, tag: str = "1") -> WorkloadSpec:
    return WorkloadSpec(
        id=f"id-{name}",
        prefix="demo",
        name=name,
        image_name="berth/busybox",
        tag=tag,
        registry="127.0.0.1:5000",
        registry_auth=RegistryAuth("local", "127.0.0.1:5000", "berth", "clear-password"),
        ports=(Port(80, 8080),),
        volumes=(Volume("data", "/data", type=VolumeType.RWO),),
        environment=frozen_map({"A": "1"}),
        secrets={"TOKEN": SecretValue("clear-secret")},
        init_containers=(InitContainer("seed", "busybox", command=("sh",)),),
        docker=DockerOptions(
            restart_policy=RestartPolicy.ALWAYS,
            expected_state=ExpectedState(ContainerState.RUNNING, timeout_s=5),
            log_config=LogConfig(LogDriver.JSON_FILE, frozen_map({"max-size": "1m"})),
            labels=frozen_map({"x": "y"}),
        ),
    )


def desired(*workloads: WorkloadSpec) -> DesiredDeployment:
    deployment = DeploymentSpec(id="dep", prefix="demo", version_name="1.0", workloads=workloads)
    return DesiredDeployment(
        deployment=strip_secrets(deployment),
        encrypted_secrets={w.name: {"TOKEN": "-----BEGIN PGP MESSAGE-----"} for w in workloads},
        encrypted_registry_passwords={w.name: "-----BEGIN PGP MESSAGE-----" for w in workloads},
        saved_at=1.0,
    )


def test_round_trip_keeps_everything_but_clear_secrets(tmp_path: Path) -> None:
    store = DesiredStateStore(tmp_path)
    original = desired(workload("web"), workload("db"))
    store.save(original)
    path = tmp_path / "desired" / "demo.json"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    text = path.read_text()
    assert "clear-password" not in text and "clear-secret" not in text
    loaded = store.load("demo")
    assert loaded is not None
    assert loaded.deployment == original.deployment
    assert dict(loaded.encrypted_secrets["web"]) == {"TOKEN": "-----BEGIN PGP MESSAGE-----"}
    assert store.load_all() == [loaded]


def test_merge_forget_and_stopped(tmp_path: Path) -> None:
    store = DesiredStateStore(tmp_path)
    store.remember(desired(workload("web"), workload("db")))
    store.remember(desired(workload("web", tag="2")))
    loaded = store.load("demo")
    assert loaded is not None
    assert [(w.name, w.tag) for w in loaded.deployment.workloads] == [("db", "1"), ("web", "2")]
    store.mark(ContainerRef("demo", "db"), stopped=True)
    assert store.load("demo").stopped == frozenset({"db"})  # type: ignore[union-attr]
    store.forget("demo", "db")
    assert [w.name for w in store.load("demo").deployment.workloads] == ["web"]  # type: ignore[union-attr]
    store.forget("demo", None)
    assert store.load("demo") is None


def test_spec_hash_ignores_instance_id_and_secret_values_but_not_configuration() -> None:
    base = workload("web")
    assert spec_hash(base) == spec_hash(dataclasses.replace(base, id="other"))
    assert spec_hash(base) == spec_hash(dataclasses.replace(base, secrets={"TOKEN": SecretValue("x")}))
    assert spec_hash(base) != spec_hash(dataclasses.replace(base, environment=frozen_map({"A": "2"})))
