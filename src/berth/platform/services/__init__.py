"""The platform's behaviour, one service per job, over one store. No HTTP or gRPC types here."""

from __future__ import annotations

from dataclasses import dataclass

from berth.platform.config import PlatformConfig
from berth.platform.services.containers import ContainerService
from berth.platform.services.deployments import DeploymentService
from berth.platform.services.nodes import NodeService
from berth.platform.services.registries import RegistryService
from berth.platform.services.sessions import AgentSessions


@dataclass(frozen=True)
class Services:
    config: PlatformConfig
    sessions: AgentSessions
    nodes: NodeService
    containers: ContainerService
    registries: RegistryService
    deployments: DeploymentService
