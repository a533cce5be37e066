"""Signals to ``berth agent`` as a process during a long in-flight deploy (memory runtime whose
deploys take a minute): the first SIGTERM starts a graceful drain, a second SIGTERM forces a
prompt exit with the defined code 130; a platform-initiated stop followed by ONE signal (what
Kubernetes does after the agent scaled itself down) still drains and exits 0."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

from fakeplatform import FakePlatform, PlatformServer
from waiting import scaled, wait_event

from berth.agent.cli import EXIT_FORCED
from berth.proto import agent_pb2

LAUNCHER = Path(__file__).with_name("slow_memory_agent.py")
DEPLOY_S = "60"


def _env(tmp_path: Path, token: str, grace: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BERTH_", "GRPC_", "DEBUG"))}
    env.update(
        {
            "GRPC_TOKEN": token,
            "DEBUG": "true",
            "INTERNAL_MOUNT_PATH": str(tmp_path / "data"),
            "DATA_MOUNT_PATH": str(tmp_path / "data"),
            "BERTH_RUNTIME": "memory",
            "BERTH_HEALTH_SOCKET": str(tmp_path / "health.sock"),
            "BERTH_LOG_FORMAT": "json",
            "BERTH_SHUTDOWN_GRACE": grace,
            "SLOW_DEPLOY_S": DEPLOY_S,
        }
    )
    return env


def _deploy(deployment_id: str) -> agent_pb2.AgentCommand:
    workload = agent_pb2.DeployWorkloadRequest(
        id="w-web", imageName="busybox", tag="1", common=agent_pb2.CommonContainerConfig(name="web")
    )
    return agent_pb2.AgentCommand(
        deploy=agent_pb2.DeployRequest(id=deployment_id, prefix="sig", requests=[workload])
    )


async def _start(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(LAUNCHER),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _deploy_in_flight(platform: FakePlatform) -> None:
    await platform.wait_accepted(within_s=20)
    await platform.send(_deploy("long"))
    stream = await platform.wait_stream("DeploymentStatus", within_s=10)
    # "Deploying container" is logged right before the runtime's minute-long wait.
    await platform.wait_for(
        lambda: any(line.startswith("Deploying") for m in stream.messages for line in m.log)
    )


async def _still_running_after(process: asyncio.subprocess.Process, seconds: float) -> bool:
    try:
        await asyncio.wait_for(asyncio.shield(process.wait()), seconds)
    except TimeoutError:
        return True
    return False


async def test_second_sigterm_during_long_deploy_forces_a_prompt_exit_130(tmp_path: Path) -> None:
    async with PlatformServer() as server:
        platform = server.platform
        process = await _start(_env(tmp_path, platform.issue_connection_token(), "30s"))
        output = asyncio.ensure_future(process.communicate())
        try:
            await _deploy_in_flight(platform)
            process.send_signal(signal.SIGTERM)
            # The first signal drains: the deploy may use the 30 s grace, so the agent waits.
            assert await _still_running_after(process, 1.0)
            forced_at = time.monotonic()
            process.send_signal(signal.SIGTERM)
            out, err = await wait_event(output, 10, "the agent process to exit")
            took_s = time.monotonic() - forced_at
        finally:
            if process.returncode is None:
                process.kill()
                await output
    print(f"second SIGTERM -> exit in {took_s * 1000:.0f} ms")
    assert process.returncode == EXIT_FORCED, err.decode()[-2000:]
    assert took_s < scaled(3.0)  # prompt, not the 30 s grace; wall clock, so a busy machine scales it
    assert b"Traceback" not in out + err
    assert b'"event": "agent_draining"' in err


async def test_one_signal_after_close_shutdown_still_drains_and_exits_0(tmp_path: Path) -> None:
    async with PlatformServer() as server:
        platform = server.platform
        process = await _start(_env(tmp_path, platform.issue_connection_token(), "1.5s"))
        output = asyncio.ensure_future(process.communicate())
        try:
            await _deploy_in_flight(platform)
            await platform.send(
                agent_pb2.AgentCommand(close=agent_pb2.CloseConnectionRequest(reason=agent_pb2.SHUTDOWN))
            )
            # the close reaches the agent before the signal; nothing outside the process marks
            # the moment, and a signal that arrives first is the other test's case
            await asyncio.sleep(0.3)
            process.send_signal(signal.SIGTERM)  # the orchestrator stopping the scaled-down pod
            out, err = await wait_event(output, 15, "the agent process to exit")
        finally:
            if process.returncode is None:
                process.kill()
                await output
    assert process.returncode == 0, err.decode()[-2000:]
    assert b"Traceback" not in out + err
    assert b'"event": "agent_stopped"' in err
