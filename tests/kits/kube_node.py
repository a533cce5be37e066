"""Playing the node where there is no kubelet: the controllers make pods that stay Pending, so a
test binds a pod to a registered node, writes the status a kubelet would (running), and serves
the pod's log lines through ``FakeKubelet`` for the API server to proxy (``pods/log``)."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator

from waiting import wait_for_blocking

from berth.runtimes.kubernetes import resources
from berth.runtimes.kubernetes.api import KubeApi
from berth.runtimes.kubernetes.api_errors import Request
from kits.fake_kubelet import FakeKubelet


def wait_pods(admin, prefix: str, name: str) -> list[dict]:
    """Blocking (call it in a thread): the pods the controllers made for a workload."""
    return wait_for_blocking(
        lambda: admin.list(resources.POD, prefix, label_selector=f"app={name}").get("items"),
        20,
        f"the controllers to create a pod of {name}",
        interval_s=0.2,
    )


def patch_pod_status(admin, pod: dict) -> None:
    meta = pod["metadata"]
    admin.call(
        Request("patch", resources.POD, meta["namespace"], meta["name"]),
        "PATCH",
        resources.POD.path(meta["namespace"], meta["name"], "status"),
        body={"status": pod["status"]},
        content_type="application/merge-patch+json",
    )


def running_pod(pod: dict, container: str) -> dict:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    pod["status"] = {
        "phase": "Running",
        "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
        ],
        "containerStatuses": [
            {
                "name": container,
                "image": "docker.io/library/busybox:1",
                "imageID": "docker-pullable://busybox@sha256:" + "0" * 64,
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}},
            }
        ],
    }
    return pod


@contextlib.contextmanager
def registered_node(admin: KubeApi, kubelet: FakeKubelet) -> Iterator[str]:
    """A Node whose kubelet endpoint is ``kubelet`` (deleted on exit): pods bound to it have logs."""
    name = f"bt-node-{secrets.token_hex(3)}"
    path = f"/api/v1/nodes/{name}"
    request = Request("create", resources.NAMESPACE, None, name)
    admin.call(
        request, "POST", "/api/v1/nodes", body={"metadata": {"name": name}}, content_type="application/json"
    )
    status = {
        "status": {
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet.port}},
        }
    }
    admin.call(request, "PATCH", f"{path}/status", body=status, content_type="application/merge-patch+json")
    yield name
    admin.call(request, "DELETE", path)


def start_on_node(admin: KubeApi, prefix: str, app: str, node: str, *, skip: set[str] = frozenset()) -> str:
    pods = wait_for_blocking(
        lambda: [p for p in wait_pods(admin, prefix, app) if p["metadata"]["name"] not in skip],
        20,
        f"a new pod of {app} (besides {sorted(skip)})",
        interval_s=0.2,
    )
    pod = pods[0]
    name = pod["metadata"]["name"]
    admin.call(
        Request("create", resources.POD, prefix, name),
        "POST",
        resources.POD.path(prefix, name, "binding"),
        body={
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name},
            "target": {"kind": "Node", "name": node},
        },
        content_type="application/json",
    )
    patch_pod_status(admin, running_pod(admin.get(resources.POD, prefix, name), app))
    return name


def finish_deletion(admin: KubeApi, prefix: str, pod: str) -> None:
    """What a kubelet does once the pod's containers stopped: remove the pod for good (a pod
    bound to a node otherwise stays Terminating)."""
    admin.call(
        Request("delete", resources.POD, prefix, pod),
        "DELETE",
        resources.POD.path(prefix, pod),
        query=[("gracePeriodSeconds", "0")],
    )
