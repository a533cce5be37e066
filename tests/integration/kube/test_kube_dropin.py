"""Drop-in for crane on the real API server: ``berth init`` as the platform's manifest runs it
(init container, ``args: [init]``), and the main container's path as ServiceAccount ``default``
with dyrector.io's own ClusterRoles (no networking.k8s.io/ingresses, apps/replicasets or
pods/log): it connects, deploys without Ingress, and fails what needs a missing permission,
naming it. Also the WARNING lines for the ``dagent`` fields a cluster does not honour."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from fakeplatform import PlatformServer, agent_settings, mint_token, running_agent
from kits.kube_cluster import TEST_PREFIX
from kits.kube_objects import (
    AGENT_DEPLOYMENT,
    Recorder,
    agent_deployment,
    create_namespace,
    service_account_kubeconfig,
)
from waiting import wait_event, wait_for_blocking

from berth.errors import NotFound, PermanentCommandError
from berth.model import (
    ContainerRef,
    ContainerState,
    DeploymentSpec,
    DockerOptions,
    ExpectedState,
    ExposeStrategy,
    LogLevel,
    NetworkMode,
    Port,
    RestartPolicy,
    Routing,
    WorkloadSpec,
    frozen_map,
)
from berth.proto import agent_pb2, common_pb2
from berth.runtimes.kubernetes import KubernetesCredentialStore, KubernetesRuntime, resources
from berth.runtimes.kubernetes.api import KubeApi
from berth.runtimes.kubernetes.api_errors import Request
from berth.runtimes.kubernetes.selfscale import KubernetesSelfScaler, deployment_of_pod
from berth.settings import KubernetesSettings

pytestmark = pytest.mark.kube
ROOT = Path(__file__).resolve().parents[3]
ISSUER = "platform.example.test:5443"

# dyrector.io 0.15.x install-k8s.sh, as the issue states it: two ClusterRoles aggregated by a
# label into one that is bound to ServiceAccount ``default``; what they grant (the rules miss
# networking.k8s.io/ingresses, apps/replicasets and pods/log).
ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
PLATFORM_RULES_CREATE_READ_ONLY = [
    {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["get", "list", "patch", "create"]}
]
PLATFORM_RULES_RW = [
    {
        "apiGroups": [""],
        "resources": [
            "deployments",
            "services",
            "pods",
            "ingress",
            "secrets",
            "configmaps",
            "events",
            "namespaces",
        ],
        "verbs": ALL_VERBS,
    },
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ALL_VERBS},
    {"apiGroups": ["monitoring.coreos.com"], "resources": ["servicemonitors"], "verbs": ALL_VERBS},
]
RBAC = "/apis/rbac.authorization.k8s.io/v1"


def _berth(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "berth", *args],
        env={"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/root"), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _init_env(kubeconfig: str, namespace: str, token: str) -> dict[str, str]:
    # The manifest's ConfigMap (CRANE_IN_CLUSTER=true, GRPC_TOKEN, NAME); out of the cluster the
    # runtime is picked explicitly and the API server is reached through a kubeconfig.
    return {
        "BERTH_RUNTIME": "kubernetes",
        "KUBECONFIG": kubeconfig,
        "GRPC_TOKEN": token,
        "NAME": "cluster-1",
        "SECRET_NAMESPACE": namespace,
        "BERTH_LOG_FORMAT": "json",
    }


def _versions(admin: KubeApi, namespace: str) -> tuple[str, str]:
    ns = admin.get(resources.NAMESPACE, None, namespace)
    secret = admin.get(resources.SECRET, namespace, "dyrectorio-secret")
    return ns["metadata"]["resourceVersion"], secret["metadata"]["resourceVersion"]


def test_init_creates_the_namespace_and_key_once(admin: KubeApi, kubeconfig: str) -> None:
    namespace = f"{TEST_PREFIX}init-{secrets.token_hex(3)}"
    token = mint_token(iss=ISSUER, sub=str(uuid.uuid4()))
    try:
        first = _berth(["init"], _init_env(kubeconfig, namespace, token))
        assert first.returncode == 0, first.stderr
        assert f"namespace {namespace} created" in first.stdout
        assert "private key created" in first.stdout
        assert token not in first.stdout + first.stderr
        secret = admin.get(resources.SECRET, namespace, "dyrectorio-secret")
        key = base64.b64decode(secret["data"]["secret.key"]).decode()
        assert key.startswith("-----BEGIN PGP PRIVATE KEY BLOCK-----")
        before = _versions(admin, namespace)

        again = _berth(["i"], _init_env(kubeconfig, namespace, token))  # crane's alias
        assert again.returncode == 0, again.stderr
        assert f"namespace {namespace} exists" in again.stdout and "private key kept" in again.stdout
        assert _versions(admin, namespace) == before  # nothing was written
    finally:
        admin.delete(resources.NAMESPACE, None, namespace)


@pytest.mark.parametrize("token", ["", "not-a-jwt"])
def test_init_without_a_usable_token_fails_clearly_and_creates_nothing(
    admin: KubeApi, kubeconfig: str, token: str
) -> None:
    namespace = f"{TEST_PREFIX}init-{secrets.token_hex(3)}"
    result = _berth(["init"], _init_env(kubeconfig, namespace, token))
    assert result.returncode == 1
    assert "berth init: no usable token: GRPC_TOKEN is missing or not a valid token" in result.stderr
    assert admin.get_or_none(resources.NAMESPACE, None, namespace) is None


# -- the platform's RBAC ---------------------------------------------------------------------------


def _rbac(admin: KubeApi, method: str, path: str, body: dict[str, object] | None = None) -> None:
    admin.call(
        Request("create", resources.NAMESPACE),
        method,
        f"{RBAC}/{path}",
        body=body,
        content_type="application/json" if body is not None else None,
    )


@pytest.fixture
def platform_rbac(admin: KubeApi, kubeconfig: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The agent's namespace (``dyrectorio`` in the manifest) with the platform's ClusterRoles
    bound to its ``default`` ServiceAccount; yields (namespace, kubeconfig of that account)."""
    namespace = f"{TEST_PREFIX}dyo-{secrets.token_hex(3)}"
    tag = namespace  # unique role names and aggregation label per test
    admin.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    label = {"rbac.dyrector.io/crane": tag}
    roles = {
        f"{tag}-crane-create-read-only": PLATFORM_RULES_CREATE_READ_ONLY,
        f"{tag}-crane-rw": PLATFORM_RULES_RW,
    }
    try:
        for name, rules in roles.items():
            body = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole"}
            _rbac(
                admin,
                "POST",
                "clusterroles",
                {**body, "metadata": {"name": name, "labels": label}, "rules": rules},
            )
        _rbac(
            admin,
            "POST",
            "clusterroles",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": f"{tag}-crane"},
                "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": label}]},
                "rules": [],
            },
        )
        _rbac(
            admin,
            "POST",
            "clusterrolebindings",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": f"{tag}-crane"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": f"{tag}-crane",
                },
                "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}],
            },
        )

        def aggregated() -> bool:
            role = admin.call(Request("get", resources.NAMESPACE), "GET", f"{RBAC}/clusterroles/{tag}-crane")
            return len(role.get("rules") or []) == 4

        def default_account() -> bool:
            path = f"/api/v1/namespaces/{namespace}/serviceaccounts/default"
            try:
                admin.call(Request("get", resources.NAMESPACE), "GET", path)
            except NotFound:
                return False
            return True

        # the controller manager's clusterrole-aggregation controller
        wait_for_blocking(aggregated, 20, "the aggregated cluster role", interval_s=0.2)
        # created by the controller manager, as in a real cluster
        wait_for_blocking(default_account, 20, "the default service account", interval_s=0.2)
        yield namespace, service_account_kubeconfig(admin, tmp_path, namespace, "default", kubeconfig)
    finally:
        admin.delete(resources.NAMESPACE, None, namespace)
        for name in [*roles, f"{tag}-crane"]:
            for kind in ("clusterrolebindings", "clusterroles"):
                with contextlib.suppress(NotFound):
                    _rbac(admin, "DELETE", f"{kind}/{name}")


def _deploy_command(deployment_id: str, prefix: str, *, ingress: bool) -> agent_pb2.AgentCommand:
    common = agent_pb2.CommonContainerConfig(
        name="web", ports=[agent_pb2.Port(internal=80)], environment={"MODE": "prod"}
    )
    if ingress:
        common.expose = common_pb2.EXPOSE
        common.routing.CopyFrom(common_pb2.Routing(domain="web.example.test", path="/"))
    workload = agent_pb2.DeployWorkloadRequest(id="w-web", imageName="nginx", tag="1.25", common=common)
    return agent_pb2.AgentCommand(
        deploy=agent_pb2.DeployRequest(id=deployment_id, prefix=prefix, requests=[workload])
    )


async def test_the_platforms_rbac_runs_berth_and_names_what_is_missing(
    admin: KubeApi, settings: KubernetesSettings, prefix: str, platform_rbac: tuple[str, str], tmp_path: Path
) -> None:
    namespace, account_config = platform_rbac
    token = mint_token(iss=ISSUER, sub=str(uuid.uuid4()), token_type="connection")

    # the init container, as ServiceAccount default
    init = await asyncio.to_thread(_berth, ["init"], _init_env(account_config, namespace, token))
    assert init.returncode == 0, init.stderr
    assert "private key created" in init.stdout

    # the main container, as ServiceAccount default: connect, deploy, state, then what is missing
    kube = replace(settings, kubeconfig=account_config, secret_namespace=namespace)
    async with PlatformServer() as server:
        platform = server.platform
        token = platform.issue_connection_token()
        config = replace(agent_settings(tmp_path / "data", token), runtime="kubernetes", kubernetes=kube)
        store = KubernetesCredentialStore(kube)
        try:
            async with running_agent(config, runtime=KubernetesRuntime(kube), store=store):
                accepted = await platform.wait_accepted(within_s=20)
                key = base64.b64decode(
                    admin.get(resources.SECRET, namespace, "dyrectorio-secret")["data"]["secret.key"]
                ).decode()
                assert key.startswith("-----BEGIN PGP PRIVATE KEY BLOCK-----")  # the init's key is used
                assert accepted.info.publicKey

                await platform.send(_deploy_command("dep-plain", prefix, ingress=False))
                stream = await platform.wait_stream("DeploymentStatus", within_s=20)
                await wait_event(stream.done.wait(), 20, "the stream to finish")
                logs = [line for m in stream.messages for line in m.log]
                assert stream.messages[-1].deploymentStatus == common_pb2.SUCCESSFUL, logs
                assert any(
                    "Could not check for a stale Ingress" in line and "ingresses" in line for line in logs
                )
                assert admin.get(resources.DEPLOYMENT, prefix, "web")

                await platform.send(_deploy_command("dep-ingress", prefix, ingress=True))
                stream = await platform.wait_stream("DeploymentStatus", count=2, within_s=20)
                await wait_event(stream.done.wait(), 20, "the stream to finish")
                last = stream.messages[-1]
                assert last.deploymentStatus == common_pb2.FAILED
                failure = "\n".join(line for m in stream.messages for line in m.log)
                assert "lacks the permission to create ingresses (API group networking.k8s.io)" in failure
                assert admin.get_or_none(resources.INGRESS, prefix, "web") is None

        finally:
            store.close()

    # state and the commands the platform's rules allow, as the same account; logs name pods/log
    runtime = KubernetesRuntime(kube)  # the agent closed its runtime when it stopped
    try:
        updates = runtime.watch(prefix)
        first = await anext(updates)
        await updates.aclose()
        assert [i.ref.name for i in first.items] == ["web"]
        with pytest.raises(PermanentCommandError, match=r"lacks the permission to get pods/log"):
            await wait_for_pod_then_logs(admin, runtime, prefix)
        outcome = await runtime.delete(ContainerRef(prefix, "web"))
        assert any("could not delete Ingress" in note for note in outcome.notes)
        assert admin.get_or_none(resources.DEPLOYMENT, prefix, "web") is None
    finally:
        await runtime.aclose()


async def wait_for_pod_then_logs(admin: KubeApi, runtime: KubernetesRuntime, prefix: str) -> None:
    def pod_exists() -> bool:
        return bool(admin.list(resources.POD, prefix, label_selector="app=web").get("items"))

    await asyncio.to_thread(wait_for_blocking, pod_exists, 20, "a pod of web", interval_s=0.2)
    async for _ in runtime.logs(ContainerRef(prefix, "web"), follow=False, tail_lines=5):
        break


# -- dagent fields on a cluster ------------------------------------------------------------------


async def test_dagent_fields_a_cluster_does_not_honour_are_named(
    runtime: KubernetesRuntime, prefix: str, events: Recorder
) -> None:
    workload = WorkloadSpec(
        id="w",
        prefix=prefix,
        name="web",
        image_name="nginx",
        tag="1.25",
        ports=(Port(80, 8080),),
        docker=DockerOptions(
            restart_policy=RestartPolicy.NO,
            network_mode=NetworkMode.HOST,
            networks=("backend",),
            labels=frozen_map({"team": "a"}),
            expected_state=ExpectedState(ContainerState.EXITED),
        ),
        expose=ExposeStrategy.NONE,
        routing=Routing(),
    )
    await runtime.deploy(DeploymentSpec(id="d", prefix=prefix, workloads=(workload,)), events)
    warned = "\n".join(line for level, line in events.logs if level is LogLevel.WARNING)
    for field in (
        "dagent.restartPolicy NO",
        "dagent.networkMode HOST",
        "dagent.networks backend",
        "dagent.labels team",
        "dagent.expectedState EXITED",
        "ports[].external 8080->80",
    ):
        assert field in warned, f"no warning names {field}:\n{warned}"


async def test_shutdown_finds_the_agents_deployment_from_its_pod_name(
    admin: KubeApi, settings: KubernetesSettings, prefix: str
) -> None:
    """dyrector.io's manifest gives CRANE_DEPLOYMENT_NAME to the init container only: the main
    container's scaler derives its Deployment from the pod name."""
    create_namespace(admin, prefix)
    admin.apply(agent_deployment(prefix, 1))
    assert deployment_of_pod(f"{AGENT_DEPLOYMENT}-7c9f8d6b5-x2x4z") == AGENT_DEPLOYMENT
    assert deployment_of_pod("standalone") == ""
    scaler = KubernetesSelfScaler(
        replace(settings, secret_namespace=prefix, deployment_name=""),
        pod_name=f"{AGENT_DEPLOYMENT}-7c9f8d6b5-x2x4z",
    )
    await scaler.scale_down_self()
    assert admin.get(resources.DEPLOYMENT, prefix, AGENT_DEPLOYMENT)["spec"]["replicas"] == 0
