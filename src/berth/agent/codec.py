"""protobuf <-> domain model: the only place both worlds meet.

Inbound: ``AgentCommand`` → ``berth.agent.commands.Command``. Outbound: domain answers → the
protocol's messages. Optional fields keep their presence (``None`` when absent).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import Final, TypedDict, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from berth.agent import commands as cmd
from berth.model import (
    CloseReason,
    ConfigContainer,
    ContainerOperation,
    ContainerRef,
    ContainerState,
    ContainerStatus,
    DeploymentSpec,
    DeploymentStrategy,
    DockerOptions,
    ExpectedState,
    ExposeStrategy,
    HealthCheck,
    ImportContainer,
    InitContainer,
    KubernetesOptions,
    LogConfig,
    LogDriver,
    Marker,
    Metrics,
    NetworkMode,
    Port,
    PortRange,
    PortRangeBinding,
    PrefixTarget,
    RegistryAuth,
    ResourceConfig,
    Resources,
    RestartPolicy,
    Routing,
    StateUpdate,
    Target,
    Volume,
    VolumeLink,
    VolumeType,
    WorkloadSpec,
    frozen_map,
)
from berth.proto import agent_pb2, common_pb2

E = TypeVar("E", bound=enum.IntEnum)


def _enum(kind: type[E], value: int) -> E:
    """Unknown numbers (a newer platform) become the enum's zero value."""
    try:
        return kind(value)
    except ValueError:
        return kind(0)


# -- inbound ---------------------------------------------------------------------------------------


def ref_from_proto(identifier: common_pb2.ContainerIdentifier) -> ContainerRef:
    return ContainerRef(prefix=identifier.prefix, name=identifier.name)


def target_from_proto(target: common_pb2.ContainerOrPrefix) -> Target | None:
    which = target.WhichOneof("target")
    if which == "container":
        return ref_from_proto(target.container)
    if which == "prefix":
        return PrefixTarget(target.prefix)
    return None


def _init_container(init: agent_pb2.InitContainer) -> InitContainer:
    return InitContainer(
        name=init.name,
        image=init.image,
        use_parent_config=init.useParentConfig,
        volumes=tuple(VolumeLink(name=v.name, path=v.path) for v in init.volumes),
        command=tuple(init.command),
        args=tuple(init.args),
        environment=frozen_map(init.environment),
    )


def _volume(volume: agent_pb2.Volume) -> Volume:
    return Volume(
        name=volume.name,
        path=volume.path,
        size=volume.size if volume.HasField("size") else None,
        type=_enum(VolumeType, volume.type) if volume.HasField("type") else None,
        storage_class=getattr(volume, "class") if volume.HasField("class") else None,
    )


def _routing(routing: common_pb2.Routing) -> Routing:
    return Routing(
        domain=routing.domain if routing.HasField("domain") else None,
        path=routing.path if routing.HasField("path") else None,
        strip_path=routing.stripPath,
        upload_limit=routing.uploadLimit if routing.HasField("uploadLimit") else None,
        port=routing.port if routing.HasField("port") else None,
    )


def _docker_options(dagent: agent_pb2.DagentContainerConfig) -> DockerOptions:
    log_config = None
    if dagent.HasField("logConfig"):
        log_config = LogConfig(
            driver=_enum(LogDriver, dagent.logConfig.driver), options=frozen_map(dagent.logConfig.options)
        )
    expected = None
    if dagent.HasField("expectedState"):
        state = dagent.expectedState
        expected = ExpectedState(
            state=_enum(ContainerState, state.state),
            timeout_s=state.timeout if state.HasField("timeout") else None,
            exit_code=state.exitCode if state.HasField("exitCode") else None,
        )
    return DockerOptions(
        log_config=log_config,
        restart_policy=_enum(RestartPolicy, dagent.restartPolicy)
        if dagent.HasField("restartPolicy")
        else None,
        network_mode=_enum(NetworkMode, dagent.networkMode) if dagent.HasField("networkMode") else None,
        expected_state=expected,
        networks=tuple(dagent.networks),
        labels=frozen_map(dagent.labels),
    )


def _marker(marker: agent_pb2.Marker) -> Marker:
    return Marker(
        deployment=frozen_map(marker.deployment),
        service=frozen_map(marker.service),
        ingress=frozen_map(marker.ingress),
    )


def _resources(resource: common_pb2.Resource) -> Resources:
    return Resources(
        cpu=resource.cpu if resource.HasField("cpu") else None,
        memory=resource.memory if resource.HasField("memory") else None,
    )


def _kubernetes_options(crane: agent_pb2.CraneContainerConfig) -> KubernetesOptions:
    health = None
    if crane.HasField("healthCheckConfig"):
        check = crane.healthCheckConfig
        health = HealthCheck(
            port=check.port if check.HasField("port") else None,
            liveness_path=check.livenessProbe if check.HasField("livenessProbe") else None,
            readiness_path=check.readinessProbe if check.HasField("readinessProbe") else None,
            startup_path=check.startupProbe if check.HasField("startupProbe") else None,
        )
    resources = None
    if crane.HasField("resourceConfig"):
        config = crane.resourceConfig
        resources = ResourceConfig(
            limits=_resources(config.limits) if config.HasField("limits") else None,
            requests=_resources(config.requests) if config.HasField("requests") else None,
        )
    return KubernetesOptions(
        deployment_strategy=_enum(DeploymentStrategy, crane.deploymentStrategy)
        if crane.HasField("deploymentStrategy")
        else None,
        health_check=health,
        resources=resources,
        proxy_headers=crane.proxyHeaders,
        use_load_balancer=crane.useLoadBalancer,
        annotations=_marker(crane.annotations) if crane.HasField("annotations") else None,
        labels=_marker(crane.labels) if crane.HasField("labels") else None,
        metrics=Metrics(port=crane.metrics.port, path=crane.metrics.path)
        if crane.HasField("metrics")
        else None,
        custom_headers=tuple(crane.customHeaders),
        extra_lb_annotations=frozen_map(crane.extraLBAnnotations),
    )


def workload_from_proto(prefix: str, request: agent_pb2.DeployWorkloadRequest) -> WorkloadSpec:
    """A workload without its secrets (see ``encrypted_secrets_of``)."""
    common = request.common
    auth = None
    if request.HasField("registryAuth"):
        auth = RegistryAuth(
            name=request.registryAuth.name,
            url=request.registryAuth.url,
            user=request.registryAuth.user,
            password=request.registryAuth.password,
        )
    config_container = None
    if common.HasField("configContainer"):
        config = common.configContainer
        config_container = ConfigContainer(
            image=config.image, volume=config.volume, path=config.path, keep_files=config.keepFiles
        )
    import_container = None
    if common.HasField("importContainer"):
        imported = common.importContainer
        import_container = ImportContainer(
            volume=imported.volume, command=imported.command, environment=frozen_map(imported.environment)
        )
    return WorkloadSpec(
        id=request.id,
        prefix=prefix,
        name=common.name,
        image_name=request.imageName,
        tag=request.tag,
        registry=request.registry if request.HasField("registry") else None,
        registry_auth=auth,
        expose=_enum(ExposeStrategy, common.expose) if common.HasField("expose") else None,
        routing=_routing(common.routing) if common.HasField("routing") else None,
        config_container=config_container,
        import_container=import_container,
        user=common.user if common.HasField("user") else None,
        tty=common.TTY,
        working_directory=common.workingDirectory if common.HasField("workingDirectory") else None,
        ports=tuple(
            Port(internal=p.internal, external=p.external if p.HasField("external") else None)
            for p in common.ports
        ),
        port_ranges=tuple(
            PortRangeBinding(
                internal=PortRange(start=getattr(r.internal, "from"), end=r.internal.to),
                external=PortRange(start=getattr(r.external, "from"), end=r.external.to),
            )
            for r in common.portRanges
        ),
        volumes=tuple(_volume(v) for v in common.volumes),
        commands=tuple(common.commands),
        args=tuple(common.args),
        environment=frozen_map(common.environment),
        init_containers=tuple(_init_container(i) for i in common.initContainers),
        docker=_docker_options(request.dagent) if request.HasField("dagent") else DockerOptions(),
        kubernetes=_kubernetes_options(request.crane) if request.HasField("crane") else KubernetesOptions(),
    )


def deploy_from_proto(request: agent_pb2.DeployRequest) -> cmd.Deploy:
    deployment = DeploymentSpec(
        id=request.id,
        prefix=request.prefix,
        version_name=request.versionName,
        release_notes=request.releaseNotes,
        shared_secrets=frozen_map(request.secrets),
        workloads=tuple(workload_from_proto(request.prefix, r) for r in request.requests),
    )
    encrypted = tuple(frozen_map(r.common.secrets) for r in request.requests)
    return cmd.Deploy(deployment=deployment, encrypted_secrets=encrypted)


def _watch_state(message: agent_pb2.AgentCommand) -> cmd.Command:
    return cmd.WatchState(prefix=message.containerState.prefix, one_shot=message.containerState.oneShot)


def _legacy_delete(message: agent_pb2.AgentCommand) -> cmd.Command:
    return cmd.LegacyDelete(ContainerRef(message.containerDelete.prefix, message.containerDelete.name))


def _list_secrets(message: agent_pb2.AgentCommand) -> cmd.Command:
    target = target_from_proto(message.listSecrets.target)
    if target is None:
        return cmd.Unknown("listSecrets without target")
    return cmd.ListSecrets(target=target)


def _update(message: agent_pb2.AgentCommand) -> cmd.Command:
    update = message.update
    return cmd.Update(tag=update.tag, timeout_s=update.timeoutSeconds, token=update.token)


def _container_command(message: agent_pb2.AgentCommand) -> cmd.Command:
    command = message.containerCommand
    operation = _enum(ContainerOperation, command.operation)
    return cmd.ContainerCommand(ref=ref_from_proto(command.container), operation=operation)


def _container_log(message: agent_pb2.AgentCommand) -> cmd.Command:
    logs = message.containerLog
    return cmd.ContainerLogs(
        ref=ref_from_proto(logs.container), streaming=logs.streaming, tail_lines=logs.tail
    )


Decoder = Callable[[agent_pb2.AgentCommand], cmd.Command]


# One decoder per member of ``AgentCommand.command``. A TypedDict (not a dict) so that mypy checks
# both ways: the table has every key it declares, and ``WhichOneof``'s literal type (generated
# from the .proto) names no member the table lacks.
class _Decoders(TypedDict):
    deploy: Decoder
    containerState: Decoder
    containerDelete: Decoder
    deployLegacy: Decoder
    listSecrets: Decoder
    update: Decoder
    close: Decoder
    containerCommand: Decoder
    deleteContainers: Decoder
    containerLog: Decoder
    replaceToken: Decoder
    containerInspect: Decoder


_DECODERS: Final[_Decoders] = {
    "deploy": lambda message: deploy_from_proto(message.deploy),
    "containerState": _watch_state,
    "containerDelete": _legacy_delete,
    "deployLegacy": lambda message: cmd.LegacyDeploy(request_id=message.deployLegacy.requestId),
    "listSecrets": _list_secrets,
    "update": _update,
    "close": lambda message: cmd.Close(reason=_enum(CloseReason, message.close.reason)),
    "containerCommand": _container_command,
    "deleteContainers": lambda message: cmd.DeleteContainers(
        target=target_from_proto(message.deleteContainers.target)
    ),
    "containerLog": _container_log,
    "replaceToken": lambda message: cmd.ReplaceToken(token=message.replaceToken.token),
    "containerInspect": lambda message: cmd.Inspect(ref=ref_from_proto(message.containerInspect.container)),
}


def command_from_proto(message: agent_pb2.AgentCommand) -> cmd.Command:
    """An empty command, or one whose member this agent's .proto does not know (a newer
    platform: the member arrives as an unknown field), becomes ``Unknown``."""
    which = message.WhichOneof("command")
    if which is None:
        return cmd.Unknown("empty")
    return _DECODERS[which](message)


# -- outbound --------------------------------------------------------------------------------------


def target_to_proto(target: Target) -> common_pb2.ContainerOrPrefix:
    if isinstance(target, PrefixTarget):
        return common_pb2.ContainerOrPrefix(prefix=target.prefix)
    return common_pb2.ContainerOrPrefix(
        container=common_pb2.ContainerIdentifier(prefix=target.prefix, name=target.name)
    )


def container_metadata(target: Target | None) -> tuple[tuple[str, str], ...]:
    """``dyo-container-prefix`` / ``dyo-container-name`` (§3.2, §5); a prefix target has name ``""``."""
    if target is None:
        return (("dyo-container-prefix", ""), ("dyo-container-name", ""))
    if isinstance(target, PrefixTarget):
        return (("dyo-container-prefix", target.prefix), ("dyo-container-name", ""))
    return (("dyo-container-prefix", target.prefix), ("dyo-container-name", target.name))


def secret_list_to_proto(
    target: Target, public_key: str, keys: Sequence[str]
) -> common_pb2.ListSecretsResponse:
    return common_pb2.ListSecretsResponse(
        target=target_to_proto(target), publicKey=public_key, keys=list(keys)
    )


def command_error_to_proto(kind: cmd.CallbackKind, status: int, message: str) -> agent_pb2.AgentCommandError:
    """``kind``'s value is the number of its ``AgentCommandError`` member (§5)."""
    member = agent_pb2.AgentCommandError.DESCRIPTOR.fields_by_number[int(kind)].name
    result = agent_pb2.AgentCommandError()
    getattr(result, member).CopyFrom(agent_pb2.AgentError(status=status, error=message))
    return result


def deployment_message_to_proto(message: cmd.DeploymentMessage) -> common_pb2.DeploymentStatusMessage:
    result = common_pb2.DeploymentStatusMessage(log=list(message.log))
    if message.status is not None:
        result.deploymentStatus = int(message.status)  # type: ignore[assignment]
    elif message.instance is not None:
        result.instance.CopyFrom(
            common_pb2.InstanceDeploymentItem(
                instanceId=message.instance.workload_id,
                state=int(message.instance.state),  # type: ignore[arg-type]
                reason=message.instance.reason,
            )
        )
    elif message.progress is not None:
        result.containerProgress.CopyFrom(
            common_pb2.DeployContainerProgress(
                instanceId=message.progress.workload_id,
                status=message.progress.status,
                progress=min(1.0, max(0.0, message.progress.fraction)),
            )
        )
    if message.level is not None:
        result.logLevel = int(message.level)  # type: ignore[assignment]
    return result


def _status_item(status: ContainerStatus) -> common_pb2.ContainerStateItem:
    item = common_pb2.ContainerStateItem(
        id=common_pb2.ContainerIdentifier(prefix=status.ref.prefix, name=status.ref.name),
        state=int(status.state),  # type: ignore[arg-type]
    )
    if status.state == ContainerState.REMOVED:
        return item
    item.command = status.command
    item.reason = status.reason
    item.status = status.status
    item.imageName = status.image_name
    item.imageTag = status.image_tag
    if status.created_at is not None:
        created = Timestamp()
        created.FromDatetime(status.created_at)
        item.createdAt.CopyFrom(created)
    item.ports.extend(
        common_pb2.ContainerStateItemPort(internal=p.internal, external=p.external) for p in status.ports
    )
    item.labels.update(status.labels)
    return item


def state_update_to_proto(prefix: str, update: StateUpdate) -> common_pb2.ContainerStateListMessage:
    return common_pb2.ContainerStateListMessage(prefix=prefix, data=[_status_item(s) for s in update.items])


def state_update_chunks(
    prefix: str, update: StateUpdate, max_bytes: int
) -> list[common_pb2.ContainerStateListMessage]:
    """Split a large list into messages below ``max_bytes`` (items keep their state: §7.4)."""
    chunks: list[common_pb2.ContainerStateListMessage] = []
    current = common_pb2.ContainerStateListMessage(prefix=prefix)
    size = current.ByteSize()
    for status in update.items:
        item = _status_item(status)
        item_size = item.ByteSize() + 8
        if current.data and size + item_size > max_bytes:
            chunks.append(current)
            current = common_pb2.ContainerStateListMessage(prefix=prefix)
            size = current.ByteSize()
        current.data.append(item)
        size += item_size
    chunks.append(current)
    return chunks


def log_line_to_proto(line: str) -> common_pb2.ContainerLogMessage:
    return common_pb2.ContainerLogMessage(log=line)


def log_list_to_proto(lines: Sequence[str]) -> common_pb2.ContainerLogListResponse:
    return common_pb2.ContainerLogListResponse(logs=list(lines))


def inspect_to_proto(data: str) -> common_pb2.ContainerInspectResponse:
    return common_pb2.ContainerInspectResponse(data=data)


def agent_info_to_proto(
    node_id: str, version: str, public_key: str, container_name: str | None
) -> agent_pb2.AgentInfo:
    info = agent_pb2.AgentInfo(id=node_id, version=version, publicKey=public_key)
    if container_name is not None:
        info.containerName = container_name
    return info
