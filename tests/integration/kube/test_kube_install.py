"""The install manifest (install-k8s.yaml.tmpl, package data) applies on a real API server, and
its ServiceAccount can do exactly what the Kubernetes runtime needs: SubjectAccessReview for every
verb used (and denial of what is not needed), then the runtime itself runs as that account."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import subprocess
from dataclasses import replace

import pytest
import yaml
from kits.kube_cluster import BASE
from kits.kube_node import wait_pods
from kits.kube_objects import full_workload, service_account_kubeconfig
from waiting import wait_for

from berth.errors import NotFound, PermanentCommandError
from berth.model import ContainerRef, DeploymentSpec, LogItem, PrefixTarget, WorkloadSpec
from berth.platform.install_scripts import fill_template
from berth.platform.package_data import INSTALL_SCRIPTS, package_folder
from berth.runtimes.kubernetes import KubernetesCredentialStore, KubernetesRuntime, resources
from berth.runtimes.kubernetes.api import KubeApi
from berth.runtimes.kubernetes.api_errors import Request

pytestmark = pytest.mark.kube
TEMPLATE = package_folder(INSTALL_SCRIPTS) / "install-k8s.yaml.tmpl"
CA = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n"

PATHS = {
    "Namespace": "/api/v1/namespaces/{name}",
    "ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts/{name}",
    "Secret": "/api/v1/namespaces/{ns}/secrets/{name}",
    "ConfigMap": "/api/v1/namespaces/{ns}/configmaps/{name}",
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments/{name}",
    "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}",
    "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{name}",
}

# (verb, group, resource, subresource): every call the runtime makes
NEEDED = [
    ("create", "", "namespaces", ""),
    ("patch", "", "namespaces", ""),
    ("delete", "", "namespaces", ""),
    *[(v, "", r, "") for r in ("configmaps", "secrets") for v in ("get", "create", "patch", "delete")],
    *[(v, "", "services", "") for v in ("get", "list", "watch", "create", "patch", "delete")],
    *[(v, "", "persistentvolumeclaims", "") for v in ("get", "create", "patch")],
    ("list", "", "pods", ""),
    ("watch", "", "pods", ""),
    ("get", "", "pods", "log"),
    *[(v, "apps", "deployments", "") for v in ("get", "list", "watch", "create", "patch", "delete")],
    ("list", "apps", "replicasets", ""),  # a failed rollout is rolled back to the previous template
    *[(v, "networking.k8s.io", "ingresses", "") for v in ("get", "create", "patch", "delete")],
    *[(v, "monitoring.coreos.com", "servicemonitors", "") for v in ("get", "create", "patch", "delete")],
]
NOT_NEEDED = [
    ("list", "", "secrets", ""),
    ("watch", "", "secrets", ""),
    ("list", "", "namespaces", ""),
    ("delete", "", "persistentvolumeclaims", ""),
    ("create", "", "pods", ""),
    ("delete", "", "pods", ""),
    ("create", "", "pods", "exec"),
    ("get", "", "nodes", ""),
    ("get", "apps", "replicasets", ""),
    ("update", "apps", "deployments", ""),
    ("create", "rbac.authorization.k8s.io", "clusterroles", ""),
    ("create", "rbac.authorization.k8s.io", "clusterrolebindings", ""),
    ("get", "", "events", ""),
    ("escalate", "rbac.authorization.k8s.io", "clusterroles", ""),
]


def render(workload_name: str) -> str:
    values = {
        "GRPC_TOKEN": "install.jwt.token",
        "NODE_NAME": "cluster-1",
        "PLATFORM_ADDRESS": "platform.example.test:5443",
        "CA_PEM": CA,
        "CA_PEM_B64": base64.b64encode(CA.encode()).decode(),
        "INSECURE": "false",
        "IMAGE": "127.0.0.1:5000/berth/agent:test",
        "WORKLOAD_NAME": workload_name,
        "DATA_DIR": "/srv/berth",
    }
    text = TEMPLATE.read_text()
    rendered = fill_template(TEMPLATE.name, text, values)
    assert "@@" not in rendered
    return rendered


def apply_manifest(admin: KubeApi, text: str) -> list[dict]:
    docs = [d for d in yaml.safe_load_all(text) if d]
    for doc in docs:
        meta = doc["metadata"]
        path = PATHS[doc["kind"]].format(ns=meta.get("namespace", ""), name=meta["name"])
        admin.call(
            Request("patch", resources.NAMESPACE, meta.get("namespace"), meta["name"]),
            "PATCH",
            path,
            query=[("fieldManager", "berth-install"), ("force", "true")],
            body=yaml.safe_dump(doc).encode(),
            content_type="application/apply-patch+yaml",
        )
    return docs


def can(admin: KubeApi, user: str, verb: str, group: str, resource: str, sub: str, ns: str) -> bool:
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user,
            "groups": ["system:serviceaccounts", "system:authenticated"],
            "resourceAttributes": {
                "verb": verb,
                "group": group,
                "resource": resource,
                "subresource": sub,
                "namespace": "" if resource == "namespaces" else ns,
            },
        },
    }
    answer = admin.call(
        Request("create", resources.NAMESPACE),
        "POST",
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        body=review,
        content_type="application/json",
    )
    return bool(answer["status"].get("allowed"))


async def test_install_manifest_applies_and_grants_exactly_what_the_runtime_uses(
    admin, settings, kubeconfig, prefix, events, tmp_path
) -> None:
    name = f"bt-agent-{secrets.token_hex(3)}"
    docs = apply_manifest(admin, render(name))
    try:
        assert [d["kind"] for d in docs] == [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Secret",
            "ConfigMap",
            "Deployment",
        ]
        deployment = await asyncio.to_thread(admin.get, resources.DEPLOYMENT, name, f"{name}-agent")
        pod = deployment["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == f"{name}-agent"
        main = pod["containers"][0]
        env = {e["name"]: e for e in main["env"]}
        assert env["CRANE_IN_CLUSTER"]["value"] == "true" and env["BERTH_RUNTIME"]["value"] == "kubernetes"
        assert env["GRPC_TOKEN"]["valueFrom"]["secretKeyRef"] == {
            "name": f"{name}-install-token",
            "key": "GRPC_TOKEN",
        }
        assert (
            env["CRANE_DEPLOYMENT_NAME"]["value"] == f"{name}-agent"
        )  # the Deployment, not the pod (§17 #30)
        assert env["CRANE_DEPLOYMENT_NAMESPACE"]["value"] == name
        assert env["BERTH_CA_FILE"]["value"] == "/etc/berth/ca/ca.pem"
        assert "livenessProbe" in main and "readinessProbe" in main and main["resources"]["limits"]
        token = await asyncio.to_thread(admin.get, resources.SECRET, name, f"{name}-install-token")
        assert base64.b64decode(token["data"]["GRPC_TOKEN"]).decode() == "install.jwt.token"
        ca = await asyncio.to_thread(admin.get, resources.CONFIG_MAP, name, f"{name}-ca")
        assert base64.b64decode(ca["binaryData"]["ca.pem"]).decode() == CA

        user = f"system:serviceaccount:{name}:{name}-agent"
        missing = [n for n in NEEDED if not can(admin, user, *n, prefix)]
        assert not missing, f"the ServiceAccount lacks {missing}"
        excess = [n for n in NOT_NEEDED if can(admin, user, *n, prefix)]
        assert not excess, f"the ServiceAccount may do more than needed: {excess}"

        # the runtime itself, authenticated as that ServiceAccount
        agent_config = service_account_kubeconfig(admin, tmp_path, name, f"{name}-agent", kubeconfig)
        agent_settings = replace(
            settings, kubeconfig=agent_config, secret_namespace=name, secret_name=f"{name}-secret"
        )
        runtime = KubernetesRuntime(agent_settings)
        try:
            workload = replace(
                full_workload(prefix), kubernetes=replace(full_workload(prefix).kubernetes, metrics=None)
            )
            await runtime.deploy(DeploymentSpec(id="d1", prefix=prefix, workloads=(workload,)), events)
            await runtime.deploy(DeploymentSpec(id="d2", prefix=prefix, workloads=(workload,)), events)
            updates = runtime.watch(prefix)
            first = await anext(updates)
            await updates.aclose()
            assert [i.ref.name for i in first.items] == ["web"]
            assert (await runtime.list_state(None)).items
            ref = ContainerRef(prefix, "web")
            await runtime.stop(ref)
            await runtime.start(ref)
            await runtime.restart(ref)
            assert await runtime.inspect(ref)
            assert await runtime.secret_keys(ref) == ["API_KEY"]

            # the restart above replaces the pod: the one found may be gone by the time logs ask
            async def history() -> tuple[list[LogItem]]:
                await asyncio.to_thread(wait_pods, admin, prefix, "web")
                return ([line async for line in runtime.logs(ref, follow=False, tail_lines=5)],)

            (logs,) = await wait_for(
                history, 10, "the logs of the restarted workload", interval_s=0.2, ignoring=(NotFound,)
            )
            assert logs == []  # pods exist but never started (no kubelet)
            small = WorkloadSpec(id="s", prefix=prefix, name="web", image_name="busybox")
            await runtime.deploy(
                DeploymentSpec(id="d3", prefix=prefix, workloads=(small,)), events
            )  # stale removal
            await runtime.delete(ref)
            await runtime.delete(PrefixTarget(prefix))
        finally:
            await runtime.aclose()
        store = KubernetesCredentialStore(agent_settings)
        try:
            store.write("token.jwt", "a.b.c")
            assert store.read("token.jwt") == "a.b.c"
            store.delete("token.jwt")
        finally:
            store.close()

        # what the account may not do is reported naming the missing permission (403)
        agent_api = KubeApi(agent_settings)
        try:
            with pytest.raises(
                PermanentCommandError, match=r"lacks the permission to list secrets \(API group core\)"
            ):
                agent_api.list(resources.SECRET, name)
        finally:
            agent_api.close()
    finally:
        await asyncio.to_thread(admin.delete, resources.NAMESPACE, None, name)
        for kind in ("ClusterRoleBinding", "ClusterRole"):
            await asyncio.to_thread(
                admin.call,
                Request("delete", resources.NAMESPACE, None, name),
                "DELETE",
                PATHS[kind].format(ns="", name=f"{name}-agent"),
            )


SCRIPT = TEMPLATE.parent / "install-k8s.sh"


def _run_script(kubeconfig: str, *args: str) -> subprocess.CompletedProcess[str]:
    kubectl = BASE / "bin" / "kubectl"
    env = {**os.environ, "KUBECONFIG": kubeconfig, "KUBECTL": str(kubectl)}
    return subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=120)


async def test_install_script_dry_run_apply_wait_and_uninstall(admin, kubeconfig, tmp_path) -> None:
    if not (BASE / "bin" / "kubectl").is_file():
        pytest.skip("kubectl was not extracted by tools/kube-apiserver.sh")
    name = f"bt-inst-{secrets.token_hex(3)}"
    manifest = tmp_path / "berth.yaml"
    manifest.write_text(render(name))
    try:
        unrendered = await asyncio.to_thread(_run_script, kubeconfig, str(TEMPLATE))
        assert unrendered.returncode == 2 and "PLACEHOLDERS" in unrendered.stderr

        dry = await asyncio.to_thread(_run_script, kubeconfig, "--dry-run", str(manifest))
        assert dry.returncode == 0 and "dry run (client side" in dry.stderr, dry.stderr
        assert (await asyncio.to_thread(admin.get_or_none, resources.NAMESPACE, None, name)) is None

        # no kubelet here: everything is applied, then the rollout wait times out (exit 5)
        applied = await asyncio.to_thread(_run_script, kubeconfig, "--timeout", "2", str(manifest))
        assert applied.returncode == 5, applied.stderr
        assert f"applied deployment.apps/{name}-agent" in applied.stderr
        assert (await asyncio.to_thread(admin.get, resources.DEPLOYMENT, name, f"{name}-agent"))["spec"][
            "replicas"
        ] == 1
        again = await asyncio.to_thread(_run_script, kubeconfig, "--dry-run", str(manifest))
        assert again.returncode == 0 and "dry run (server side" in again.stderr, again.stderr

        removed = await asyncio.to_thread(_run_script, kubeconfig, "--uninstall", str(manifest))
        assert removed.returncode == 0, removed.stderr
        namespace = await asyncio.to_thread(admin.get_or_none, resources.NAMESPACE, None, name)
        assert namespace is None or namespace["status"]["phase"] == "Terminating"
        role = await asyncio.to_thread(
            admin.call, Request("list", resources.NAMESPACE), "GET", PATHS["ClusterRole"].format(name="")
        )
        assert f"{name}-agent" not in {r["metadata"]["name"] for r in role["items"]}
    finally:
        await asyncio.to_thread(admin.delete, resources.NAMESPACE, None, name)
        for kind in ("ClusterRoleBinding", "ClusterRole"):
            with contextlib.suppress(NotFound):
                await asyncio.to_thread(
                    admin.call,
                    Request("delete", resources.NAMESPACE, None, name),
                    "DELETE",
                    PATHS[kind].format(ns="", name=f"{name}-agent"),
                )
