"""Scale the agent's own Deployment to 0 on ``close{SHUTDOWN}`` (§13.3), so Kubernetes does not
start it again. The Deployment is named by ``CRANE_DEPLOYMENT_NAME`` in
``CRANE_DEPLOYMENT_NAMESPACE`` (falling back to ``SECRET_NAMESPACE``, the agent's own namespace).

dyrector.io's own manifest sets ``CRANE_DEPLOYMENT_NAME`` only in the init container, so in the
cluster an unset name is derived from the pod's own name (``HOSTNAME``): a Deployment's pods are
named ``<deployment>-<pod-template-hash>-<suffix>``.

It builds its own short-lived client when asked: shutdown is rare, and the idle agent should not
keep anything for it. The call carries a short timeout so an unreachable API server cannot hold
the agent's exit for the full ``DEFAULT_KUBE_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import replace
from typing import Final

import structlog

from berth.errors import NotFound, PermanentCommandError
from berth.runtimes.kubernetes import resources
from berth.runtimes.kubernetes.api import KubeApi
from berth.settings import KubernetesSettings

log = structlog.get_logger(__name__)

SCALE_TIMEOUT_S: Final = 10.0
_DEPLOYMENT_POD: Final = re.compile(r"^([a-z0-9](?:[-a-z0-9]*[a-z0-9])?)-[a-z0-9]{1,10}-[a-z0-9]{5}$")


def deployment_of_pod(pod_name: str) -> str:
    """The Deployment a pod name belongs to, or ``""`` when it does not have that shape."""
    match = _DEPLOYMENT_POD.match(pod_name)
    return match.group(1) if match else ""


class KubernetesSelfScaler:
    """``SelfScaler`` for an agent running as a Kubernetes Deployment."""

    def __init__(self, settings: KubernetesSettings, *, pod_name: str | None = None) -> None:
        """``pod_name`` is the agent's own pod (default: ``HOSTNAME`` in the cluster)."""
        self._settings = replace(settings, request_timeout_s=min(settings.request_timeout_s, SCALE_TIMEOUT_S))
        if pod_name is None and settings.in_cluster:
            pod_name = os.environ.get("HOSTNAME", "")
        self._pod_name = pod_name or ""

    @property
    def target(self) -> tuple[str, str]:
        """(namespace, name) of the agent's own Deployment; the name may be empty (unknown)."""
        namespace = self._settings.deployment_namespace or self._settings.secret_namespace
        return namespace, self._settings.deployment_name or deployment_of_pod(self._pod_name)

    async def scale_down_self(self) -> None:
        namespace, name = self.target
        if not name:
            raise PermanentCommandError(
                "CRANE_DEPLOYMENT_NAME is not set and the pod name does not name a Deployment, "
                "so the agent's own Deployment is unknown"
            )
        await asyncio.to_thread(self._scale_to_zero, namespace, name)
        log.info("self_scaled_down", namespace=namespace, deployment=name)

    def _scale_to_zero(self, namespace: str, name: str) -> None:
        api = KubeApi(self._settings)
        try:
            api.merge_patch(resources.DEPLOYMENT, namespace, name, {"spec": {"replicas": 0}})
        except NotFound as err:
            raise NotFound(
                f"the agent's own Deployment {namespace}/{name} does not exist "
                "(CRANE_DEPLOYMENT_NAME/CRANE_DEPLOYMENT_NAMESPACE must name the Deployment, "
                "not the pod)"
            ) from err
        finally:
            api.close()
