"""The desired-state runtime wrapper and the reconciler on the in-memory runtime: stops are
remembered and not undone, deletes forget, missing workloads are recreated, drift is reported
on the state stream and left alone unless asked."""

from __future__ import annotations

from pathlib import Path

from berth.agent.commands import Deploy
from berth.agent.credentials import AgentKey
from berth.agent.desired import DesiredState, DesiredStateRuntime, Reconciler
from berth.desired_state import DesiredStateStore
from berth.model import ContainerRef, ContainerState, DeploymentSpec, PrefixTarget, WorkloadSpec
from berth.runtimes.memory import MemoryRuntime


def spec(name: str) -> WorkloadSpec:
    return WorkloadSpec(id=f"id-{name}", prefix="demo", name=name, image_name="berth/busybox", tag="1")


async def deployed(tmp_path: Path, *names: str) -> tuple[MemoryRuntime, DesiredState, DesiredStateRuntime]:
    memory = MemoryRuntime()
    desired = DesiredState(DesiredStateStore(tmp_path), AgentKey.generate())
    runtime = DesiredStateRuntime(memory, desired)
    deployment = DeploymentSpec(id="d1", prefix="demo", workloads=tuple(spec(n) for n in names))
    await runtime.deploy(deployment, _Quiet())
    await desired.remember(Deploy(deployment=deployment, encrypted_secrets=()))
    return memory, desired, runtime


class _Quiet:
    async def log(self, *_: object) -> None: ...

    async def instance(self, *_: object, **__: object) -> None: ...

    async def progress(self, *_: object) -> None: ...


async def test_a_stopped_workload_is_not_started_and_a_removed_one_is_recreated(tmp_path: Path) -> None:
    memory, desired, runtime = await deployed(tmp_path, "web", "api")
    await runtime.stop(ContainerRef("demo", "api"))
    await memory.delete(ContainerRef("demo", "web"))  # by hand, behind the agent's back
    counts = await Reconciler(runtime, desired, fix_drift=False).run()
    assert counts == {"recreated": 1, "started": 0, "drifted": 0, "failed": 0}
    states = {i.ref.name: i.state for i in (await runtime.list_state("demo")).items}
    assert states == {"web": ContainerState.RUNNING, "api": ContainerState.EXITED}


async def test_drift_is_reported_on_the_state_stream_and_fixed_only_when_asked(tmp_path: Path) -> None:
    memory, desired, runtime = await deployed(tmp_path, "web")
    await memory.delete(ContainerRef("demo", "web"))
    memory.add_container("demo", "web", image="berth/busybox", tag="2")
    (item,) = (await runtime.list_state("demo")).items
    assert item.reason == "drift: image berth/busybox:2, deployed berth/busybox:1"
    assert (await Reconciler(runtime, desired, fix_drift=False).run())["drifted"] == 1
    assert (await runtime.list_state("demo")).items[0].image_tag == "2"
    await Reconciler(runtime, desired, fix_drift=True).run()
    assert (await runtime.list_state("demo")).items[0].image_tag == "1"


async def test_deleting_the_prefix_forgets_it(tmp_path: Path) -> None:
    _, desired, runtime = await deployed(tmp_path, "web")
    await runtime.delete(PrefixTarget("demo"))
    assert desired.snapshot == {}
    assert not (tmp_path / "desired" / "demo.json").exists()
