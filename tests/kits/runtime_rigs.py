"""The three runtimes behind one test interface, for the runtime contract suite (tests/contract).

A ``Rig`` holds a runtime, the prefix a test works under, and what only the surroundings of a
runtime can do: give a workload it can run, give one whose image the registry does not have, and
make a running workload print lines (the memory runtime's own log, ``docker exec`` writing to the
container's PID 1 output, a kubelet stand-in serving the pod's log). ``EXPECTED`` is the one place
where the runtimes are allowed to differ, each difference with its reason.
"""

from __future__ import annotations

import asyncio
import secrets
import shlex
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from berth.model import (
    ContainerRef,
    ContainerState,
    DockerOptions,
    LogLevel,
    RegistryAuth,
    WorkloadSpec,
    frozen_map,
)
from berth.runtimes.base import Runtime
from berth.runtimes.memory import MemoryRuntime

TEST_LABEL = "io.berth.test"


@dataclass(frozen=True)
class Expectations:
    """What a runtime is expected to do where the runtimes differ, each with its reason."""

    kinds: frozenset[str]  # RuntimeInfo.kind from preflight
    deployed: ContainerState = ContainerState.RUNNING  # right after a successful deploy
    missing_image_fails_the_deploy: bool = True  # else the API accepts it and the node fails the pull
    unfiltered_refs_use_full_names: bool = True  # watching everything: ("", "<prefix>-<name>")
    logs_outlive_a_stop: bool = True  # or a stop removes what printed them
    why: tuple[str, ...] = ()


EXPECTED: dict[str, Expectations] = {
    "memory": Expectations(frozenset({"memory"})),
    "docker": Expectations(frozenset({"docker", "podman"})),
    "kubernetes": Expectations(
        frozenset({"kubernetes"}),
        deployed=ContainerState.WAITING,
        missing_image_fails_the_deploy=False,
        unfiltered_refs_use_full_names=False,
        logs_outlive_a_stop=False,
        why=(
            "deployed: the test cluster has no kubelet or scheduler, pods stay Pending (WAITING)",
            "missing image: the node pulls the image, so a missing one fails there, after the API "
            "server accepted the Deployment (Berth reports it from the pod status)",
            "unfiltered refs: a workload is (namespace, Deployment name) whatever is watched; the "
            "§7 full-name form is Docker's container naming",
            "logs after a stop: a stop scales the Deployment to 0, its pods go and their logs with them",
        ),
    ),
}


@dataclass
class RecordedEvents:
    """The DeployEvents a runtime reports, recorded."""

    logs: list[tuple[LogLevel, str]] = field(default_factory=list)
    instances: list[tuple[str, ContainerState, str, LogLevel]] = field(default_factory=list)
    progress_items: list[tuple[str, str, float]] = field(default_factory=list)

    async def log(self, level: LogLevel, *lines: str) -> None:
        self.logs.extend((level, line) for line in lines)

    async def instance(
        self, workload_id: str, state: ContainerState, reason: str, level: LogLevel = LogLevel.INFO
    ) -> None:
        self.instances.append((workload_id, state, reason, level))

    async def progress(self, workload_id: str, status: str, fraction: float) -> None:
        self.progress_items.append((workload_id, status, fraction))

    def errors(self) -> list[str]:
        logged = [line for level, line in self.logs if level == LogLevel.ERROR]
        return logged + [reason for _, _, reason, level in self.instances if level == LogLevel.ERROR]


class Rig(Protocol):
    name: str
    runtime: Runtime
    prefix: str

    @property
    def expect(self) -> Expectations: ...

    def workload(self, name: str, **changes: Any) -> WorkloadSpec:
        """A workload this runtime can deploy and keep running."""
        ...

    def missing_image(self, name: str) -> WorkloadSpec:
        """A workload whose image the registry does not have."""
        ...

    async def prints(self, ref: ContainerRef, *texts: str) -> None:
        """The running workload writes ``texts`` to its output, one line each."""
        ...

    async def runs_again(self, ref: ContainerRef) -> None:
        """After a restart: the node runs the workload again (a no-op where the engine does it)."""
        ...

    async def stopped(self, ref: ContainerRef) -> None:
        """After a stop: the node has stopped the workload (a no-op where the engine does it)."""
        ...


def _base_workload(prefix: str, name: str) -> WorkloadSpec:
    return WorkloadSpec(id=f"wl-{name}", prefix=prefix, name=name, image_name="berth/busybox", tag="1")


class _RigBase:
    """What the rigs share: their expectations, a missing image, an engine that stops and
    restarts workloads itself."""

    name: str
    prefix: str

    @property
    def expect(self) -> Expectations:
        return EXPECTED[self.name]

    def workload(self, name: str, **changes: Any) -> WorkloadSpec:
        return replace(_base_workload(self.prefix, name), **changes)

    def missing_image(self, name: str) -> WorkloadSpec:
        return self.workload(name, image_name=f"berth/not-in-the-registry-{secrets.token_hex(3)}")

    async def runs_again(self, ref: ContainerRef) -> None:
        pass  # the engine restarts the workload before the restart call returns

    async def stopped(self, ref: ContainerRef) -> None:
        pass  # the engine stops the workload before the stop call returns


class MemoryRig(_RigBase):
    name = "memory"

    def __init__(self) -> None:
        self.runtime = MemoryRuntime()
        self.prefix = f"mc{secrets.token_hex(3)}"

    def missing_image(self, name: str) -> WorkloadSpec:
        workload = super().missing_image(name)
        self.runtime.fail_images.add(workload.image_name)  # the memory runtime's registry lacks it
        return workload

    async def prints(self, ref: ContainerRef, *texts: str) -> None:
        for text in texts:
            self.runtime.append_log(ref, f"{text}\n")


class DockerRig(_RigBase):
    """The real engine and the authenticated registry of tools/testenv.sh."""

    name = "docker"
    SERVE_FOREVER = "trap 'exit 0' TERM; while true; do sleep 0.1; done"

    def __init__(self, runtime: Runtime, client: Any, registry: str, auth: RegistryAuth) -> None:
        self.runtime = runtime
        self.prefix = f"dc{secrets.token_hex(3)}"
        self._client = client
        self._registry = registry
        self._auth = auth

    def workload(self, name: str, **changes: Any) -> WorkloadSpec:
        spec = replace(
            _base_workload(self.prefix, name),
            registry=self._registry,
            registry_auth=self._auth,
            commands=("sh", "-c"),
            args=(self.SERVE_FOREVER,),
            docker=DockerOptions(labels=frozen_map({TEST_LABEL: "1"})),
        )
        return replace(spec, **changes)

    async def prints(self, ref: ContainerRef, *texts: str) -> None:
        script = "; ".join(f"echo {shlex.quote(text)} >/proc/1/fd/1" for text in texts)

        def run() -> None:
            result = self._client.containers.get(ref.key).exec_run(["sh", "-c", script])
            assert result.exit_code == 0, result.output

        await asyncio.to_thread(run)


class KubernetesRig(_RigBase):
    """The real kube-apiserver. There is no kubelet: the rig plays the node (kits.kube_node) where
    a scenario needs one, to run a pod that prints, and to finish a restart or a stop."""

    name = "kubernetes"

    def __init__(self, runtime: Runtime, admin: Any, kubelet: Any, node: str) -> None:
        self.runtime = runtime
        self.prefix = f"bt-kc{secrets.token_hex(3)}"
        self._admin = admin
        self._kubelet = kubelet
        self._node = node
        self._pods: dict[ContainerRef, str] = {}

    async def prints(self, ref: ContainerRef, *texts: str) -> None:
        from kits.kube_node import start_on_node

        pod = self._pods.get(ref)
        if pod is None:
            pod = await asyncio.to_thread(start_on_node, self._admin, ref.prefix, ref.name, self._node)
            self._pods[ref] = pod
        for text in texts:
            self._kubelet.write(pod, text)

    async def runs_again(self, ref: ContainerRef) -> None:
        """The rollout of a restart makes a new pod: run it, and end the old pod's log."""
        from kits.kube_node import start_on_node

        old = self._pods.get(ref)
        skip = {old} if old else set()
        self._pods[ref] = await asyncio.to_thread(
            start_on_node, self._admin, ref.prefix, ref.name, self._node, skip=skip
        )
        if old:
            self._kubelet.end(old)

    async def stopped(self, ref: ContainerRef) -> None:
        """Scaled to 0: the pod this node runs stops and is removed."""
        from kits.kube_node import finish_deletion

        pod = self._pods.pop(ref, None)
        if pod is not None:
            self._kubelet.end(pod)
            await asyncio.to_thread(finish_deletion, self._admin, ref.prefix, pod)
