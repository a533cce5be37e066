"""``berth ctl`` against a real platform (the CLI runs its own loop in a worker thread)."""

from __future__ import annotations

import asyncio
import io
import json

import pytest
from kits.platform_fake_agent import FakeAgent
from kits.platform_harness import Harness
from kits.platform_responder import Responder
from waiting import wait_event, wait_for

from berth.ctl.cli import main as ctl_main
from berth.proto import common_pb2


async def test_nodes_add_and_list(platform: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--url", platform.started.http_url, "--data-dir", str(platform.data_dir)]
    assert await asyncio.to_thread(ctl_main, [*base, "nodes", "add", "edge-1"]) == 0
    added = capsys.readouterr().out
    assert "install command" in added and "/script' | sh -" in added
    assert await asyncio.to_thread(ctl_main, [*base, "nodes", "list"]) == 0
    listed = capsys.readouterr().out
    assert "edge-1" in listed and "unreachable" in listed
    assert await asyncio.to_thread(ctl_main, [*base, "containers", "list", "edge-1"]) == 1
    assert "HTTP 409" in capsys.readouterr().err
    wrong = ["--url", platform.started.http_url, "--token", "wrong"]
    assert await asyncio.to_thread(ctl_main, [*wrong, "nodes", "list"]) == 1
    assert "HTTP 401" in capsys.readouterr().err


async def test_ctl_covers_registries_deployments_and_nodes(
    platform: Harness, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    base = ["--url", platform.started.http_url, "--data-dir", str(platform.data_dir)]

    async def ctl(*args: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(ctl_main, [*base, *args])
        out, err = capsys.readouterr()
        return code, out, err

    monkeypatch.setattr("sys.stdin", io.StringIO("hunter2\n"))
    code, out, _ = await ctl(
        "registries", "add", "local", "127.0.0.1:5000", "--user", "berth", "--password-stdin"
    )
    assert code == 0 and out.startswith("registry local (")
    code, out, _ = await ctl("registries", "list")
    assert code == 0 and "local" in out and "set" in out and "hunter2" not in out
    code, out, _ = await ctl("--json", "registries", "list")
    assert json.loads(out)[0]["hasPassword"] is True

    node_id = await platform.create_node("edge-2")
    agent = FakeAgent(platform.grpc_address, await platform.install_token(node_id), node_id)
    await agent.install()
    try:
        async with Responder(agent, "app", ["web"]) as responder:

            async def answer_next_deploy(tag: str) -> None:
                request = await wait_event(responder.deploys.get(), 10, "the next deploy at the agent")
                assert [w.tag for w in request.requests] == [tag]
                await agent.send_deploy_status(
                    request.id,
                    [
                        common_pb2.DeploymentStatusMessage(
                            instance=common_pb2.InstanceDeploymentItem(
                                instanceId=request.requests[0].id, state=common_pb2.RUNNING
                            ),
                            log=["Started container: app-web"],
                        ),
                        common_pb2.DeploymentStatusMessage(deploymentStatus=common_pb2.SUCCESSFUL),
                    ],
                )

            ids = []
            for tag in ("1", "2"):
                stack = {
                    "nodeId": node_id,
                    "prefix": "app",
                    "instances": [
                        {"image": "berth/busybox", "tag": tag, "config": {"common": {"name": "web"}}}
                    ],
                }
                created = (await platform.api.post("/deployments", json=stack)).json()
                ids.append(created["id"])
                answering = asyncio.create_task(answer_next_deploy(tag), name="test-answer-deploy")
                code, _, err = await ctl("deployments", "start", created["id"][:8])
                assert code == 0, err
                await answering

            async def second_successful() -> bool:
                return bool(
                    (await platform.api.get(f"/deployments/{ids[1]}")).json()["status"] == "successful"
                )

            await wait_for(second_successful, 5, "the second deployment to end successful")

            code, out, _ = await ctl("deployments", "list")
            assert code == 0 and "obsolete" in out and "successful" in out and "web:2" in out
            code, out, _ = await ctl("--json", "nodes", "deployments", "edge-2")
            assert [d["status"] for d in json.loads(out)] == ["obsolete", "successful"]
            code, out, _ = await ctl("deployments", "show", ids[1])
            assert code == 0 and "Started container: app-web" in out and "deployment successful" in out
            code, out, _ = await ctl("deployments", "diff", ids[0], ids[1])
            assert code == 0 and "~ instance web" in out and "tag: '1' -> '2'" in out

            # the rollback, followed to its end
            answering = asyncio.create_task(answer_next_deploy("1"), name="test-answer-redeploy")
            code, out, err = await ctl("deployments", "redeploy", ids[0])
            await answering
            assert code == 0, err
            assert f"a copy of {ids[0]}" in out and out.rstrip().endswith("deployment successful")

            code, out, _ = await ctl("inspect", "edge-2", "app", "web")
            assert code == 0 and json.loads(out)["Name"] == "/app-web"
            code, _, err = await ctl("inspect", "edge-2", "app", "ghost")
            assert code == 1 and "container not found" in err
            code, out, _ = await ctl("--json", "containers", "list", "edge-2", "--prefix", "app")
            assert [c["id"]["name"] for c in json.loads(out)] == ["web"]

            code, out, _ = await ctl("--json", "nodes", "show", "edge-2")
            assert json.loads(out)["status"] == "connected"
            code, out, _ = await ctl("nodes", "kick", "edge-2")
            assert code == 0 and "agent disconnected" in out
    finally:
        await agent.close()

    code, _, err = await ctl("deployments", "show", "ffffffff")
    assert code == 1 and "no deployment with id" in err
    code, _, err = await ctl("nodes", "revoke", "nope")
    assert code == 1 and "no node named" in err
    code, out, _ = await ctl("nodes", "revoke", "edge-2")
    assert code == 0 and "token revoked" in out
    code, out, _ = await ctl("registries", "delete", "local")
    assert code == 0
    code, out, _ = await ctl("nodes", "delete", "edge-2")
    assert code == 0 and "node deleted" in out
    code, out, _ = await ctl("--json", "nodes", "list")
    assert json.loads(out) == []
