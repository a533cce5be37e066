"""start/stop/restart, delete (workload and prefix), inspect, secret keys and the credential
store on a real kube-apiserver."""

from __future__ import annotations

import asyncio
import json

import pytest

from berth.errors import NotFound, PermanentCommandError, PersistenceError
from berth.model import (
    ContainerRef,
    DeploymentSpec,
    ExposeStrategy,
    Port,
    PrefixTarget,
    RegistryAuth,
    SecretValue,
    Volume,
    VolumeType,
    WorkloadSpec,
    frozen_map,
)
from berth.runtimes.kubernetes import KubernetesCredentialStore, resources
from berth.runtimes.kubernetes.manifests import RESTARTED_AT_ANNOTATION

pytestmark = pytest.mark.kube


def workload(prefix: str, name: str = "api") -> WorkloadSpec:
    return WorkloadSpec(
        id=f"wl-{name}",
        prefix=prefix,
        name=name,
        image_name="busybox",
        ports=(Port(8080),),
        expose=ExposeStrategy.EXPOSE,
        environment=frozen_map({"A": "1"}),
        secrets={"TOKEN": SecretValue("t"), "DB_PASSWORD": SecretValue("p")},
        registry_auth=RegistryAuth(name="r", url="registry.example.test", user="u", password="p"),
        volumes=(Volume("data", "/data", type=VolumeType.RWO),),
    )


async def test_start_stop_restart_patch_the_deployment(runtime, admin, prefix, events) -> None:
    await runtime.deploy(DeploymentSpec(id="d1", prefix=prefix, workloads=(workload(prefix),)), events)
    ref = ContainerRef(prefix, "api")

    await runtime.stop(ref)
    stopped = await asyncio.to_thread(admin.get, resources.DEPLOYMENT, prefix, "api")
    assert stopped["spec"]["replicas"] == 0
    first_bump = stopped["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT_ANNOTATION]

    await runtime.start(ref)
    started = await asyncio.to_thread(admin.get, resources.DEPLOYMENT, prefix, "api")
    assert started["spec"]["replicas"] == 1
    assert RESTARTED_AT_ANNOTATION in started["spec"]["template"]["metadata"]["annotations"]

    generation = started["metadata"]["generation"]
    await runtime.restart(ref)
    restarted = await asyncio.to_thread(admin.get, resources.DEPLOYMENT, prefix, "api")
    assert restarted["spec"]["replicas"] == 1
    assert restarted["metadata"]["generation"] == generation + 1  # a rollout restart
    assert restarted["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT_ANNOTATION] != first_bump

    # a redeploy keeps the restart annotation (owned by the patch) and scales back to 1
    await runtime.stop(ref)
    await runtime.deploy(DeploymentSpec(id="d1", prefix=prefix, workloads=(workload(prefix),)), events)
    redeployed = await asyncio.to_thread(admin.get, resources.DEPLOYMENT, prefix, "api")
    assert redeployed["spec"]["replicas"] == 1

    with pytest.raises(NotFound, match=f"Deployment {prefix}/missing not found"):
        await runtime.start(ContainerRef(prefix, "missing"))


async def test_delete_workload_keeps_pvcs_and_missing_is_success(runtime, admin, prefix, events) -> None:
    await runtime.deploy(
        DeploymentSpec(id="d1", prefix=prefix, workloads=(workload(prefix), workload(prefix, "other"))),
        events,
    )
    outcome = await runtime.delete(ContainerRef(prefix, "api"))
    assert f"deleted Deployment {prefix}/api" in outcome.notes
    for kind, name in (
        (resources.DEPLOYMENT, "api"),
        (resources.SERVICE, "api"),
        (resources.INGRESS, "api"),
        (resources.CONFIG_MAP, "api"),
        (resources.SECRET, "api"),
        (resources.SECRET, "api-reg"),
    ):
        got = await asyncio.to_thread(admin.get_or_none, kind, prefix, name)
        assert got is None or "deletionTimestamp" in got["metadata"], f"{kind.kind} {name} survived"
    assert (await asyncio.to_thread(admin.get_or_none, resources.PVC, prefix, "api-data")) is not None
    assert (await asyncio.to_thread(admin.get_or_none, resources.DEPLOYMENT, prefix, "other")) is not None

    again = await runtime.delete(ContainerRef(prefix, "api"))
    assert again.notes == (f"{prefix}-api was already gone",)
    assert await runtime.delete(ContainerRef("bt-never-existed", "x"))

    await runtime.delete(PrefixTarget(prefix))
    namespace = await asyncio.to_thread(admin.get_or_none, resources.NAMESPACE, None, prefix)
    assert namespace is None or namespace["status"]["phase"] == "Terminating"
    gone = await runtime.delete(PrefixTarget("bt-never-existed"))
    assert gone.notes == ("namespace bt-never-existed was already gone",)
    for protected in ("kube-system", "default", "dyrectorio"):  # dyrectorio: the agent's own (secret store)
        with pytest.raises(PermanentCommandError, match="protected"):
            await runtime.delete(PrefixTarget(protected))
    assert (await asyncio.to_thread(admin.get, resources.NAMESPACE, None, "kube-system"))["status"][
        "phase"
    ] == "Active"


async def test_inspect_and_secret_keys(runtime, prefix, events) -> None:
    await runtime.deploy(
        DeploymentSpec(
            id="d1",
            prefix=prefix,
            shared_secrets=frozen_map({"SHARED": "encrypted-blob"}),
            workloads=(workload(prefix),),
        ),
        events,
    )
    document = json.loads(await runtime.inspect(ContainerRef(prefix, "api")))
    assert document["deployment"]["metadata"]["name"] == "api"
    assert "managedFields" not in document["deployment"]["metadata"]
    assert isinstance(document["pods"], list)
    with pytest.raises(NotFound):
        await runtime.inspect(ContainerRef(prefix, "nope"))

    assert await runtime.secret_keys(ContainerRef(prefix, "api")) == ["DB_PASSWORD", "TOKEN"]
    assert await runtime.secret_keys(PrefixTarget(prefix)) == ["SHARED"]
    assert await runtime.secret_keys(ContainerRef(prefix, "nope")) == []


async def test_logs_of_a_workload_without_pods_is_not_found(runtime, prefix) -> None:
    with pytest.raises(NotFound, match="no pods"):
        async for _ in runtime.logs(ContainerRef(prefix, "ghost"), follow=False, tail_lines=10):
            pass


def test_credential_store_round_trip(settings, admin, prefix) -> None:
    from dataclasses import replace

    store = KubernetesCredentialStore(replace(settings, secret_namespace=prefix, secret_name="agent-secret"))
    try:
        assert store.read("token.jwt") is None  # neither the namespace nor the Secret exist yet
        store.write("token.jwt", "header.payload.sig")
        store.write("secret.key", "-----BEGIN PGP PRIVATE KEY BLOCK-----\nabc\n")
        assert store.read("token.jwt") == "header.payload.sig"
        assert store.read("secret.key").endswith("abc\n")
        store.delete("token.jwt")
        assert store.read("token.jwt") is None
        data = admin.get(resources.SECRET, prefix, "agent-secret")["data"]
        assert data["token.jwt"] == ""  # a deleted token is stored as "" (§15.11)
        store.delete("token-nonce.blacklist")  # missing counts as deleted
    finally:
        store.close()

    broken = KubernetesCredentialStore(replace(settings, kubeconfig="/nonexistent/kubeconfig"))
    with pytest.raises(PersistenceError, match="cannot read Secret dyrectorio/dyrectorio-secret"):
        broken.read("token.jwt")
