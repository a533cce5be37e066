"""Deployment history: a success makes the earlier successful deployments of its node and prefix
obsolete; a node lists its deployments; an earlier one is redeployed as a new one (the rollback
path); two deployments compare by instances, images and configuration, secrets by key only."""

from __future__ import annotations

import json
from typing import Any

from kits.platform_fake_agent import FakeAgent
from kits.platform_harness import Harness
from kits.platform_responder import Responder
from waiting import wait_event, wait_for

from berth.proto import agent_pb2, common_pb2


def _stack(node_id: str, prefix: str, tag: str, mode: str, secret: str) -> dict[str, Any]:
    return {
        "nodeId": node_id,
        "prefix": prefix,
        "secrets": {"SHARED": secret},
        "instances": [
            {
                "image": "berth/busybox",
                "tag": tag,
                "config": {"common": {"name": "web", "environment": {"MODE": mode}}},
            },
            {"image": "berth/busybox", "tag": "1", "config": {"common": {"name": "worker"}}},
        ],
    }


async def _succeed(agent: FakeAgent, request: agent_pb2.DeployRequest) -> None:
    messages = [
        common_pb2.DeploymentStatusMessage(
            instance=common_pb2.InstanceDeploymentItem(instanceId=w.id, state=common_pb2.RUNNING)
        )
        for w in request.requests
    ]
    messages.append(common_pb2.DeploymentStatusMessage(deploymentStatus=common_pb2.SUCCESSFUL))
    await agent.send_deploy_status(request.id, messages)


async def _status(platform: Harness, deployment_id: str) -> str:
    return str((await platform.api.get(f"/deployments/{deployment_id}")).json()["status"])


async def _until(platform: Harness, deployment_id: str, status: str) -> None:
    async def reached() -> bool:
        return await _status(platform, deployment_id) == status

    await wait_for(reached, 5, f"{deployment_id} to become {status}")


async def test_history_obsolete_redeploy_and_diff(platform: Harness) -> None:
    node_id = await platform.create_node()
    agent = FakeAgent(platform.grpc_address, await platform.install_token(node_id), node_id)
    await agent.install()
    try:
        async with Responder(agent, "shop", []) as responder:

            async def deploy(payload: dict[str, Any]) -> str:
                created = await platform.api.post("/deployments", json=payload)
                assert created.status_code == 201, created.text
                deployment_id = str(created.json()["id"])
                assert (await platform.api.post(f"/deployments/{deployment_id}/start")).status_code == 204
                await _succeed(
                    agent, await wait_event(responder.deploys.get(), 5, "the next deploy at the agent")
                )
                await _until(platform, deployment_id, "successful")
                return deployment_id

            first = await deploy(_stack(node_id, "shop", "1", "one", "first-secret"))
            other_prefix = await deploy(_stack(node_id, "blog", "1", "one", "blog-secret"))
            broken = (
                await platform.api.post("/deployments", json=_stack(node_id, "shop", "9", "x", "y"))
            ).json()
            assert (await platform.api.post(f"/deployments/{broken['id']}/start")).status_code == 204
            request = await wait_event(responder.deploys.get(), 5, "the next deploy at the agent")
            await agent.send_deploy_status(
                request.id, [common_pb2.DeploymentStatusMessage(deploymentStatus=common_pb2.FAILED)]
            )
            await _until(platform, broken["id"], "failed")
            assert await _status(platform, first) == "successful"  # a failure supersedes nothing
            draft = (
                await platform.api.post("/deployments", json=_stack(node_id, "shop", "3", "x", "z"))
            ).json()
            second = await deploy(_stack(node_id, "shop", "2", "two", "second-secret"))

            assert await _status(platform, first) == "obsolete"
            assert await _status(platform, broken["id"]) == "obsolete"
            assert await _status(platform, draft["id"]) == "preparing"
            assert await _status(platform, other_prefix) == "successful"  # another prefix is left alone
            events = (await platform.api.get(f"/deployments/{first}/log")).json()["items"]
            assert any(f"Superseded by deployment {second}" in " ".join(e.get("log", [])) for e in events)

            listed = (await platform.api.get(f"/nodes/{node_id}/deployments")).json()
            assert [d["id"] for d in listed] == [first, other_prefix, broken["id"], draft["id"], second]
            assert (await platform.api.get("/nodes/unknown/deployments")).status_code == 404

            diff = await platform.api.get(f"/deployments/{first}/diff/{second}")
            assert diff.status_code == 200
            body = diff.json()
            assert body["added"] == [] and body["removed"] == [] and body["unchanged"] == ["worker"]
            [web] = body["changed"]
            assert web["name"] == "web"
            assert {"path": "tag", "before": "1", "after": "2"} in web["changes"]
            assert {"path": "common.environment.MODE", "before": "one", "after": "two"} in web["changes"]
            assert body["secrets"] == {"added": [], "removed": [], "changed": ["SHARED"]}
            assert "first-secret" not in diff.text and "second-secret" not in diff.text
            assert (await platform.api.get(f"/deployments/{first}/diff/nope")).status_code == 404

            # rollback: the first deployment, again, as a new one; the second becomes obsolete
            redeployed = await platform.api.post(f"/deployments/{first}/redeploy")
            assert redeployed.status_code == 201, redeployed.text
            rollback = redeployed.json()
            assert rollback["id"] not in (first, second) and rollback["status"] == "in_progress"
            assert rollback["note"] == f"Redeploy of {first}"
            request = await wait_event(responder.deploys.get(), 5, "the next deploy at the agent")
            assert request.id == rollback["id"]
            assert [w.tag for w in request.requests] == ["1", "1"]  # the rollback's own request
            assert request.requests[0].common.environment["MODE"] == "one"
            assert agent.decrypt(request.secrets["SHARED"]) == "first-secret"
            await _succeed(agent, request)
            await _until(platform, rollback["id"], "successful")
            assert await _status(platform, second) == "obsolete"
            assert await _status(platform, first) == "obsolete"

            copied = await platform.api.post(f"/deployments/{second}/copy")
            assert copied.status_code == 201 and copied.json()["status"] == "preparing"
            assert [i["image"]["tag"] for i in copied.json()["instances"]] == ["2", "1"]
    finally:
        await agent.close()

    # a node that is not connected: the redeploy is refused and leaves nothing behind
    async def disconnected() -> bool:
        return bool((await platform.api.get(f"/nodes/{node_id}")).json()["status"] != "connected")

    await wait_for(disconnected, 5, "the closed agent's node is no longer connected")
    before = len((await platform.api.get("/deployments")).json())
    refused = await platform.api.post(f"/deployments/{first}/redeploy")
    assert refused.status_code == 409, refused.text
    assert len((await platform.api.get("/deployments")).json()) == before
    assert json.loads(refused.text)["message"] == "The node is not connected"
