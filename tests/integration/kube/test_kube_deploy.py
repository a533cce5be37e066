"""Deploy on a real kube-apiserver: every object checked with the API, idempotence, in-place
updates, stale-object removal, the rollout wait (FAILED with a reason / SUCCESSFUL)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import replace

import pytest
from kits.kube_node import patch_pod_status, running_pod, wait_pods
from kits.kube_objects import full_workload
from waiting import wait_for_blocking

from berth.errors import InvalidSpec, PermanentCommandError
from berth.model import (
    ContainerState,
    DeploymentSpec,
    ExposeStrategy,
    KubernetesOptions,
    Marker,
    Port,
    ResourceConfig,
    Resources,
    SecretValue,
    WorkloadSpec,
    frozen_map,
)
from berth.runtimes.kubernetes import resources
from berth.runtimes.kubernetes.api_errors import Request
from berth.runtimes.kubernetes.manifests import DEPLOYMENT_ID_ANNOTATION

pytestmark = pytest.mark.kube


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def test_deploy_every_section_creates_each_object(runtime, admin, prefix, events) -> None:
    workload = full_workload(prefix)
    started = time.monotonic()
    await runtime.deploy(DeploymentSpec(id="d1", prefix=prefix, workloads=(workload,)), events)
    elapsed = time.monotonic() - started
    print(f"deploy with every section (rollout wait off): {elapsed:.2f} s")

    ns = await asyncio.to_thread(admin.get, resources.NAMESPACE, None, prefix)
    assert ns["metadata"]["labels"]["io.berth.managed"] == "true"
    cm = await asyncio.to_thread(admin.get, resources.CONFIG_MAP, prefix, "web")
    assert cm["data"] == {"LEVEL": "2", "MODE": "prod"}
    secret = await asyncio.to_thread(admin.get, resources.SECRET, prefix, "web")
    assert secret["type"] == "Opaque" and secret["data"] == {"API_KEY": b64("s3cr3t")}
    reg = await asyncio.to_thread(admin.get, resources.SECRET, prefix, "web-reg")
    assert reg["type"] == "kubernetes.io/dockerconfigjson"
    auths = json.loads(base64.b64decode(reg["data"][".dockerconfigjson"]))["auths"]
    assert auths["127.0.0.1:5000"]["auth"] == b64("u:p4ss")

    pvc = await asyncio.to_thread(admin.get, resources.PVC, prefix, "web-data")
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]  # RO is read-write unless strict
    assert pvc["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert pvc["spec"]["storageClassName"] == "fast"
    assert (await asyncio.to_thread(admin.get, resources.PVC, prefix, "web-shared"))["spec"][
        "accessModes"
    ] == ["ReadWriteMany"]
    for absent in ("web-cache", "web-scratch", "web-creds"):
        assert (await asyncio.to_thread(admin.get_or_none, resources.PVC, prefix, absent)) is None

    svc = await asyncio.to_thread(admin.get, resources.SERVICE, prefix, "web")
    assert svc["spec"]["type"] == "LoadBalancer" and svc["spec"]["externalTrafficPolicy"] == "Local"
    assert [p["port"] for p in svc["spec"]["ports"]] == [8080, 9090, 7000, 7001, 7002]  # inclusive range
    assert svc["spec"]["ports"][0]["name"] == "tcp-8080"
    assert svc["metadata"]["labels"]["app"] == "web" and svc["metadata"]["labels"]["svc"] == "1"
    assert svc["metadata"]["annotations"] == {"lb.example/kind": "nlb", "svc-note": "x"}

    dep = await asyncio.to_thread(admin.get, resources.DEPLOYMENT, prefix, "web")
    spec = dep["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    template = spec["template"]
    assert template["metadata"]["labels"] == {"app": "web", "tier": "web"}  # app not overridable
    assert template["metadata"]["annotations"][DEPLOYMENT_ID_ANNOTATION] == "d1"
    assert template["metadata"]["annotations"]["team"] == "a"
    pod = template["spec"]
    main = pod["containers"][0]
    assert main["image"] == "127.0.0.1:5000/berth/busybox:1"
    assert main["imagePullPolicy"] == "Always"
    assert main["command"] == ["sh", "-c"] and main["args"] == ["httpd -f -p 8080"]
    assert main["envFrom"] == [{"configMapRef": {"name": "web"}}, {"secretRef": {"name": "web"}}]
    assert main["tty"] is True and main["workingDir"] == "/work"
    assert main["securityContext"] == {"runAsUser": 1000}
    assert main["resources"]["limits"] == {"memory": "256Mi"}  # cpu "0" = no CPU limit
    assert main["resources"]["requests"] == {"cpu": "20m", "memory": "64Mi"}
    assert main["startupProbe"]["httpGet"]["path"] == "/start"
    assert main["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert main["livenessProbe"]["httpGet"] == {"path": "/live", "port": 8080, "scheme": "HTTP"}
    assert {p["containerPort"] for p in main["ports"]} == {8080, 9090, 7000, 7001, 7002}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["cache"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "64Mi"}
    assert volumes["scratch"]["emptyDir"] == {"sizeLimit": "1G"}
    assert volumes["creds"]["secret"]["secretName"] == "creds"
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "web-data"}
    assert pod["imagePullSecrets"] == [{"name": "web-reg"}]
    inits = [c["name"] for c in pod["initContainers"]]
    assert inits == ["config-loader", "import", "migrate"]
    assert pod["initContainers"][0]["command"] == ["rsync", "--delete", "-a", "/cfg", "/targetconfig"]
    assert pod["initContainers"][1]["args"] == ["copy", "src", "dst"]
    assert pod["initContainers"][2]["envFrom"] == main["envFrom"]
    assert all(c["imagePullPolicy"] == "Always" for c in pod["initContainers"])

    ing = await asyncio.to_thread(admin.get, resources.INGRESS, prefix, "web")
    rule = ing["spec"]["rules"][0]
    assert rule["host"] == "app.example.test"
    path = rule["http"]["paths"][0]
    assert path["path"] == "/api/?(.*)" and path["pathType"] == "ImplementationSpecific"
    assert path["backend"]["service"] == {"name": "web", "port": {"number": 8080}}
    assert ing["spec"]["tls"] == [{"hosts": ["app.example.test"], "secretName": "web-tls"}]
    assert ing["spec"]["ingressClassName"] == "nginx"
    notes = ing["metadata"]["annotations"]
    assert notes["nginx.ingress.kubernetes.io/rewrite-target"] == "/$1"
    assert notes["nginx.ingress.kubernetes.io/proxy-body-size"] == "10m"
    assert notes["nginx.ingress.kubernetes.io/cors-allow-headers"].startswith("X-Custom, X-Forwarded-For")
    assert notes["cert-manager.io/cluster-issuer"] == "letsencrypt-prod" and notes["ing-note"] == "y"
    assert ing["metadata"]["labels"]["ing"] == "1"
    assert "Applied Deployment" in events.text() and "Applied Ingress" in events.text()
    assert [s for _, s, _ in events.instances] == [ContainerState.WAITING]


async def test_same_deployment_is_a_noop_new_id_rolls_changes_update_in_place(
    runtime, admin, prefix, events
) -> None:
    workload = full_workload(prefix)
    await runtime.deploy(DeploymentSpec(id="d1", prefix=prefix, workloads=(workload,)), events)
    first = await asyncio.to_thread(admin.get, resources.DEPLOYMENT, prefix, "web")

    def replica_sets() -> list[dict]:
        path = f"/apis/apps/v1/namespaces/{prefix}/replicasets"
        return admin.call(Request("list", resources.DEPLOYMENT, prefix), "GET", path)["items"]

    await asyncio.to_thread(wait_for_blocking, replica_sets, 20, "the controller to make a ReplicaSet")
    await runtime.deploy(DeploymentSpec(id="d1", prefix=prefix, workloads=(workload,)), events)
    again = await asyncio.to_thread(admin.get, resources.DEPLOYMENT, prefix, "web")
    assert again["metadata"]["generation"] == first["metadata"]["generation"]
    assert again["spec"]["template"] == first["spec"]["template"]
    assert "unchanged (no rollout needed)" in events.text()
    await asyncio.sleep(0.5)  # time for the controller to react, if it had anything to do
    assert len(replica_sets()) == 1  # no second ReplicaSet: no pod restart

    # a new deployment id of the same content rolls the pods (new pod template)
    await runtime.deploy(DeploymentSpec(id="d2", prefix=prefix, workloads=(workload,)), events)
    rolled = await asyncio.to_thread(admin.get, resources.DEPLOYMENT, prefix, "web")
    assert rolled["metadata"]["generation"] == first["metadata"]["generation"] + 1
    assert rolled["spec"]["template"]["metadata"]["annotations"][DEPLOYMENT_ID_ANNOTATION] == "d2"

    # a changed request updates in place and removes what it no longer produces (§17 #53)
    changed = replace(
        workload,
        ports=(),
        port_ranges=(),
        expose=ExposeStrategy.NONE,
        registry_auth=None,
        environment=frozen_map({}),
        kubernetes=replace(workload.kubernetes, health_check=None),
        volumes=workload.volumes[:1],
        secrets={"OTHER": SecretValue("v")},
    )
    await runtime.deploy(DeploymentSpec(id="d3", prefix=prefix, workloads=(changed,)), events)
    for kind, name in (
        (resources.SERVICE, "web"),
        (resources.INGRESS, "web"),
        (resources.SECRET, "web-reg"),
        (resources.CONFIG_MAP, "web"),
    ):
        assert (await asyncio.to_thread(admin.get_or_none, kind, prefix, name)) is None, (
            f"stale {kind.kind} {name} left"
        )
    assert (await asyncio.to_thread(admin.get, resources.SECRET, prefix, "web"))["data"] == {
        "OTHER": b64("v")
    }
    assert (
        await asyncio.to_thread(admin.get_or_none, resources.PVC, prefix, "web-shared")
    ) is not None  # PVCs are kept
    updated = await asyncio.to_thread(admin.get, resources.DEPLOYMENT, prefix, "web")
    main = updated["spec"]["template"]["spec"]["containers"][0]
    assert "ports" not in main and "livenessProbe" not in main
    assert main["envFrom"] == [{"secretRef": {"name": "web"}}]
    assert updated["metadata"]["uid"] == first["metadata"]["uid"]


async def test_invalid_requests_fail_before_touching_the_cluster(runtime, admin, prefix, events) -> None:
    bad = replace(
        full_workload(prefix),
        kubernetes=KubernetesOptions(resources=ResourceConfig(limits=Resources(memory="lots"))),
    )
    with pytest.raises(InvalidSpec, match=r"resourceConfig\.limits\.memory"):
        await runtime.deploy(DeploymentSpec(id="d1", prefix=prefix, workloads=(bad,)), events)
    assert (await asyncio.to_thread(admin.get_or_none, resources.NAMESPACE, None, prefix)) is None
    assert "Deployment failed" in events.text()
    # a value only the API server rejects comes back as InvalidSpec naming the field (422)
    rejected = replace(
        WorkloadSpec(id="x", prefix=prefix, name="web", image_name="busybox"),
        kubernetes=KubernetesOptions(labels=Marker(deployment=frozen_map({"bad key!": "v"}))),
    )
    with pytest.raises(InvalidSpec, match=r"Deployment\.spec\.template\.labels: Invalid value: \"bad key!\""):
        await runtime.deploy(DeploymentSpec(id="d1", prefix=prefix, workloads=(rejected,)), events)


async def test_metrics_without_the_crd_fail_the_deploy(runtime, prefix, events) -> None:
    from berth.model import Metrics

    workload = replace(
        WorkloadSpec(id="m", prefix=prefix, name="m", image_name="busybox", ports=(Port(80),)),
        kubernetes=KubernetesOptions(metrics=Metrics(port=80, path="/m")),
    )
    with pytest.raises(PermanentCommandError, match="ServiceMonitor CRD"):
        await runtime.deploy(DeploymentSpec(id="d1", prefix=prefix, workloads=(workload,)), events)


async def test_rollout_wait_fails_with_the_pod_reason(make_runtime, admin, prefix, events) -> None:
    rt = make_runtime(wait_for_rollout=True, rollout_timeout_s=4.0)
    workload = WorkloadSpec(id="wl-1", prefix=prefix, name="stuck", image_name="busybox", tag="1")

    async def pull_fails() -> None:
        pods = await asyncio.to_thread(lambda: wait_pods(admin, prefix, "stuck"))
        pod = pods[0]
        pod["status"] = {
            "phase": "Pending",
            "containerStatuses": [
                {
                    "name": "stuck",
                    "image": "docker.io/library/busybox:1",
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"waiting": {"reason": "ImagePullBackOff", "message": "pull failed"}},
                }
            ],
        }
        await asyncio.to_thread(patch_pod_status, admin, pod)

    patcher = asyncio.create_task(pull_fails(), name="patch-pod-status")
    with pytest.raises(PermanentCommandError, match="ImagePullBackOff") as failure:
        await rt.deploy(DeploymentSpec(id="d1", prefix=prefix, workloads=(workload,)), events)
    await patcher
    assert "did not complete within 4 s" in str(failure.value)
    assert (workload.id, ContainerState.WAITING, "ImagePullBackOff") in events.instances
    assert "Deployment failed: rollout did not complete" in events.text()


async def test_rollout_wait_succeeds_when_the_pod_becomes_ready(make_runtime, admin, prefix, events) -> None:
    rt = make_runtime(wait_for_rollout=True, rollout_timeout_s=30.0)
    workload = WorkloadSpec(id="wl-ok", prefix=prefix, name="ok", image_name="busybox", tag="1")

    async def becomes_ready() -> None:
        pods = await asyncio.to_thread(lambda: wait_pods(admin, prefix, "ok"))
        await asyncio.to_thread(patch_pod_status, admin, running_pod(pods[0], "ok"))

    patcher = asyncio.create_task(becomes_ready(), name="patch-pod-ready")
    await rt.deploy(DeploymentSpec(id="d1", prefix=prefix, workloads=(workload,)), events)
    await patcher
    assert (workload.id, ContainerState.RUNNING, "rollout complete") in events.instances
    assert events.progress_calls[-1] == (workload.id, "rolled out", 1.0)
