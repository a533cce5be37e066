from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

import pytest

from berth import model
from berth.agent import codec
from berth.agent import commands as cmd
from berth.model import (
    CloseReason,
    ContainerOperation,
    ContainerRef,
    ContainerState,
    ContainerStatus,
    DeploymentStatus,
    LogLevel,
    NetworkMode,
    PortMapping,
    PrefixTarget,
    RestartPolicy,
    StateUpdate,
    VolumeType,
)
from berth.proto import agent_pb2, common_pb2


def test_full_deploy_request_maps_every_field_with_presence() -> None:
    request = agent_pb2.DeployRequest(
        id="d1",
        versionName="v1",
        releaseNotes="notes",
        prefix="p",
        secrets={"SHARED": "cipher"},
        requests=[
            agent_pb2.DeployWorkloadRequest(
                id="w1",
                imageName="nginx",
                tag="1.25",
                registry="docker.io/library",
                registryAuth=agent_pb2.RegistryAuth(name="hub", url="docker.io", user="u", password="pw"),
                common=agent_pb2.CommonContainerConfig(
                    name="web",
                    user=0,
                    TTY=True,
                    ports=[agent_pb2.Port(internal=80, external=8080), agent_pb2.Port(internal=81)],
                    portRanges=[
                        agent_pb2.PortRangeBinding(
                            internal=agent_pb2.PortRange(**{"from": 1000, "to": 1010}),
                            external=agent_pb2.PortRange(**{"from": 2000, "to": 2010}),
                        )
                    ],
                    volumes=[agent_pb2.Volume(name="data", path="/data", type=common_pb2.RWO, size="1Gi")],
                    environment={"A": "1"},
                    secrets={"S": "cipher-s"},
                    initContainers=[agent_pb2.InitContainer(name="init", image="busybox", command=["sh"])],
                ),
                dagent=agent_pb2.DagentContainerConfig(
                    restartPolicy=common_pb2.ALWAYS,
                    networkMode=common_pb2.HOST,
                    networks=["n1"],
                    labels={"l": "v"},
                ),
            )
        ],
    )
    command = codec.command_from_proto(agent_pb2.AgentCommand(deploy=request))
    assert isinstance(command, cmd.Deploy)
    deployment = command.deployment
    assert (deployment.id, deployment.prefix, deployment.version_name) == ("d1", "p", "v1")
    assert dict(deployment.shared_secrets) == {"SHARED": "cipher"}
    workload = deployment.workloads[0]
    assert (workload.id, workload.name, workload.prefix, workload.image_name, workload.tag) == (
        "w1",
        "web",
        "p",
        "nginx",
        "1.25",
    )
    assert workload.registry == "docker.io/library"
    assert workload.registry_auth is not None and workload.registry_auth.password == "pw"
    assert "pw" not in repr(workload.registry_auth)
    assert workload.user == 0  # explicit presence: 0 is root, not "unset"
    assert workload.tty is True
    assert workload.working_directory is None
    assert [(p.internal, p.external) for p in workload.ports] == [(80, 8080), (81, None)]
    assert workload.port_ranges[0].internal.start == 1000 and workload.port_ranges[0].external.end == 2010
    assert workload.volumes[0].type == VolumeType.RWO and workload.volumes[0].size == "1Gi"
    assert workload.secrets == {}
    assert dict(command.encrypted_secrets[0]) == {"S": "cipher-s"}
    assert workload.docker.restart_policy == RestartPolicy.ALWAYS
    assert workload.docker.network_mode == NetworkMode.HOST
    assert workload.docker.log_config is None and workload.docker.expected_state is None
    assert workload.init_containers[0].command == ("sh",)


def test_every_command_variant_decodes() -> None:
    ident = common_pb2.ContainerIdentifier(prefix="p", name="web")
    cases = {
        "containerState": agent_pb2.AgentCommand(
            containerState=agent_pb2.ContainerStateRequest(oneShot=True)
        ),
        "containerDelete": agent_pb2.AgentCommand(
            containerDelete=agent_pb2.ContainerDeleteRequest(prefix="p", name="web")
        ),
        "deployLegacy": agent_pb2.AgentCommand(deployLegacy=agent_pb2.DeployRequestLegacy(requestId="r")),
        "listSecrets": agent_pb2.AgentCommand(
            listSecrets=agent_pb2.ListSecretsRequest(target=common_pb2.ContainerOrPrefix(prefix="p"))
        ),
        "update": agent_pb2.AgentCommand(
            update=agent_pb2.AgentUpdateRequest(tag="1", timeoutSeconds=300, token="t")
        ),
        "close": agent_pb2.AgentCommand(
            close=agent_pb2.CloseConnectionRequest(reason=agent_pb2.REVOKE_TOKEN)
        ),
        "containerCommand": agent_pb2.AgentCommand(
            containerCommand=common_pb2.ContainerCommandRequest(
                container=ident, operation=common_pb2.RESTART_CONTAINER
            )
        ),
        "deleteContainers": agent_pb2.AgentCommand(deleteContainers=common_pb2.DeleteContainersRequest()),
        "containerLog": agent_pb2.AgentCommand(
            containerLog=agent_pb2.ContainerLogRequest(container=ident, streaming=True, tail=100)
        ),
        "replaceToken": agent_pb2.AgentCommand(replaceToken=agent_pb2.ReplaceTokenRequest(token="t")),
        "containerInspect": agent_pb2.AgentCommand(
            containerInspect=agent_pb2.ContainerInspectRequest(container=ident)
        ),
    }
    decoded = {name: codec.command_from_proto(message) for name, message in cases.items()}
    assert decoded["containerState"] == cmd.WatchState(prefix="", one_shot=True)
    assert decoded["containerDelete"] == cmd.LegacyDelete(ContainerRef("p", "web"))
    assert decoded["deployLegacy"] == cmd.LegacyDeploy("r")
    assert decoded["listSecrets"] == cmd.ListSecrets(PrefixTarget("p"))
    assert decoded["update"] == cmd.Update("1", 300, "t")
    assert decoded["close"] == cmd.Close(CloseReason.REVOKE_TOKEN)
    assert decoded["containerCommand"] == cmd.ContainerCommand(
        ContainerRef("p", "web"), ContainerOperation.RESTART
    )
    assert decoded["deleteContainers"] == cmd.DeleteContainers(None)
    assert decoded["containerLog"] == cmd.ContainerLogs(ContainerRef("p", "web"), True, 100)
    assert decoded["replaceToken"] == cmd.ReplaceToken("t")
    assert decoded["containerInspect"] == cmd.Inspect(ContainerRef("p", "web"))
    assert "t" not in repr(decoded["replaceToken"]).replace("ReplaceToken", "")
    assert codec.command_from_proto(agent_pb2.AgentCommand()) == cmd.Unknown("empty")
    assert isinstance(
        codec.command_from_proto(agent_pb2.AgentCommand(listSecrets=agent_pb2.ListSecretsRequest())),
        cmd.Unknown,
    )


def test_unknown_enum_numbers_become_unspecified() -> None:
    message = agent_pb2.AgentCommand.FromString(
        agent_pb2.AgentCommand(close=agent_pb2.CloseConnectionRequest(reason=3))
        .SerializeToString()
        .replace(b"\x08\x03", b"\x08\x09")
    )
    assert codec.command_from_proto(message) == cmd.Close(CloseReason.UNSPECIFIED)


@pytest.mark.parametrize(
    ("kind", "member"),
    [
        (cmd.CallbackKind.LIST_SECRETS, "listSecrets"),
        (cmd.CallbackKind.DELETE_CONTAINERS, "deleteContainers"),
        (cmd.CallbackKind.CONTAINER_LOG, "containerLog"),
        (cmd.CallbackKind.CONTAINER_INSPECT, "containerInspect"),
    ],
)
def test_each_callback_kind_answers_on_its_own_member(kind: cmd.CallbackKind, member: str) -> None:
    error = codec.command_error_to_proto(kind, 13, "failed")
    assert error.WhichOneof("command") == member
    assert getattr(error, member).status == 13
    assert len(cmd.CallbackKind) == 4


def test_outbound_messages() -> None:
    error = codec.command_error_to_proto(cmd.CallbackKind.CONTAINER_INSPECT, 5, "container not found")
    assert error.WhichOneof("command") == "containerInspect"
    assert (error.containerInspect.status, error.containerInspect.error) == (5, "container not found")
    assert codec.container_metadata(PrefixTarget("p")) == (
        ("dyo-container-prefix", "p"),
        ("dyo-container-name", ""),
    )
    assert codec.container_metadata(ContainerRef("", "x")) == (
        ("dyo-container-prefix", ""),
        ("dyo-container-name", "x"),
    )
    progress = codec.deployment_message_to_proto(
        cmd.DeploymentMessage(progress=cmd.PullProgress("w", "Pulling", 1.7))
    )
    assert progress.containerProgress.progress == 1.0
    assert not progress.HasField("logLevel")
    status = codec.deployment_message_to_proto(
        cmd.DeploymentMessage(status=DeploymentStatus.FAILED, log=("boom",), level=LogLevel.ERROR)
    )
    assert status.deploymentStatus == common_pb2.FAILED and status.logLevel == common_pb2.ERROR
    created = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    update = StateUpdate(
        items=(
            ContainerStatus(
                ref=ContainerRef("p", "web"),
                state=ContainerState.RUNNING,
                reason="running",
                created_at=created,
                image_name="nginx",
                image_tag="1",
                ports=(PortMapping(80, 8080),),
                labels={"a": "b"},
            ),
            ContainerStatus.removed(ContainerRef("p", "gone")),
        )
    )
    message = codec.state_update_to_proto("p", update)
    assert message.prefix == "p"
    assert message.data[0].createdAt.seconds == int(created.timestamp())
    assert message.data[0].ports[0].external == 8080
    assert message.data[1].state == common_pb2.REMOVED and not message.data[1].HasField("createdAt")
    chunks = codec.state_update_chunks("p", update, max_bytes=60)
    assert len(chunks) == 2 and all(c.prefix == "p" for c in chunks)
    info = codec.agent_info_to_proto("id", "0.15.4-x", "KEY", None)
    assert not info.HasField("containerName")


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (model.ContainerState, common_pb2.ContainerState),
        (model.DeploymentStatus, common_pb2.DeploymentStatus),
        (model.LogLevel, common_pb2.DeploymentMessageLevel),
        (model.NetworkMode, common_pb2.NetworkMode),
        (model.RestartPolicy, common_pb2.RestartPolicy),
        (model.DeploymentStrategy, common_pb2.DeploymentStrategy),
        (model.VolumeType, common_pb2.VolumeType),
        (model.LogDriver, common_pb2.DriverType),
        (model.ExposeStrategy, common_pb2.ExposeStrategy),
        (model.ContainerOperation, common_pb2.ContainerOperation),
        (model.CloseReason, agent_pb2.CloseReason),
    ],
)
def test_the_model_enums_are_the_protocol_enums(ours: type[enum.IntEnum], theirs: Any) -> None:
    """Same numbers, same meaning (the protocol's names carry prefixes such as ``NONE_ES``)."""
    wire = {value.number: value.name for value in theirs.DESCRIPTOR.values}
    assert sorted(wire) == [member.value for member in ours]
    for member in ours:
        assert member.name in wire[member.value], (member, wire[member.value])
