"""Kubernetes runtime (crane-compatible). The ``kubernetes`` client is imported only when the
first API call is made, so importing this package stays cheap."""

from berth.runtimes.kubernetes.credential_store import KubernetesCredentialStore
from berth.runtimes.kubernetes.runtime import KubernetesRuntime

__all__ = ["KubernetesCredentialStore", "KubernetesRuntime"]
