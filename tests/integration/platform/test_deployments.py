"""Registries, deployments and their event log through the API; the agent side is a fake."""

from __future__ import annotations

import json

import websockets
from kits.platform_fake_agent import FakeAgent
from kits.platform_harness import Harness
from kits.platform_responder import Responder
from waiting import wait_event, wait_for

from berth.platform.app import PlatformServer
from berth.platform.secrets import SecretBox
from berth.platform.store import Store
from berth.proto import common_pb2

STACK = {
    "prefix": "shop",
    "secrets": {"SHARED": "shared-value"},
    "instances": [
        {
            "image": "berth/busybox",
            "tag": "1",
            "config": {
                "common": {
                    "name": "web",
                    "environment": {"MODE": "demo"},
                    "secrets": {"DB_PASSWORD": "s3cret"},
                    "args": ["httpd", "-f", "-p", "8080"],
                    "ports": [{"internal": 8080, "external": 0}],
                },
                "dagent": {"restartPolicy": "UNLESS_STOPPED", "labels": {"io.berth.test": "1"}},
            },
        }
    ],
}


async def test_registry_password_is_write_only(platform: Harness) -> None:
    created = await platform.api.post(
        "/registries", json={"name": "local", "url": "127.0.0.1:5000", "user": "berth", "password": "pw"}
    )
    assert created.status_code == 201 and "password" not in created.json()
    assert created.json()["hasPassword"] is True
    registry_id = created.json()["id"]
    bad = await platform.api.post("/registries", json={"name": "x", "url": "h:1", "user": "only-user"})
    assert bad.status_code == 400 and bad.json()["property"] == "password"
    listed = await platform.api.get("/registries")
    assert all("password" not in r for r in listed.json())
    assert (await platform.api.delete(f"/registries/{registry_id}")).status_code == 204
    assert (await platform.api.get(f"/registries/{registry_id}")).status_code == 404


async def test_invalid_payloads_name_the_field(platform: Harness) -> None:
    node_id = await platform.create_node()
    cases = [
        ({}, "nodeId"),
        ({"nodeId": node_id}, "prefix"),
        ({"nodeId": node_id, "prefix": "Bad_Prefix"}, "prefix"),
        ({"nodeId": node_id, "prefix": "ok", "instances": []}, "instances"),
        ({"nodeId": node_id, "prefix": "ok", "instances": [{"tag": "1"}]}, "instances[0].image"),
        (
            {
                "nodeId": node_id,
                "prefix": "ok",
                "instances": [{"image": "i", "config": {"common": {"ports": "x"}}}],
            },
            "instances[0].config.common",
        ),
        (
            {"nodeId": node_id, "prefix": "ok", "instances": [{"image": "i", "registryId": "nope"}]},
            "instances[0].registryId",
        ),
        ({"nodeId": "unknown", "prefix": "ok", "instances": [{"image": "i"}]}, "nodeId"),
    ]
    for payload, field in cases:
        response = await platform.api.post("/deployments", json=payload)
        assert response.status_code == 400, (payload, response.text)
        assert response.json()["property"] == field, response.json()
    assert (await platform.api.post("/nodes", content=b"[1]")).status_code == 400
    assert (await platform.api.get("/deployments/nope")).status_code == 404
    assert (await platform.api.get("/nodes", headers={"authorization": ""})).status_code == 401


async def test_deployment_lifecycle_and_restart(platform: Harness) -> None:
    node_id = await platform.create_node()
    registry = await platform.api.post(
        "/registries", json={"name": "local", "url": "127.0.0.1:5000", "user": "berth", "password": "pw"}
    )
    stack = json.loads(json.dumps(STACK))
    stack["nodeId"] = node_id
    stack["instances"][0]["registryId"] = registry.json()["id"]
    created = await platform.api.post("/deployments", json=stack)
    assert created.status_code == 201, created.text
    deployment = created.json()
    deployment_id, instance_id = deployment["id"], deployment["instances"][0]["id"]
    assert deployment["instances"][0]["config"]["common"]["secrets"] == {"DB_PASSWORD": ""}

    patched = await platform.api.patch(
        f"/deployments/{deployment_id}/instances/{instance_id}",
        json={"config": {"common": {"environment": {"MODE": "patched"}}}},
    )
    assert patched.status_code == 200 and patched.json()["config"]["common"]["environment"] == {
        "MODE": "patched"
    }
    assert (await platform.api.post(f"/deployments/{deployment_id}/start")).status_code == 409

    agent = FakeAgent(platform.grpc_address, await platform.install_token(node_id), node_id)
    connection_token = await agent.install()
    headers = {"authorization": f"Bearer {platform.started.api_token}"}
    ws_url = (
        platform.started.http_url.replace("http", "ws", 1)
        + f"/api/default/ws/deployments/{deployment_id}/events"
    )
    try:
        async with (
            Responder(agent, "shop", []) as responder,
            websockets.connect(ws_url, additional_headers=headers) as ws,
        ):
            assert json.loads(await wait_event(ws.recv(), 5, "the next websocket message")) == {
                "type": "snapshot",
                "status": "preparing",
            }
            assert (await platform.api.post(f"/deployments/{deployment_id}/start")).status_code == 204
            request = await wait_event(responder.deploys.get(), 5, "the next deploy at the agent")
            assert request.id == deployment_id and request.prefix == "shop"
            workload = request.requests[0]
            assert (
                workload.id == instance_id and workload.imageName == "berth/busybox" and workload.tag == "1"
            )
            assert workload.registry == "127.0.0.1:5000" and workload.registryAuth.user == "berth"
            assert workload.common.environment["MODE"] == "patched"
            assert workload.dagent.labels["io.berth.test"] == "1"
            secrets = dict(workload.common.secrets)
            assert set(secrets) == {"DB_PASSWORD", "SHARED"}
            assert "s3cret" not in secrets["DB_PASSWORD"] and secrets["DB_PASSWORD"].startswith(
                "-----BEGIN PGP"
            )
            assert agent.decrypt(secrets["DB_PASSWORD"]) == "s3cret"
            assert agent.decrypt(request.secrets["SHARED"]) == "shared-value"

            await agent.send_deploy_status(
                deployment_id,
                [
                    common_pb2.DeploymentStatusMessage(
                        deploymentStatus=common_pb2.IN_PROGRESS, log=["Started."], logLevel=common_pb2.INFO
                    ),
                    common_pb2.DeploymentStatusMessage(
                        containerProgress=common_pb2.DeployContainerProgress(
                            instanceId=instance_id, status="Pulling", progress=1.5
                        )
                    ),
                    common_pb2.DeploymentStatusMessage(
                        instance=common_pb2.InstanceDeploymentItem(
                            instanceId=instance_id, state=common_pb2.RUNNING, reason="running"
                        ),
                        log=["Started container: shop-web"],
                    ),
                    common_pb2.DeploymentStatusMessage(deploymentStatus=common_pb2.SUCCESSFUL),
                ],
            )
            live: list[dict[str, object]] = []
            while not any(e.get("type") == "end" for e in live):
                live.append(json.loads(await wait_event(ws.recv(), 5, "the next websocket message")))
            assert {
                "type": "progress",
                "instanceId": instance_id,
                "status": "Pulling",
                "progress": 1.0,
            } in live
            assert live[-1] == {"type": "end", "status": "successful"}
    finally:
        await agent.close()

    got = (await platform.api.get(f"/deployments/{deployment_id}")).json()
    assert got["status"] == "successful" and got["instances"][0]["state"] == "running"
    events = (await platform.api.get(f"/deployments/{deployment_id}/log")).json()["items"]
    kinds = [e["type"] for e in events]
    assert "progress" not in kinds and kinds.count("containerState") == 1
    assert events[-1]["deploymentStatus"] == "successful"

    # restart: nothing lost, the agent reconnects with its connection token
    await platform.server.stop()
    platform.server = PlatformServer(platform.started.config)
    platform.started = await platform.server.start()
    again = await platform.api.get(f"/deployments/{deployment_id}/log")
    assert again.json()["items"] == events
    assert (await platform.api.get("/registries")).json()[0]["name"] == "local"
    agent = FakeAgent(platform.grpc_address, connection_token, node_id)
    try:
        await agent.connect()

        async def connected() -> bool:
            return bool((await platform.api.get(f"/nodes/{node_id}")).json()["status"] == "connected")

        await wait_for(connected, 5, "the agent to reconnect after the restart")
    finally:
        await agent.close()


async def test_a_deployment_cut_off_by_a_platform_crash_is_failed_at_start(platform: Harness) -> None:
    """A killed platform never saw the status stream end (no disconnect hook ran): at the next
    start the deployment is recorded as failed with the reason, not left in progress."""
    node_id = await platform.create_node()
    stack = json.loads(json.dumps(STACK))
    stack["nodeId"] = node_id
    stack["instances"][0].pop("registryId", None)
    created = await platform.api.post("/deployments", json=stack)
    assert created.status_code == 201, created.text
    deployment_id = created.json()["id"]
    await platform.server.stop()

    box = SecretBox.load_or_create(platform.data_dir)
    store = await Store.open(platform.data_dir / "platform.db", box)
    try:
        assert await store.deployments.get(deployment_id) is not None
        await store.deployments.set_status(deployment_id, "in_progress")  # what a crash leaves behind
    finally:
        await store.close()

    platform.server = PlatformServer(platform.started.config)
    platform.started = await platform.server.start()
    got = (await platform.api.get(f"/deployments/{deployment_id}")).json()
    assert got["status"] == "failed"
    events = (await platform.api.get(f"/deployments/{deployment_id}/log")).json()["items"]
    assert any("platform restarted" in " ".join(e.get("log", [])) for e in events)
