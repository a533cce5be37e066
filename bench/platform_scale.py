"""The embedded platform under one large deployment: N instances (default 2,000) to a
memory-runtime agent process. Figures: the time from ``start`` to the recorded final status, and
the worst ``/api/health`` answer while the status stream is being recorded. The platform runs in a
process of its own, so the probe measures what a user would see.

    .venv/bin/python bench/platform_scale.py [--instances 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path

import httpx

Row = tuple[str, float, float, float, str]
READY = re.compile(r"API -> (http[^\s,]+)")


async def _platform(folder: Path) -> tuple[asyncio.subprocess.Process, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "berth", "platform", "serve",
        "--data-dir", str(folder / "platform"),
        "--advertise", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
        "--insecure", "--max-instances", "5000",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert process.stdout is not None
    async with asyncio.timeout(30):
        while True:
            line = (await process.stdout.readline()).decode()
            if not line:
                raise RuntimeError("the platform exited during start")
            ready = READY.search(line)
            if ready:
                url = ready.group(1)
                break
    token = (folder / "platform" / "api-token").read_text().strip()
    return process, url, token


async def measure(instances: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="berth-bench-scale-") as tmp:
        folder = Path(tmp)
        platform, url, token = await _platform(folder)
        agent: asyncio.subprocess.Process | None = None
        try:
            async with httpx.AsyncClient(
                base_url=f"{url}/api/default", headers={"authorization": f"Bearer {token}"}, timeout=30
            ) as api:
                node_id = (await api.post("/nodes", json={"name": "scale"})).json()["id"]
                script = (await api.post(f"/nodes/{node_id}/script", json={"type": "docker"})).json()
                env = {k: v for k, v in os.environ.items() if not k.startswith(("BERTH_", "GRPC_", "DEBUG"))}
                env.update(
                    GRPC_TOKEN=script["installToken"],
                    DEBUG="true",
                    BERTH_RUNTIME="memory",
                    DATA_MOUNT_PATH=str(folder / "agent"),
                    BERTH_HEALTH_SOCKET=str(folder / "health.sock"),
                    BERTH_LOG_LEVEL="warning",
                    BERTH_LOG_FORMAT="json",
                )
                agent = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "berth", "agent", env=env,
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                )  # fmt: skip
                for _ in range(300):
                    if (await api.get(f"/nodes/{node_id}")).json()["status"] == "connected":
                        break
                    await asyncio.sleep(0.1)
                else:
                    raise RuntimeError("the agent did not connect in 30 s")
                body = {
                    "nodeId": node_id,
                    "prefix": "scale",
                    "instances": [
                        {"image": "busybox", "config": {"common": {"name": f"w{i}"}}}
                        for i in range(instances)
                    ],
                }
                deployment_id = (await api.post("/deployments", json=body)).json()["id"]
                started = time.monotonic()
                await api.post(f"/deployments/{deployment_id}/start")
                worst = 0.0
                async with asyncio.timeout(600):
                    while True:
                        probe = time.monotonic()
                        (await api.get(f"{url}/api/health")).raise_for_status()
                        worst = max(worst, time.monotonic() - probe)
                        status = (await api.get(f"/deployments/{deployment_id}", params={})).json()["status"]
                        if status in ("successful", "failed"):
                            break
                        await asyncio.sleep(0.02)
                took = time.monotonic() - started
                final = (await api.get(f"/deployments/{deployment_id}")).json()
                recorded = sum(1 for i in final["instances"] if i["state"] is not None)
                if final["status"] != "successful" or recorded != instances:
                    raise RuntimeError(
                        f"status {final['status']}, {recorded}/{instances} instance states recorded"
                    )
                return took, worst
        finally:
            for process in (agent, platform):
                if process is not None and process.returncode is None:
                    process.send_signal(signal.SIGTERM)
                    await asyncio.wait_for(process.wait(), 30)


def run(instances: int = 2000) -> list[Row]:
    took, worst = asyncio.run(measure(instances))
    return [
        (
            f"platform: {instances}-instance deployment, start -> final status (s)",
            took,
            0.0,
            0.0,
            "successful",
        ),
        ("platform: worst /api/health answer during it (ms)", worst * 1000, 0.0, 0.0, "< 1000 ms"),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--instances", type=int, default=2000)
    args = parser.parse_args()
    rows = run(args.instances)
    for figure, value, *_ in rows:
        print(f"{figure}: {value:.3f}")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
