"""What a Kubernetes node does with the parts of a deploy request written for Docker (the
``dagent`` block) or that a Deployment cannot express: honour what has a meaning (an expected
RUNNING state is the rollout wait, its timeout the rollout timeout) and name everything else on
the deployment's event log (``ignored_fields``, sent as one WARNING message per workload).

The platform sends the ``dagent`` block with defaults (restart policy, bridge network), so only
values that differ from what a Deployment does anyway are reported.
"""

from __future__ import annotations

from typing import Final

from berth.model import ContainerState, ExposeStrategy, NetworkMode, RestartPolicy, WorkloadSpec
from berth.settings import KubernetesSettings

# A Deployment's pods always restart: these policies say the same thing.
_RESTARTING: Final = frozenset(
    {RestartPolicy.UNSPECIFIED, RestartPolicy.UNDEFINED, RestartPolicy.ALWAYS, RestartPolicy.UNLESS_STOPPED}
)


def rollout_timeout_s(workload: WorkloadSpec, settings: KubernetesSettings) -> float:
    """``dagent.expectedState.timeout`` bounds the rollout wait of an expected RUNNING workload."""
    expected = workload.docker.expected_state
    if expected is not None and expected.timeout_s and _expects_running(workload):
        return float(expected.timeout_s)
    return settings.rollout_timeout_s


def _expects_running(workload: WorkloadSpec) -> bool:
    expected = workload.docker.expected_state
    return expected is None or expected.state in (ContainerState.RUNNING, ContainerState.UNSPECIFIED)


def ignored_fields(workload: WorkloadSpec) -> list[str]:
    """One line per field of the request this cluster does not honour, naming it and why."""
    dagent = workload.docker
    lines: list[str] = []
    if dagent.restart_policy is not None and dagent.restart_policy not in _RESTARTING:
        lines.append(
            f"dagent.restartPolicy {dagent.restart_policy.name}: not honoured on Kubernetes; a "
            "Deployment always restarts its pods"
        )
    if dagent.network_mode in (NetworkMode.HOST, NetworkMode.NONE):
        lines.append(
            f"dagent.networkMode {dagent.network_mode.name}: not honoured on Kubernetes; pods use "
            "the cluster network"
        )
    if dagent.networks:
        lines.append(
            f"dagent.networks {', '.join(dagent.networks)}: not honoured on Kubernetes; pods reach "
            "each other through Services"
        )
    if dagent.log_config is not None and dagent.log_config.driver.docker_name is not None:
        lines.append(
            f"dagent.logConfig {dagent.log_config.driver.name}: not honoured on Kubernetes; the "
            "node's container runtime handles logs"
        )
    if dagent.labels:
        lines.append(
            f"dagent.labels {', '.join(sorted(dagent.labels))}: not honoured on Kubernetes; use crane.labels"
        )
    expected = dagent.expected_state
    if expected is not None:
        if not _expects_running(workload):
            lines.append(
                f"dagent.expectedState {expected.state.name}: not honoured on Kubernetes; a "
                "Deployment keeps its pod running (the deployment waits for the rollout instead)"
            )
        elif expected.exit_code is not None:
            lines.append("dagent.expectedState.exitCode: not honoured on Kubernetes for a running workload")
    routing = workload.routing
    exposed = workload.expose in (ExposeStrategy.EXPOSE, ExposeStrategy.EXPOSE_WITH_TLS)
    if routing is not None and (routing.domain or routing.path) and not exposed:
        lines.append("routing: not used, the workload is not exposed (set expose to get an Ingress)")
    external = [p for p in workload.ports if p.external]
    if external:
        lines.append(
            "ports[].external "
            + ", ".join(f"{p.external}->{p.internal}" for p in external)
            + ": not honoured on Kubernetes; the Service publishes the internal port in the "
            "cluster (use expose/routing or crane.useLoadBalancer)"
        )
    if workload.port_ranges:
        lines.append(
            "portRanges[].external: not honoured on Kubernetes; the Service publishes the internal "
            "range in the cluster"
        )
    return lines
