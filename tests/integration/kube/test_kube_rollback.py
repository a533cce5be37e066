"""A failed rollout is rolled back to the previous ReplicaSet's template (real API server and
controller manager; pod status is written through the API, there is no kubelet)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from kits.kube_node import patch_pod_status, running_pod, wait_pods
from waiting import wait_for

from berth.errors import PermanentCommandError
from berth.model import ContainerState, DeploymentSpec, LogLevel, WorkloadSpec
from berth.runtimes.kubernetes import resources

pytestmark = pytest.mark.kube


def image_of(admin, prefix: str, name: str) -> str:
    dep = admin.get(resources.DEPLOYMENT, prefix, name)
    return str(dep["spec"]["template"]["spec"]["containers"][0]["image"])


async def pods_of_image(admin, prefix: str, name: str, image: str) -> list[dict]:
    async def matching() -> list[dict]:
        pods = await asyncio.to_thread(lambda: wait_pods(admin, prefix, name))
        return [p for p in pods if p["spec"]["containers"][0]["image"] == image]

    return await wait_for(matching, 20, f"a pod of {name} with {image}", interval_s=0.2)


async def test_failed_rollout_goes_back_to_the_previous_template(make_runtime, admin, prefix, events) -> None:
    rt = make_runtime(wait_for_rollout=True, rollout_timeout_s=3.0)
    first = WorkloadSpec(id="wl-web", prefix=prefix, name="web", image_name="busybox", tag="1")
    v1 = "docker.io/library/busybox:1"

    async def ready(image: str) -> None:
        pod = (await pods_of_image(admin, prefix, "web", image))[0]
        await asyncio.to_thread(patch_pod_status, admin, running_pod(pod, "web"))

    becomes_ready = asyncio.create_task(ready(v1), name="v1-ready")
    await rt.deploy(DeploymentSpec(id="d1", prefix=prefix, workloads=(first,)), events)
    await becomes_ready

    second = replace(first, tag="2")
    v2 = "docker.io/library/busybox:2"

    async def pull_fails() -> None:
        pod = (await pods_of_image(admin, prefix, "web", v2))[0]
        pod["status"] = {
            "phase": "Pending",
            "containerStatuses": [
                {
                    "name": "web",
                    "image": v2,
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"waiting": {"reason": "ImagePullBackOff", "message": "pull failed"}},
                }
            ],
        }
        await asyncio.to_thread(patch_pod_status, admin, pod)

    failing = asyncio.create_task(pull_fails(), name="v2-pull-fails")
    with pytest.raises(PermanentCommandError, match="ImagePullBackOff"):
        await rt.deploy(DeploymentSpec(id="d2", prefix=prefix, workloads=(second,)), events)
    await failing

    assert image_of(admin, prefix, "web") == v1
    assert (second.id, ContainerState.WAITING, "ImagePullBackOff") in events.instances
    rolled = [line for level, line in events.logs if level is LogLevel.WARNING and "Rolled back" in line]
    assert rolled and f"Rolled back {prefix}/web to revision 1" in rolled[0] and v1 in rolled[0]
    dep = admin.get(resources.DEPLOYMENT, prefix, "web")
    assert "pod-template-hash" not in dep["spec"]["template"]["metadata"].get("labels", {})


async def test_a_failed_first_deploy_has_nothing_to_roll_back(make_runtime, admin, prefix, events) -> None:
    rt = make_runtime(wait_for_rollout=True, rollout_timeout_s=1.0)
    workload = WorkloadSpec(id="wl-new", prefix=prefix, name="new", image_name="busybox", tag="1")
    with pytest.raises(PermanentCommandError, match="did not complete within 1 s"):
        await rt.deploy(DeploymentSpec(id="d1", prefix=prefix, workloads=(workload,)), events)
    assert "Rolled back" not in events.text()
    assert image_of(admin, prefix, "new") == "docker.io/library/busybox:1"
