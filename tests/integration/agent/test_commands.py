"""Every command variant reaches its handler; every answer carries the right metadata."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

from fakeplatform import Harness, eventually
from waiting import wait_event

from berth.model import ContainerRef, ContainerState
from berth.proto import agent_pb2, common_pb2


def _cmd(**kwargs: object) -> agent_pb2.AgentCommand:
    return agent_pb2.AgentCommand(**kwargs)  # type: ignore[arg-type]


def _container(prefix: str, name: str) -> common_pb2.ContainerIdentifier:
    return common_pb2.ContainerIdentifier(prefix=prefix, name=name)


def _workload(workload_id: str, name: str, secrets: dict[str, str] | None = None, image: str = "busybox"):  # type: ignore[no-untyped-def]
    return agent_pb2.DeployWorkloadRequest(
        id=workload_id,
        imageName=image,
        tag="1",
        common=agent_pb2.CommonContainerConfig(name=name, environment={"A": "1"}, secrets=secrets or {}),
    )


def gpg_encrypt(public_key: str, plaintext: str, home: Path) -> str:
    """Encrypt with GnuPG (another OpenPGP implementation) to the agent's armored public key."""
    home.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "GNUPGHOME": str(home)}
    subprocess.run(["gpg", "--batch", "--quiet", "--import"], input=public_key.encode(), env=env, check=True)
    result = subprocess.run(
        [
            "gpg",
            "--batch",
            "--quiet",
            "--trust-model",
            "always",
            "--armor",
            "--encrypt",
            "-r",
            "hello@dyrector.io",
        ],
        input=plaintext.encode(),
        env=env,
        check=True,
        capture_output=True,
    )
    return result.stdout.decode()


# -- deploy ------------------------------------------------------------------------------------------


async def test_deploy_decrypts_gnupg_secret_and_reports_in_order(harness: Harness, tmp_path: Path) -> None:
    key = harness.running.agent.key
    assert key is not None
    cipher = await asyncio.to_thread(gpg_encrypt, key.public_key, "s3cr3t-välue", tmp_path / "gnupg")
    await harness.platform.send(
        _cmd(
            deploy=agent_pb2.DeployRequest(
                id="dep-1",
                prefix="p",
                requests=[_workload("w1", "web", {"DB_PASSWORD": cipher, "EMPTY": ""})],
            )
        )
    )
    stream = await harness.platform.wait_stream("DeploymentStatus")
    await wait_event(stream.done.wait(), 5, "the stream to finish")
    assert stream.metadata["dyo-deployment-id"] == "dep-1"
    first, last = stream.messages[0], stream.messages[-1]
    assert first.deploymentStatus == common_pb2.IN_PROGRESS
    assert list(first.log) == ["Started."]
    assert last.deploymentStatus == common_pb2.SUCCESSFUL
    assert last.logLevel == common_pb2.INFO
    assert stream.half_closed_by_agent
    statuses = [m for m in stream.messages if m.WhichOneof("data") == "deploymentStatus"]
    assert len(statuses) == 2
    instances = [m.instance for m in stream.messages if m.WhichOneof("data") == "instance"]
    assert instances[-1].instanceId == "w1"
    assert instances[-1].state == common_pb2.RUNNING
    progress = [m.containerProgress for m in stream.messages if m.WhichOneof("data") == "containerProgress"]
    assert progress and all(0.0 <= p.progress <= 1.0 for p in progress)
    workload = harness.runtime.deployments[0].workloads[0]
    assert workload.secrets == {"DB_PASSWORD": "s3cr3t-välue", "EMPTY": ""}
    assert "s3cr3t" not in repr(workload.secrets["DB_PASSWORD"])


async def test_deploy_with_undecryptable_secret_fails_naming_the_key(harness: Harness) -> None:
    bogus = "-----BEGIN PGP MESSAGE-----\n\nhF4DAAAAAAAAAAASAQdA\n=AAAA\n-----END PGP MESSAGE-----\n"
    await harness.platform.send(
        _cmd(
            deploy=agent_pb2.DeployRequest(
                id="dep-2", prefix="p", requests=[_workload("w1", "web", {"API_KEY": bogus})]
            )
        )
    )
    stream = await harness.platform.wait_stream("DeploymentStatus")
    await wait_event(stream.done.wait(), 5, "the stream to finish")
    last = stream.messages[-1]
    assert last.deploymentStatus == common_pb2.FAILED
    assert last.logLevel == common_pb2.ERROR
    assert "API_KEY" in " ".join(last.log)
    assert harness.runtime.deployments == []
    assert stream.half_closed_by_agent


async def test_deploy_without_workloads_ends_successful(harness: Harness) -> None:
    await harness.platform.send(_cmd(deploy=agent_pb2.DeployRequest(id="dep-3", prefix="p")))
    stream = await harness.platform.wait_stream("DeploymentStatus")
    await wait_event(stream.done.wait(), 5, "the stream to finish")
    assert [m.deploymentStatus for m in stream.messages] == [common_pb2.IN_PROGRESS, common_pb2.SUCCESSFUL]
    assert stream.half_closed_by_agent


async def test_deploy_failure_stops_at_first_workload(harness: Harness) -> None:
    harness.runtime.fail_images.add("broken")
    await harness.platform.send(
        _cmd(
            deploy=agent_pb2.DeployRequest(
                id="dep-4",
                prefix="p",
                requests=[_workload("w1", "web", image="broken"), _workload("w2", "db")],
            )
        )
    )
    stream = await harness.platform.wait_stream("DeploymentStatus")
    await wait_event(stream.done.wait(), 5, "the stream to finish")
    assert stream.messages[-1].deploymentStatus == common_pb2.FAILED
    assert "p-db" not in harness.runtime.containers
    failed = [
        m for m in stream.messages if m.WhichOneof("data") == "instance" and m.logLevel == common_pb2.ERROR
    ]
    assert failed and failed[0].instance.instanceId == "w1"


async def test_deploy_completed_early_by_platform_stops_sending(harness: Harness) -> None:
    harness.platform.complete_deployments_early = True
    harness.runtime.deploy_delay_s = 0.2
    await harness.platform.send(
        _cmd(deploy=agent_pb2.DeployRequest(id="unknown", prefix="p", requests=[_workload("w1", "web")]))
    )
    stream = await harness.platform.wait_stream("DeploymentStatus")
    assert stream.completed_by_platform
    await eventually(lambda: harness.running.agent.metrics.count("deploy", "successful"))
    # The session is alive: the next command is served.
    await harness.platform.send(
        _cmd(listSecrets=agent_pb2.ListSecretsRequest(target=common_pb2.ContainerOrPrefix(prefix="p")))
    )
    await harness.platform.wait_unary("SecretList")


async def test_deploy_with_empty_id_is_ignored(harness: Harness) -> None:
    await harness.platform.send(_cmd(deploy=agent_pb2.DeployRequest(id="", prefix="p")))
    await harness.platform.send(
        _cmd(listSecrets=agent_pb2.ListSecretsRequest(target=common_pb2.ContainerOrPrefix(prefix="p")))
    )
    await harness.platform.wait_unary("SecretList")
    assert harness.platform.streams_of("DeploymentStatus") == []


# -- container state -----------------------------------------------------------------------------------


async def test_state_watch_sends_initial_list_updates_and_stops_when_completed(harness: Harness) -> None:
    harness.runtime.add_container("p", "web")
    harness.runtime.add_container("q", "other")
    await harness.platform.send(_cmd(containerState=agent_pb2.ContainerStateRequest(prefix="p")))
    stream = await harness.platform.wait_stream("ContainerState")
    assert stream.metadata["dyo-filter-prefix"] == "p"
    await harness.platform.wait_for(lambda: len(stream.messages) >= 1)
    initial = stream.messages[0]
    assert initial.prefix == "p"
    assert [(i.id.prefix, i.id.name, i.state) for i in initial.data] == [("p", "web", common_pb2.RUNNING)]
    await harness.runtime.stop(ContainerRef("p", "web"))
    await harness.platform.wait_for(lambda: len(stream.messages) >= 2)
    assert stream.messages[1].data[0].state == common_pb2.EXITED
    await harness.runtime.delete(ContainerRef("p", "web"))
    await harness.platform.wait_for(lambda: len(stream.messages) >= 3)
    removed = stream.messages[2].data[0]
    assert removed.state == common_pb2.REMOVED and removed.id.name == "web"
    stream.complete()
    await eventually(lambda: harness.runtime.watcher_count == 0)


async def test_one_shot_state_without_prefix_has_empty_filter_and_half_closes(harness: Harness) -> None:
    harness.runtime.add_container("p", "web")
    await harness.platform.send(_cmd(containerState=agent_pb2.ContainerStateRequest(oneShot=True)))
    stream = await harness.platform.wait_stream("ContainerState")
    await wait_event(stream.done.wait(), 5, "the stream to finish")
    assert stream.metadata["dyo-filter-prefix"] == ""
    assert stream.half_closed_by_agent
    assert len(stream.messages) == 1
    assert [(i.id.prefix, i.id.name) for i in stream.messages[0].data] == [("", "p-web")]


async def test_second_watch_of_same_prefix_replaces_the_first(harness: Harness) -> None:
    await harness.platform.send(_cmd(containerState=agent_pb2.ContainerStateRequest(prefix="p")))
    first = await harness.platform.wait_stream("ContainerState")
    await harness.platform.send(_cmd(containerState=agent_pb2.ContainerStateRequest(prefix="p")))
    await harness.platform.wait_stream("ContainerState", count=2)
    await wait_event(first.done.wait(), 5, "the first stream to finish")
    await eventually(lambda: harness.runtime.watcher_count == 1)


async def test_reconnect_cancels_orphaned_streams(harness: Harness) -> None:
    await harness.platform.send(_cmd(containerState=agent_pb2.ContainerStateRequest(prefix="p")))
    await harness.platform.wait_stream("ContainerState")
    await eventually(lambda: harness.runtime.watcher_count == 1)
    await harness.platform.end_stream()
    await harness.platform.wait_accepted(count=2)
    await eventually(lambda: harness.runtime.watcher_count == 0)


# -- callbacks ----------------------------------------------------------------------------------------


async def test_list_secrets_container_and_prefix(harness: Harness) -> None:
    harness.runtime.add_container("p", "web", secret_keys=["A", "B"])
    await harness.platform.send(
        _cmd(
            listSecrets=agent_pb2.ListSecretsRequest(
                target=common_pb2.ContainerOrPrefix(container=_container("p", "web"))
            )
        )
    )
    answer = await harness.platform.wait_unary("SecretList")
    assert answer.metadata["dyo-container-prefix"] == "p"
    assert answer.metadata["dyo-container-name"] == "web"
    assert list(answer.message.keys) == ["A", "B"]
    assert answer.message.target.container.name == "web"
    assert answer.message.publicKey == harness.platform.connects[0].info.publicKey
    await harness.platform.send(
        _cmd(listSecrets=agent_pb2.ListSecretsRequest(target=common_pb2.ContainerOrPrefix(prefix="p")))
    )
    answer = await harness.platform.wait_unary("SecretList", count=2)
    assert answer.metadata["dyo-container-prefix"] == "p"
    assert answer.metadata.get("dyo-container-name", "") == ""
    assert answer.message.target.prefix == "p"


async def test_delete_containers_answers_for_container_prefix_and_no_target(harness: Harness) -> None:
    harness.runtime.add_container("p", "web")
    harness.runtime.add_container("p", "db")
    await harness.platform.send(
        _cmd(
            deleteContainers=common_pb2.DeleteContainersRequest(
                target=common_pb2.ContainerOrPrefix(container=_container("p", "web"))
            )
        )
    )
    answer = await harness.platform.wait_unary("DeleteContainers")
    assert (answer.metadata["dyo-container-prefix"], answer.metadata["dyo-container-name"]) == ("p", "web")
    assert "p-web" not in harness.runtime.containers
    await harness.platform.send(
        _cmd(
            deleteContainers=common_pb2.DeleteContainersRequest(
                target=common_pb2.ContainerOrPrefix(prefix="p")
            )
        )
    )
    answer = await harness.platform.wait_unary("DeleteContainers", count=2)
    assert answer.metadata["dyo-container-prefix"] == "p"
    assert harness.runtime.containers == {}
    await harness.platform.send(_cmd(deleteContainers=common_pb2.DeleteContainersRequest()))
    error = await harness.platform.wait_unary("CommandError")
    assert error.message.WhichOneof("command") == "deleteContainers"
    assert error.message.deleteContainers.status == 13
    assert "no target" in error.message.deleteContainers.error
    assert "dyo-container-prefix" in error.metadata or error.metadata.get("dyo-container-prefix", "") == ""


async def test_container_log_non_streaming_and_not_found(harness: Harness) -> None:
    lines = [f"2024-01-01T00:00:0{i}.000000000Z line {i}\n" for i in range(5)]
    harness.runtime.add_container("p", "web", logs=lines)
    await harness.platform.send(
        _cmd(containerLog=agent_pb2.ContainerLogRequest(container=_container("p", "web"), tail=3))
    )
    answer = await harness.platform.wait_unary("ContainerLog")
    assert list(answer.message.logs) == lines[-3:]
    assert (answer.metadata["dyo-container-prefix"], answer.metadata["dyo-container-name"]) == ("p", "web")
    await harness.platform.send(
        _cmd(containerLog=agent_pb2.ContainerLogRequest(container=_container("p", "nope"), tail=3))
    )
    error = await harness.platform.wait_unary("CommandError")
    assert error.message.WhichOneof("command") == "containerLog"
    assert error.message.containerLog.status == 5
    assert (error.metadata["dyo-container-prefix"], error.metadata["dyo-container-name"]) == ("p", "nope")


async def test_container_log_streaming_follows_until_completed(harness: Harness) -> None:
    harness.runtime.add_container("p", "web", logs=["old 1\n", "old 2\n", "old 3\n"])
    await harness.platform.send(
        _cmd(
            containerLog=agent_pb2.ContainerLogRequest(
                container=_container("", "p-web"), streaming=True, tail=2
            )
        )
    )
    stream = await harness.platform.wait_stream("ContainerLogStream")
    assert (stream.metadata.get("dyo-container-prefix", ""), stream.metadata["dyo-container-name"]) == (
        "",
        "p-web",
    )
    await harness.platform.wait_for(lambda: len(stream.messages) >= 2)
    harness.runtime.append_log(ContainerRef("p", "web"), "new\n")
    await harness.platform.wait_for(lambda: len(stream.messages) >= 3)
    # the memory runtime stamps what a container prints, as an engine does
    assert [m.log.split(" ", 1)[1] for m in stream.messages] == ["old 2\n", "old 3\n", "new\n"]
    stream.complete()
    await wait_event(stream.done.wait(), 5, "the stream to finish")
    await eventually(lambda: harness.running.agent.metrics.count("container_log", "completed_by_platform"))


async def test_container_inspect_and_not_found(harness: Harness) -> None:
    harness.runtime.add_container("p", "web")
    await harness.platform.send(
        _cmd(containerInspect=agent_pb2.ContainerInspectRequest(container=_container("p", "web")))
    )
    answer = await harness.platform.wait_unary("ContainerInspect")
    assert json.loads(answer.message.data)["Name"] == "/p-web"
    assert (answer.metadata["dyo-container-prefix"], answer.metadata["dyo-container-name"]) == ("p", "web")
    await harness.platform.send(
        _cmd(containerInspect=agent_pb2.ContainerInspectRequest(container=_container("p", "gone")))
    )
    error = await harness.platform.wait_unary("CommandError")
    assert error.message.WhichOneof("command") == "containerInspect"
    assert error.message.containerInspect.status == 5


async def test_container_commands_and_legacy_delete(harness: Harness) -> None:
    harness.runtime.add_container("p", "web")
    for operation in (common_pb2.STOP_CONTAINER, common_pb2.START_CONTAINER, common_pb2.RESTART_CONTAINER):
        await harness.platform.send(
            _cmd(
                containerCommand=common_pb2.ContainerCommandRequest(
                    container=_container("p", "web"), operation=operation
                )
            )
        )
    # Not found is only logged (no answer).
    await harness.platform.send(
        _cmd(
            containerCommand=common_pb2.ContainerCommandRequest(
                container=_container("p", "x"), operation=common_pb2.STOP_CONTAINER
            )
        )
    )
    await harness.platform.send(
        _cmd(containerDelete=agent_pb2.ContainerDeleteRequest(prefix="p", name="web"))
    )
    await eventually(lambda: ("delete", "p-web") in harness.runtime.operations)
    assert harness.runtime.operations[:3] == [("stop", "p-web"), ("start", "p-web"), ("restart", "p-web")]
    assert harness.platform.calls("CommandError") == []
    assert harness.platform.calls("DeleteContainers") == []


async def test_unknown_empty_and_legacy_commands_are_ignored(harness: Harness) -> None:
    await harness.platform.send(agent_pb2.AgentCommand())
    await harness.platform.send(_cmd(deployLegacy=agent_pb2.DeployRequestLegacy(requestId="r", json="{}")))
    # An unknown oneof member (a newer platform): field 99 on the wire.
    await harness.platform.send(agent_pb2.AgentCommand.FromString(b"\x9a\x06\x02\x08\x01"))
    await harness.platform.send(
        _cmd(listSecrets=agent_pb2.ListSecretsRequest(target=common_pb2.ContainerOrPrefix(prefix="p")))
    )
    await harness.platform.wait_unary("SecretList")
    assert len(harness.platform.connects) == 1


async def test_container_state_watch_with_many_containers_stays_under_message_limit(harness: Harness) -> None:
    for index in range(50):
        container = harness.runtime.add_container("big", f"c{index}")
        container.labels.update({f"label-{n}": "x" * 2000 for n in range(50)})
    await harness.platform.send(
        _cmd(containerState=agent_pb2.ContainerStateRequest(prefix="big", oneShot=True))
    )
    stream = await harness.platform.wait_stream("ContainerState")
    await wait_event(stream.done.wait(), 10, "the stream to finish")
    assert sum(len(m.data) for m in stream.messages) == 50
    assert len(stream.messages) > 1
    assert all(m.ByteSize() < 4 * 1024 * 1024 for m in stream.messages)
    assert harness.runtime.containers["big-c0"].state == ContainerState.RUNNING


async def test_streaming_log_of_missing_container_half_closes_without_command_error(harness: Harness) -> None:
    await harness.platform.send(
        _cmd(
            containerLog=agent_pb2.ContainerLogRequest(
                container=_container("p", "ghost"), streaming=True, tail=10
            )
        )
    )
    stream = await harness.platform.wait_stream("ContainerLogStream")
    await wait_event(stream.done.wait(), 5, "the stream to finish")
    assert stream.half_closed_by_agent
    assert stream.messages == []
    assert harness.platform.calls("CommandError") == []
