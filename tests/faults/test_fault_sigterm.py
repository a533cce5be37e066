"""SIGTERM in the middle of a redeployment, to ``berth agent`` as a process on the Docker runtime:
in-flight work finishes (long grace) or is cancelled and reported (short grace) before the
process exits; no container is left under a temporary (set-aside) name."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import docker
import pytest
from kits.fault_kit import (
    TunedPlatformServer,
    containers_named,
    deploy,
    deployment_stream,
    final_status,
    workload,
)
from waiting import wait_event

from berth.proto import common_pb2

pytestmark = [pytest.mark.docker]

WORKLOADS = 8
ASIDE_MARK = "-berth-previous"


def agent_env(data_dir: Path, token: str, grace: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BERTH_", "GRPC_", "DEBUG"))}
    data_dir.mkdir(parents=True, exist_ok=True)
    env.update(
        {
            "GRPC_TOKEN": token,
            "DEBUG": "true",
            "INTERNAL_MOUNT_PATH": str(data_dir),
            "DATA_MOUNT_PATH": str(data_dir),
            "BERTH_RUNTIME": "docker",
            "BERTH_HEALTH_SOCKET": str(data_dir / "health.sock"),
            "BERTH_LOG_FORMAT": "json",
            "BERTH_SHUTDOWN_GRACE": grace,
        }
    )
    return env


@pytest.mark.parametrize("grace", ["30s", "0.3s"])
async def test_sigterm_mid_redeploy_leaves_no_temporary_containers(
    tmp_path: Path, prefix: str, docker_client: docker.DockerClient, grace: str
) -> None:
    async with TunedPlatformServer() as server:
        platform = server.platform
        token = platform.issue_connection_token()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "berth",
            "agent",
            env=agent_env(tmp_path / "data", token, grace),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        output = asyncio.ensure_future(process.communicate())
        try:
            await platform.wait_accepted(within_s=30)
            names = [f"w{i}" for i in range(WORKLOADS)]
            await platform.send(deploy("first", prefix, *(workload(n) for n in names)))
            first = await deployment_stream(platform, "first")
            assert final_status(first) == common_pb2.SUCCESSFUL

            await platform.send(deploy("second", prefix, *(workload(n) for n in names)))
            stream = await platform.wait_stream("DeploymentStatus", count=2)
            await platform.wait_for(
                lambda: any(m.WhichOneof("data") == "instance" for m in stream.messages), within_s=20
            )
            process.send_signal(signal.SIGTERM)
            grace_s = float(grace.rstrip("s"))
            out, err = await wait_event(output, grace_s + 20, "the agent process to exit")
        finally:
            if process.returncode is None:
                process.kill()
                await output
        assert process.returncode == 0, err.decode()[-2000:]
        second = await deployment_stream(platform, "second", within_s=5)
        outcome = final_status(second)
        print(f"grace {grace}: outcome {common_pb2.DeploymentStatus.Name(outcome)}")
        # Reported either way: SUCCESSFUL when it finished in the grace period, else FAILED
        # saying the agent stopped.
        assert outcome in (common_pb2.SUCCESSFUL, common_pb2.FAILED)
        if outcome == common_pb2.FAILED:
            assert "stopped" in " ".join(second.messages[-1].log)
        assert second.half_closed_by_agent
        on_engine = containers_named(docker_client, prefix)
        assert [n for n in on_engine if ASIDE_MARK in n] == []
        assert sorted(on_engine) == sorted(f"{prefix}-{n}" for n in names)
        assert b"Traceback" not in out + err
