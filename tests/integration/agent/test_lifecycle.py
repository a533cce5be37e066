"""close reasons, update / AbortUpdate, reconnects, oversized messages, health and metrics."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc
import pytest
from fakeplatform import Harness, PlatformServer, agent_settings, eventually, running_agent
from waiting import wait_event

from berth.agent.health import read_health_socket
from berth.errors import TemporaryCommandError, UpdateRefused
from berth.model import CloseReason, RuntimeInfo
from berth.proto import agent_pb2, common_pb2
from berth.runtimes.memory import MemoryRuntime


@dataclass
class FakeUpdater:
    """A SelfUpdater that records what the agent asked of it."""

    refuse_with: str | None = None
    destruct_answer: bool = True
    begun: list[tuple[str, int]] = field(default_factory=list)
    destructs: int = 0

    async def begin_update(self, tag: str, timeout_s: int) -> None:
        if self.refuse_with:
            raise UpdateRefused(self.refuse_with)
        self.begun.append((tag, timeout_s))

    async def self_destruct(self) -> bool:
        self.destructs += 1
        return self.destruct_answer

    def own_container_name(self) -> str | None:
        return "berth-agent"


def _close(reason: int) -> agent_pb2.AgentCommand:
    return agent_pb2.AgentCommand(close=agent_pb2.CloseConnectionRequest(reason=reason))  # type: ignore[arg-type]


async def test_close_shutdown_exits_zero(harness: Harness) -> None:
    await harness.platform.send(_close(CloseReason.SHUTDOWN))
    assert await harness.running.exit_code() == 0
    assert harness.runtime.closed


async def test_close_revoke_token_deletes_token_and_exits_zero(harness: Harness) -> None:
    (harness.data_dir / "token.jwt").write_text("x")
    await harness.platform.send(_close(CloseReason.REVOKE_TOKEN))
    assert await harness.running.exit_code() == 0
    assert not (harness.data_dir / "token.jwt").exists()


async def test_close_close_reconnects(harness: Harness) -> None:
    await harness.platform.send(_close(CloseReason.CLOSE))
    await harness.platform.end_stream()
    await harness.platform.wait_accepted(count=2)
    assert not harness.running.task.done()


async def test_self_destruct_is_handed_to_the_updater(tmp_path: Path) -> None:
    async with PlatformServer() as server:
        updater = FakeUpdater()
        settings = agent_settings(tmp_path / "d", server.platform.issue_connection_token())
        async with running_agent(settings, runtime=MemoryRuntime(), updater=updater) as running:
            connect = await server.platform.wait_accepted()
            assert connect.info.containerName == "berth-agent"
            await server.platform.send(_close(CloseReason.SELF_DESTRUCT))
            assert await running.exit_code() == 0
            assert updater.destructs == 1


async def test_update_without_updater_aborts_without_token_replaced(harness: Harness) -> None:
    new_token = harness.platform.mint("connection")
    await harness.platform.send(
        agent_pb2.AgentCommand(
            update=agent_pb2.AgentUpdateRequest(tag="1.2", timeoutSeconds=300, token=new_token)
        )
    )
    abort = await harness.platform.wait_unary("AbortUpdate")
    assert abort.message.error
    assert harness.platform.calls("TokenReplaced") == []
    assert not (harness.data_dir / "token.jwt").exists()


async def test_update_with_updater_replaces_token_then_begins(tmp_path: Path) -> None:
    async with PlatformServer() as server:
        platform = server.platform
        old = platform.issue_connection_token()
        updater = FakeUpdater()
        settings = agent_settings(tmp_path / "d", old)
        async with running_agent(settings, runtime=MemoryRuntime(), updater=updater) as running:
            await platform.wait_accepted()
            new_token = platform.mint("connection")
            await platform.send(
                agent_pb2.AgentCommand(
                    update=agent_pb2.AgentUpdateRequest(tag="1.2", timeoutSeconds=300, token=new_token)
                )
            )
            replaced = await platform.wait_unary("TokenReplaced")
            assert replaced.metadata["dyo-node-token"] == old
            await eventually(lambda: updater.begun)
            assert updater.begun == [("1.2", 300)]
            assert (tmp_path / "d" / "token.jwt").read_text() == new_token
            assert running.agent.keeper is not None and running.agent.keeper.current.raw == new_token
            assert platform.calls("AbortUpdate") == []


@pytest.mark.parametrize("problem", ["bad-token", "refused"])
async def test_update_failures_answer_abort_update(tmp_path: Path, problem: str) -> None:
    async with PlatformServer() as server:
        platform = server.platform
        updater = FakeUpdater(
            refuse_with="update failed: image cannot be found" if problem == "refused" else None
        )
        settings = agent_settings(tmp_path / "d", platform.issue_connection_token())
        async with running_agent(settings, runtime=MemoryRuntime(), updater=updater):
            await platform.wait_accepted()
            token = "not-a-jwt" if problem == "bad-token" else platform.mint("connection")
            await platform.send(
                agent_pb2.AgentCommand(
                    update=agent_pb2.AgentUpdateRequest(tag="1.2", timeoutSeconds=300, token=token)
                )
            )
            abort = await platform.wait_unary("AbortUpdate")
            assert abort.message.error[0].isupper()
            if problem == "refused":
                assert abort.message.error == "Update failed: image cannot be found"
            else:
                assert platform.calls("TokenReplaced") == []
                assert "not-a-jwt" not in abort.message.error
            assert updater.begun == []


async def test_reconnects_after_platform_restart(harness: Harness) -> None:
    await harness.running.agent.health.wait_accepted()
    await harness.server.stop()
    await eventually(lambda: not harness.running.agent.health.accepted)
    await harness.server.restart()
    await harness.platform.wait_accepted(count=2, within_s=10)
    await harness.running.agent.health.wait_accepted()
    assert harness.running.agent.session is not None
    assert harness.running.agent.session.attempts >= 2


async def test_oversized_inbound_command_does_not_crash(harness: Harness) -> None:
    huge = agent_pb2.DeployRequest(id="big", prefix="p", releaseNotes="x" * (5 * 1024 * 1024))
    await harness.platform.send(agent_pb2.AgentCommand(deploy=huge))
    await harness.platform.wait_accepted(count=2, within_s=10)
    await harness.platform.send(
        agent_pb2.AgentCommand(
            listSecrets=agent_pb2.ListSecretsRequest(target=common_pb2.ContainerOrPrefix(prefix="p"))
        )
    )
    await harness.platform.wait_unary("SecretList")


async def test_oversized_answers_are_cut_or_refused_clearly(harness: Harness) -> None:
    line = "y" * 1000 + "\n"
    harness.runtime.add_container("p", "chatty", logs=[line] * 6000)
    await harness.platform.send(
        agent_pb2.AgentCommand(
            containerLog=agent_pb2.ContainerLogRequest(
                container=common_pb2.ContainerIdentifier(prefix="p", name="chatty"), tail=6000
            )
        )
    )
    answer = await harness.platform.wait_unary("ContainerLog")
    assert answer.message.ByteSize() < 4 * 1024 * 1024
    assert "older lines left out" in answer.message.logs[0]
    assert answer.message.logs[-1].endswith(f" {line}")  # stamped by the memory runtime
    big = harness.runtime.add_container("p", "fat")
    big.labels.update({f"k{i}": "v" * 1024 for i in range(5000)})
    await harness.platform.send(
        agent_pb2.AgentCommand(
            containerInspect=agent_pb2.ContainerInspectRequest(
                container=common_pb2.ContainerIdentifier(prefix="p", name="fat")
            )
        )
    )
    error = await harness.platform.wait_unary("CommandError")
    assert error.message.containerInspect.status == 13
    assert "4 MiB" in error.message.containerInspect.error


async def test_health_socket_reports_accepted_session(tmp_path: Path) -> None:
    async with PlatformServer() as server:
        platform = server.platform
        settings = agent_settings(tmp_path / "d", platform.issue_connection_token())
        # Hold the first accept back: the agent is dialled but not yet accepted.
        async with running_agent(settings, runtime=MemoryRuntime(), accept_after_s=30.0) as running:
            await platform.wait_accepted()
            await eventually(settings.health_socket.exists)
            assert await asyncio.to_thread(read_health_socket, settings.health_socket) is False
            await platform.send(
                agent_pb2.AgentCommand(
                    containerState=agent_pb2.ContainerStateRequest(prefix="", oneShot=True)
                )
            )
            await running.agent.health.wait_accepted()
            assert await asyncio.to_thread(read_health_socket, settings.health_socket) is True


async def _http_get(port: int, path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = raw.decode().partition("\r\n\r\n")
    return int(head.split(" ")[1]), body


async def test_metrics_endpoint_livez_readyz_metrics(tmp_path: Path) -> None:
    async with PlatformServer() as server:
        platform = server.platform
        settings = agent_settings(
            tmp_path / "d", platform.issue_connection_token(), metrics_address="127.0.0.1:0"
        )
        async with running_agent(settings, runtime=MemoryRuntime()) as running:
            await platform.wait_accepted()
            await eventually(lambda: running.agent.endpoint is not None)
            assert running.agent.endpoint is not None
            port = running.agent.endpoint.port
            assert (await _http_get(port, "/livez"))[0] == 200
            await running.agent.health.wait_accepted()
            assert (await _http_get(port, "/readyz"))[0] == 200
            await platform.send(
                agent_pb2.AgentCommand(
                    containerState=agent_pb2.ContainerStateRequest(prefix="", oneShot=True)
                )
            )
            await platform.wait_stream("ContainerState")
            await eventually(lambda: running.agent.metrics.count("container_state", "sent_once"))
            status, body = await _http_get(port, "/metrics")
            assert status == 200
            assert "berth_agent_session_accepted 1.0" in body
            assert 'berth_agent_commands_total{kind="container_state",outcome="sent_once"} 1.0' in body
            assert (await _http_get(port, "/nope"))[0] == 404
            await server.stop()
            await eventually(lambda: not running.agent.health.accepted)
            assert (await _http_get(port, "/readyz"))[0] == 503


async def test_backoff_resets_after_a_healthy_session(tmp_path: Path) -> None:
    async with PlatformServer() as server:
        platform = server.platform
        failures = {"left": 4}

        def flaky(_: object) -> tuple[grpc.StatusCode, str] | None:
            if failures["left"]:
                failures["left"] -= 1
                return grpc.StatusCode.UNAVAILABLE, "starting up"
            return None

        platform.connect_status_override = flaky
        settings = agent_settings(tmp_path / "d", platform.issue_connection_token(), healthy_after_s=0.2)
        async with running_agent(settings, runtime=MemoryRuntime()) as running:
            await platform.wait_accepted()
            session = running.agent.session
            assert session is not None
            assert session.backoff.failures == 4
            await running.agent.health.wait_accepted()
            await asyncio.sleep(0.3)  # the session must last healthy_after_s
            await platform.end_stream()
            await platform.wait_accepted(count=2)
            assert session.backoff.failures == 1  # reset, then one delay for the ended stream


async def test_shutdown_lets_in_flight_deploy_finish_then_exits(harness: Harness) -> None:
    harness.runtime.deploy_delay_s = 0.5
    workload = agent_pb2.DeployWorkloadRequest(
        id="w1", imageName="img", common=agent_pb2.CommonContainerConfig(name="web")
    )
    await harness.platform.send(
        agent_pb2.AgentCommand(deploy=agent_pb2.DeployRequest(id="d", prefix="p", requests=[workload]))
    )
    stream = await harness.platform.wait_stream("DeploymentStatus")
    harness.running.agent.request_shutdown()
    assert await harness.running.exit_code() == 0
    await wait_event(stream.done.wait(), 5, "the stream to finish")
    assert stream.messages[-1].deploymentStatus == common_pb2.SUCCESSFUL
    assert "p-web" in harness.runtime.containers


async def test_shutdown_cancels_work_that_outlives_the_grace(tmp_path: Path) -> None:
    async with PlatformServer() as server:
        runtime = MemoryRuntime()
        runtime.deploy_delay_s = 30
        settings = replace(
            agent_settings(tmp_path / "d", server.platform.issue_connection_token()), shutdown_grace_s=0.2
        )
        async with running_agent(settings, runtime=runtime) as running:
            await server.platform.wait_accepted()
            workload = agent_pb2.DeployWorkloadRequest(
                id="w1", imageName="img", common=agent_pb2.CommonContainerConfig(name="web")
            )
            await server.platform.send(
                agent_pb2.AgentCommand(
                    deploy=agent_pb2.DeployRequest(id="d", prefix="p", requests=[workload])
                )
            )
            stream = await server.platform.wait_stream("DeploymentStatus")
            running.agent.request_shutdown()
            assert await running.exit_code() == 0
            await wait_event(stream.done.wait(), 5, "the stream to finish")
            last = stream.messages[-1]
            assert last.deploymentStatus == common_pb2.FAILED
            assert "stopped before it finished" in " ".join(last.log)


class _EngineStartingRuntime(MemoryRuntime):
    """The engine answers only from the third preflight on (it was still starting)."""

    def __init__(self) -> None:
        super().__init__()
        self.preflights = 0

    async def preflight(self) -> RuntimeInfo:
        self.preflights += 1
        if self.preflights < 3:
            raise TemporaryCommandError("engine not reachable yet")
        return await super().preflight()


async def test_agent_waits_for_an_engine_that_is_still_starting(tmp_path: Path) -> None:
    async with PlatformServer() as server:
        runtime = _EngineStartingRuntime()
        settings = agent_settings(tmp_path / "data", server.platform.issue_connection_token())
        async with running_agent(settings, runtime=runtime):
            await server.platform.wait_accepted()
        assert runtime.preflights == 3


async def test_shutdown_while_waiting_for_the_engine_exits_cleanly(tmp_path: Path) -> None:
    class NeverUp(MemoryRuntime):
        attempts = 0

        async def preflight(self) -> RuntimeInfo:
            self.attempts += 1
            raise TemporaryCommandError("engine down")

    async with PlatformServer() as server:
        runtime = NeverUp()
        settings = agent_settings(tmp_path / "data", server.platform.issue_connection_token())
        async with running_agent(settings, runtime=runtime) as running:
            await eventually(lambda: runtime.attempts > 0)  # the agent waits for the engine
            running.agent.request_shutdown()
            assert await running.exit_code() == 0
        assert not server.platform.connects
        assert runtime.closed
