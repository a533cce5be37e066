"""Lanes, the global bound, CommandError mapping, crash containment and the runtime-backed handlers
awaited only by the commands that need them, with a recording link."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from waiting import wait_for

from berth.agent import commands as cmd
from berth.agent.commands import CallbackKind, DeploymentMessage
from berth.agent.credentials import AgentKey, FileCredentialStore
from berth.agent.dispatcher import Dispatcher
from berth.agent.handlers import (
    CallbackHandler,
    DeployHandler,
    Handlers,
    LifecycleHandler,
    LogStreamHandler,
    StateWatchHandler,
)
from berth.agent.handlers.deploy import DeploymentReporter
from berth.agent.metrics import AgentMetrics
from berth.agent.tokens import TokenKeeper
from berth.model import (
    CloseReason,
    ContainerOperation,
    ContainerRef,
    ContainerState,
    LogLevel,
    PrefixTarget,
    Target,
)
from berth.runtimes.base import SelfUpdater
from berth.runtimes.memory import MemoryRuntime


class RecordingStream:
    def __init__(self, accept: int = 10_000) -> None:
        self.items: list[Any] = []
        self.accept = accept
        self.closes = 0
        self._completed = asyncio.Event()

    async def send(self, item: Any) -> bool:
        if len(self.items) >= self.accept:
            self._completed.set()
            return False
        self.items.append(item)
        return True

    async def close(self) -> None:
        self.closes += 1

    @property
    def completed_by_platform(self) -> bool:
        return self._completed.is_set()

    async def wait_completed(self) -> None:
        await self._completed.wait()


class RecordingLink:
    def __init__(self) -> None:
        self.answers: list[tuple[str, Any]] = []
        self.streams: list[RecordingStream] = []

    async def secret_list(self, target: Target, public_key: str, keys: Sequence[str]) -> None:
        self.answers.append(("secret_list", (target, list(keys))))

    async def containers_deleted(self, target: Target | None) -> None:
        self.answers.append(("deleted", target))

    async def container_log(self, ref: ContainerRef, lines: Sequence[str]) -> None:
        self.answers.append(("log", (ref, list(lines))))

    async def container_inspect(self, ref: ContainerRef, data: str) -> None:
        self.answers.append(("inspect", ref))

    async def command_error(
        self, kind: CallbackKind, target: Target | None, status: int, message: str
    ) -> None:
        self.answers.append(("error", (kind, target, status, message)))

    async def token_replaced(self) -> None:
        self.answers.append(("token_replaced", None))

    async def abort_update(self, error: str) -> None:
        self.answers.append(("abort_update", error))

    async def _stream(self) -> RecordingStream:
        stream = RecordingStream()
        self.streams.append(stream)
        return stream

    async def open_deployment_status(self, deployment_id: str) -> RecordingStream:
        return await self._stream()

    async def open_container_state(self, prefix: str) -> RecordingStream:
        return await self._stream()

    async def open_log_stream(self, ref: ContainerRef) -> RecordingStream:
        return await self._stream()


class SlowRuntime(MemoryRuntime):
    """Records overlapping start() calls."""

    def __init__(self) -> None:
        super().__init__()
        self.active = 0
        self.peak = 0
        self.order: list[str] = []
        self.release = asyncio.Event()

    async def start(self, ref: ContainerRef) -> None:
        self.active += 1
        self.peak = max(self.peak, self.active)
        self.order.append(f"begin {ref.key}")
        await self.release.wait()
        self.order.append(f"end {ref.key}")
        self.active -= 1

    async def inspect(self, ref: ContainerRef) -> str:
        if ref.name == "crash":
            raise RuntimeError("bug in the runtime")
        return await super().inspect(ref)


class Exits:
    def __init__(self) -> None:
        self.requests: list[int] = []

    def request_exit(self, code: int, reason: str) -> None:
        self.requests.append(code)


async def no_updater() -> SelfUpdater | None:
    return None


def _parts(tmp_path: Path, runtime: MemoryRuntime, link: RecordingLink) -> tuple[LifecycleHandler, Handlers]:
    from fakeplatform import mint_token

    store = FileCredentialStore(tmp_path)
    key = AgentKey.load_or_create(store)
    keeper = TokenKeeper.select(store, mint_token(iss="p:1", sub="n"))
    handlers = Handlers(
        deploy=DeployHandler(runtime, key, link),
        state=StateWatchHandler(runtime, link),
        log_stream=LogStreamHandler(runtime, link),
        callbacks=CallbackHandler(runtime, link, key.public_key),
    )
    return LifecycleHandler(keeper, link, Exits(), no_updater), handlers


def _dispatcher(tmp_path: Path, runtime: MemoryRuntime, link: RecordingLink, bound: int = 64) -> Dispatcher:
    lifecycle, handlers = _parts(tmp_path, runtime, link)
    return Dispatcher(lifecycle, handlers, link, max_concurrent=bound)


async def _settle(runtime: SlowRuntime, begun: int) -> None:
    await wait_for(
        lambda: len([o for o in runtime.order if o.startswith("begin")]) >= begun,
        5,
        f"{begun} commands to begin",
        interval_s=0,  # only the lanes need to run
    )


async def test_same_container_in_order_different_containers_in_parallel(tmp_path: Path) -> None:
    runtime = SlowRuntime()
    link = RecordingLink()
    dispatcher = _dispatcher(tmp_path, runtime, link)
    for name in ("a", "a", "b"):
        await dispatcher.dispatch(cmd.ContainerCommand(ContainerRef("p", name), ContainerOperation.START))
    await _settle(runtime, 2)
    assert sorted(runtime.order) == ["begin p-a", "begin p-b"]
    runtime.release.set()
    await dispatcher.drain(5)
    assert runtime.order.index("end p-a") < runtime.order.index("begin p-a", 1)
    assert runtime.peak == 2


async def test_global_bound_limits_work_in_flight(tmp_path: Path) -> None:
    runtime = SlowRuntime()
    dispatcher = _dispatcher(tmp_path, runtime, RecordingLink(), bound=2)
    for name in "abcde":
        await dispatcher.dispatch(cmd.ContainerCommand(ContainerRef("p", name), ContainerOperation.START))
    await _settle(runtime, 2)
    for _ in range(20):
        await asyncio.sleep(0)
    assert runtime.active == 2
    runtime.release.set()
    await dispatcher.drain(5)
    assert runtime.peak == 2
    assert len([o for o in runtime.order if o.startswith("end")]) == 5


async def test_crashing_handler_answers_internal_error_and_keeps_going(tmp_path: Path) -> None:
    runtime = SlowRuntime()
    link = RecordingLink()
    dispatcher = _dispatcher(tmp_path, runtime, link)
    await dispatcher.dispatch(cmd.Inspect(ContainerRef("p", "crash")))
    await dispatcher.dispatch(cmd.Inspect(ContainerRef("p", "missing")))
    await dispatcher.dispatch(cmd.ListSecrets(PrefixTarget("p")))
    await dispatcher.drain(5)
    errors = [a[1] for a in link.answers if a[0] == "error"]
    assert (
        CallbackKind.CONTAINER_INSPECT,
        ContainerRef("p", "crash"),
        13,
        "internal agent error (RuntimeError)",
    ) in errors
    assert any(e[2] == 5 and e[1] == ContainerRef("p", "missing") for e in errors)
    assert ("secret_list", (PrefixTarget("p"), [])) in link.answers


async def test_drain_cancels_work_that_overruns_the_grace(tmp_path: Path) -> None:
    runtime = SlowRuntime()
    dispatcher = _dispatcher(tmp_path, runtime, RecordingLink())
    await dispatcher.dispatch(cmd.ContainerCommand(ContainerRef("p", "a"), ContainerOperation.START))
    await _settle(runtime, 1)
    await dispatcher.drain(0.05)
    assert dispatcher.in_flight == 0
    await dispatcher.dispatch(cmd.ContainerCommand(ContainerRef("p", "b"), ContainerOperation.START))
    assert dispatcher.in_flight == 0  # intake stopped


async def test_lifecycle_commands_never_wait_for_the_runtime_backed_handlers(tmp_path: Path) -> None:
    """A fresh install's replaceToken (and a close) is served while the setup that builds the
    runtime has not even started; the next runtime command starts it, waits for it and is served,
    and every command is counted and logged by the dispatcher alike."""
    from fakeplatform import mint_token

    runtime = MemoryRuntime()
    link = RecordingLink()
    lifecycle, handlers = _parts(tmp_path, runtime, link)
    setups: list[str] = []
    built = asyncio.Event()

    async def setup() -> Handlers:
        setups.append("called")
        await built.wait()
        return handlers

    metrics = AgentMetrics()
    dispatcher = Dispatcher(lifecycle, setup, link, metrics=metrics)
    await dispatcher.dispatch(cmd.ReplaceToken(mint_token(iss="p:1", sub="n", token_type="connection")))
    await dispatcher.dispatch(cmd.Close(CloseReason.CLOSE))
    assert link.answers == [("token_replaced", None)]
    assert lifecycle.keeper.current.type == "connection"
    assert setups == []
    assert metrics.count("replace_token", "replaced") == 1
    assert metrics.count("close", "ignored") == 1

    first = asyncio.create_task(dispatcher.dispatch(cmd.ListSecrets(PrefixTarget("p"))), name="first")
    await wait_for(lambda: setups, 5, "the setup to be awaited", interval_s=0)
    assert not first.done()  # the next command is read once the handlers are built
    built.set()
    await first
    await dispatcher.drain(5)
    assert ("secret_list", (PrefixTarget("p"), [])) in link.answers
    assert setups == ["called"]
    assert metrics.count("list_secrets", "answered") == 1


@pytest.mark.parametrize("capacity", [3])
async def test_reporter_drops_logs_beyond_capacity_and_coalesces_progress(capacity: int) -> None:
    stream = RecordingStream()
    reporter = DeploymentReporter(stream, capacity=capacity)
    for index in range(10):
        await reporter.log(LogLevel.INFO, f"line {index}")
    for fraction in (0.1, 0.5, 0.9):
        await reporter.progress("w", "Pulling", fraction)
    sender = asyncio.create_task(reporter.run_sender(), name="sender")
    await reporter.instance("w", ContainerState.RUNNING, "running")  # waits for room, never dropped
    reporter.finish_sending()
    await sender
    assert reporter.dropped == 7
    kinds = [m for m in stream.items if isinstance(m, DeploymentMessage)]
    progress = [m.progress.fraction for m in kinds if m.progress is not None]
    assert progress == [0.9]
    assert kinds[-1].instance is not None


async def test_reporter_stops_when_the_platform_completed_the_call() -> None:
    stream = RecordingStream(accept=1)
    reporter = DeploymentReporter(stream)
    await reporter.log(LogLevel.INFO, "one")
    await reporter.log(LogLevel.INFO, "two")
    reporter.finish_sending()
    await reporter.run_sender()
    assert reporter.platform_done
    await reporter.log(LogLevel.INFO, "three")
    await reporter.instance("w", ContainerState.RUNNING, "x")
    assert len(stream.items) == 1
