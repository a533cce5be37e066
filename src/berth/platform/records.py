"""What the platform stores: nodes, registries, deployments with their instances.

Plain mutable dataclasses; ``to_doc``/``from_doc`` give the JSON stored by ``Store``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Self


class _Doc:
    def to_doc(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload, no-any-return]

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Self:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in doc.items() if k in names})


@dataclass
class Installer(_Doc):
    """A generated install script: the single-use install token and its window."""

    token: str
    nonce: str
    expires_at: float
    node_type: str  # docker | k8s
    script_type: str  # shell | powershell | systemd (docker), shell for k8s
    root_path: str = ""


@dataclass
class NodeRecord(_Doc):
    id: str
    name: str
    created_at: float
    description: str = ""
    icon: str = ""
    type: str = "docker"
    nonce: str | None = None  # nonce of the current connection token; None = no token
    public_key: str = ""
    address: str = ""
    version: str = ""
    container_name: str = ""
    connected_at: float | None = None
    installer: dict[str, Any] | None = None

    def get_installer(self) -> Installer | None:
        return Installer.from_doc(self.installer) if self.installer else None


@dataclass
class RegistryRecord(_Doc):
    id: str
    name: str
    url: str
    created_at: float
    user: str = ""
    password: str = ""
    description: str = ""

    def public(self) -> dict[str, Any]:
        """The API view: the password is write-only."""
        return {
            "id": self.id,
            "name": self.name,
            "url": self.url,
            "user": self.user,
            "description": self.description,
            "hasPassword": bool(self.password),
            "createdAt": self.created_at,
        }


@dataclass
class InstanceRecord(_Doc):
    id: str
    image: str
    tag: str
    registry_id: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    state: str | None = None
    reason: str = ""
    updated_at: float | None = None


@dataclass
class DeploymentRecord(_Doc):
    id: str
    node_id: str
    prefix: str
    created_at: float
    status: str = "preparing"
    note: str = ""
    version_name: str = ""
    release_notes: str = ""
    secrets: dict[str, str] = field(default_factory=dict)
    instances: list[dict[str, Any]] = field(default_factory=list)
    updated_at: float | None = None

    def get_instances(self) -> list[InstanceRecord]:
        return [InstanceRecord.from_doc(doc) for doc in self.instances]

    def set_instances(self, instances: list[InstanceRecord]) -> None:
        self.instances = [i.to_doc() for i in instances]
