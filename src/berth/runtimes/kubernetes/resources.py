"""The Kubernetes resource kinds Berth touches, and their REST paths (group/version, plural).

Berth talks to the API with plain JSON objects (no generated models): every object it writes is a
dict built in ``manifests.py`` and applied with server-side apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class Kind:
    kind: str
    api_version: str  # "v1", "apps/v1", "networking.k8s.io/v1"
    plural: str
    namespaced: bool = True

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def base(self) -> str:
        return "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"

    def path(self, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        parts = [self.base]
        if self.namespaced and namespace:
            parts.append(f"namespaces/{namespace}")
        parts.append(self.plural)
        if name:
            parts.append(name)
        if sub:
            parts.append(sub)
        return "/".join(parts)

    def describe(self, namespace: str | None, name: str | None) -> str:
        where = f"{namespace}/{name}" if namespace and self.namespaced else (name or "")
        return f"{self.kind} {where}".strip()


NAMESPACE: Final = Kind("Namespace", "v1", "namespaces", namespaced=False)
CONFIG_MAP: Final = Kind("ConfigMap", "v1", "configmaps")
SECRET: Final = Kind("Secret", "v1", "secrets")
SERVICE: Final = Kind("Service", "v1", "services")
PVC: Final = Kind("PersistentVolumeClaim", "v1", "persistentvolumeclaims")
POD: Final = Kind("Pod", "v1", "pods")
DEPLOYMENT: Final = Kind("Deployment", "apps/v1", "deployments")
REPLICA_SET: Final = Kind("ReplicaSet", "apps/v1", "replicasets")  # read only (rollback)
INGRESS: Final = Kind("Ingress", "networking.k8s.io/v1", "ingresses")
SERVICE_MONITOR: Final = Kind("ServiceMonitor", "monitoring.coreos.com/v1", "servicemonitors")

BY_NAME: Final = {
    k.kind: k
    for k in (NAMESPACE, CONFIG_MAP, SECRET, SERVICE, PVC, POD, DEPLOYMENT, INGRESS, SERVICE_MONITOR)
}


def kind_of(obj: dict[str, object]) -> Kind:
    return BY_NAME[str(obj["kind"])]
