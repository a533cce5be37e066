"""``berth status``: each prefix's desired state (the last successful deployment Berth keeps)
against what the engine runs, read locally, without the platform. Exit 0 when everything
matches, 1 when something is missing, stopped or drifted, 2 on a configuration error."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TextIO

from berth.agent.desired import DesiredState
from berth.desired_state import DesiredDeployment, DesiredStateStore
from berth.errors import BerthError
from berth.model import ContainerState, ContainerStatus, ExpectedState, StateUpdate
from berth.settings import AgentSettings

EXIT_IN_SYNC = 0
EXIT_DIFFERS = 1
EXIT_CONFIG = 2


async def print_status(settings: AgentSettings, out: TextIO, err: TextIO) -> int:
    from berth.agent.app import build_runtime

    desired = DesiredState(DesiredStateStore(settings.data_dir), None)
    try:
        await desired.load()
    except BerthError as error:
        err.write(f"berth status: {error}\n")
        return EXIT_CONFIG
    if not desired.snapshot:
        out.write(f"No desired state in {settings.data_dir / 'desired'}: nothing was deployed here yet.\n")
        return EXIT_IN_SYNC
    runtime = build_runtime(settings)
    differs = False
    try:
        for prefix, wanted in sorted(desired.snapshot.items()):
            try:
                current = await runtime.list_state(prefix)
            except BerthError as error:
                out.write(f"prefix {prefix}: the engine cannot be asked ({error})\n")
                differs = True
                continue
            for line in _describe(prefix, wanted, current, desired):
                differs = differs or not line.startswith(("prefix", "  ok"))
                out.write(f"{line}\n")
    finally:
        await runtime.aclose()
    return EXIT_DIFFERS if differs else EXIT_IN_SYNC


def _describe(
    prefix: str, wanted: DesiredDeployment, current: StateUpdate, desired: DesiredState
) -> list[str]:
    saved = datetime.fromtimestamp(wanted.saved_at, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    lines = [f"prefix {prefix}: deployment {wanted.deployment.id} (saved {saved})"]
    by_name: dict[str, ContainerStatus] = {item.ref.name: item for item in current.items}
    for workload in wanted.deployment.workloads:
        expected = workload.docker.expected_state or ExpectedState()
        should_run = expected.state in (ContainerState.RUNNING, ContainerState.UNSPECIFIED)
        want = (
            "stopped"
            if workload.name in wanted.stopped
            else ("running" if should_run else expected.state.name.lower())
        )
        image = f"{workload.image_name}:{workload.tag or 'latest'}"
        item = by_name.get(workload.name)
        if item is None:
            verdict, actual = "MISSING", "-"
        else:
            actual = f"{item.state.name.lower()} ({item.reason}) {item.image_name}:{item.image_tag}"
            drift = desired.drift_of(item)
            if drift is not None:
                verdict = "DRIFT"
                actual = f"{actual}; {drift}"
            elif want == "running" and item.state is not ContainerState.RUNNING:
                verdict = "NOT RUNNING"
            else:
                verdict = "ok"
        lines.append(f"  {verdict:<11} {workload.name}: desired {want} {image}; actual {actual}")
    return lines
