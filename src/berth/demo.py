"""``make demo``: the platform, a node, a local agent and a small stack, end to end.

Brings up (as background processes) ``berth platform serve`` with TLS and ``berth agent`` with
the node's install token, deploys a web server and a process that logs from the private registry,
shows the containers and a few seconds of live logs, then prints how to go on and how to tear
down. Re-runnable: a previous demo is torn down first. ``python -m berth.demo down`` tears down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from berth.extras import missing_extra_message

try:
    from berth.ctl.cli import print_containers
    from berth.ctl.client import ApiError, PlatformClient
    from berth.ctl.deploy import deploy_stack
    from berth.ctl.stack import Stack
except ModuleNotFoundError as err:  # the demo runs the platform and its client: berth[platform]
    message = missing_extra_message("python -m berth.demo", err)
    if message is None:
        raise
    sys.exit(message)

DEMO_DIR = Path(os.environ.get("BERTH_DEMO_DIR", "/var/tmp/berth-demo"))
PREFIX = "berth-demo"
NODE_NAME = "demo-node"
LIVE_LOG_S = 5.0
STARTUP_TIMEOUT_S = 30.0
T0 = time.monotonic()


def say(line: str = "") -> None:
    print(line, flush=True)


def _elapsed() -> str:
    return f"{time.monotonic() - T0:5.1f}s"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _berth(*args: str) -> list[str]:
    return [sys.executable, "-m", "berth", *args]


def _spawn(command: list[str], log_file: Path, env: dict[str, str] | None = None) -> int:
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    return process.pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop_pids(pids: list[int]) -> None:
    """SIGTERM to all, then wait for all (SIGKILL after 10 s)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _state_file() -> Path:
    return DEMO_DIR / "demo.json"


async def teardown(quiet: bool = False) -> None:
    """Deletes the demo's containers through the platform, stops its processes, removes its folder."""
    if not _state_file().is_file():
        if not quiet:
            say("no demo is running")
        return
    state = json.loads(_state_file().read_text())
    try:
        async with PlatformClient(state["url"], state["token"], timeout_s=10) as client:
            await client.delete_prefix(state["node_id"], PREFIX)
            if not quiet:
                say(f"deleted the containers of prefix {PREFIX}")
    except (ApiError, KeyError) as err:
        say(f"could not delete the demo containers through the platform ({err})")
    await asyncio.to_thread(_stop_pids, [int(state[k]) for k in ("agent_pid", "platform_pid") if k in state])
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    if not quiet:
        say("demo platform and agent stopped, demo folder removed")


def demo_stack(registry: str, user: str, password: str, web_port: int) -> Stack:
    image = os.environ.get("BERTH_TEST_IMAGE", f"{registry}/berth/busybox").removeprefix(f"{registry}/")
    return Stack.model_validate(
        {
            "node": NODE_NAME,
            "prefix": PREFIX,
            "registries": [{"name": "demo-registry", "url": registry, "user": user, "password": password}],
            "secrets": {"GREETING": "hello from an encrypted secret"},
            "instances": [
                {
                    "image": image,
                    "tag": "1",
                    "registry": "demo-registry",
                    "config": {
                        "common": {
                            "name": "web",
                            "commands": ["sh", "-c"],
                            "args": [
                                "mkdir -p /www && echo 'Hello from Berth' > /www/index.html && "
                                "trap 'exit 0' TERM; httpd -f -v -p 8080 -h /www & wait $!"
                            ],
                            "ports": [{"internal": 8080, "external": web_port}],
                        },
                        "dagent": {"restartPolicy": "UNLESS_STOPPED"},
                    },
                },
                {
                    "image": image,
                    "tag": "1",
                    "registry": "demo-registry",
                    "config": {
                        "common": {
                            "name": "logger",
                            "commands": ["sh", "-c"],
                            "args": [
                                "trap 'exit 0' TERM; i=0; while true; do i=$((i+1)); "
                                'echo "tick $i: $GREETING"; sleep 1 & wait $!; done'
                            ],
                        },
                        "dagent": {"restartPolicy": "UNLESS_STOPPED"},
                    },
                },
            ],
        }
    )


async def _wait_for(description: str, check: Any, timeout_s: float = STARTUP_TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = await check()
            if result:
                return result
        except (ApiError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{description} did not happen within {timeout_s:.0f} s")
        await asyncio.sleep(0.1)


async def run() -> int:
    if _state_file().is_file():
        say(f"[{_elapsed()}] tearing down the previous demo")
    await teardown(quiet=True)
    await asyncio.to_thread(DEMO_DIR.mkdir, parents=True, mode=0o700)
    registry = os.environ.get("BERTH_TEST_REGISTRY", "127.0.0.1:5000")
    user = os.environ.get("BERTH_TEST_REGISTRY_USER", "berth")
    password = os.environ.get("BERTH_TEST_REGISTRY_PASSWORD", "berth-registry-pass")
    grpc_port, http_port, web_port = _free_port(), _free_port(), _free_port()
    url = f"http://127.0.0.1:{http_port}"
    data = DEMO_DIR / "platform"

    say(f"[{_elapsed()}] starting the platform (gRPC with TLS on 127.0.0.1:{grpc_port}, API on {url})")
    platform_pid = _spawn(
        _berth(
            "platform",
            "serve",
            "--data-dir",
            str(data),
            "--grpc-listen",
            f"127.0.0.1:{grpc_port}",
            "--http-listen",
            f"127.0.0.1:{http_port}",
            "--advertise",
            f"127.0.0.1:{grpc_port}",
        ),
        DEMO_DIR / "platform.log",
    )
    state: dict[str, Any] = {"platform_pid": platform_pid, "url": url}
    _state_file().write_text(json.dumps(state))
    token_file = data / "api-token"
    await _wait_for("the platform start", lambda: asyncio.to_thread(token_file.is_file))
    token = token_file.read_text().strip()
    state["token"] = token
    async with PlatformClient(url, token) as client:

        async def api_ready() -> bool:
            return isinstance(await client.nodes(), list)

        await _wait_for("the platform API", api_ready)
        say(f"[{_elapsed()}] console: {url}/ (sign in with the API token in {token_file})")
        node = await client.create_node(NODE_NAME, "the machine running the demo")
        state["node_id"] = node["id"]
        _state_file().write_text(json.dumps(state))
        install = await client.generate_script(node["id"])
        say(f"[{_elapsed()}] node {NODE_NAME} created; its install command would be:")
        say(f"         {install['command']}")
        say(f"[{_elapsed()}] starting a local agent process with the install token")
        agent_dir = DEMO_DIR / "agent"
        agent_dir.mkdir()
        state["agent_pid"] = _spawn(
            _berth("agent"),
            DEMO_DIR / "agent.log",
            env={
                "GRPC_TOKEN": install["installToken"],
                "NAME": NODE_NAME,
                "DATA_MOUNT_PATH": str(agent_dir),
                "BERTH_CA_FILE": str(data / "tls" / "ca.pem"),
                "BERTH_RUNTIME": "docker",
                "BERTH_HEALTH_SOCKET": str(DEMO_DIR / "agent-health.sock"),
                "BERTH_LOG_FORMAT": "json",
            },
        )
        _state_file().write_text(json.dumps(state))

        async def connected() -> bool:
            return bool((await client.node(node["id"]))["status"] == "connected")

        await _wait_for("the agent connection", connected)
        say(f"[{_elapsed()}] agent connected (install token exchanged for a connection token)")
        say(f"[{_elapsed()}] deploying the demo stack from the private registry {registry}")
        status, _ = await deploy_stack(client, demo_stack(registry, user, password, web_port), say)
        if status != "successful":
            say("the deployment failed; see the events above and " + str(DEMO_DIR / "agent.log"))
            return 1
        say(f"[{_elapsed()}] containers of prefix {PREFIX}:")
        print_containers(await client.containers(node["id"], PREFIX))
        say(f"[{_elapsed()}] live logs of {PREFIX}-logger for {LIVE_LOG_S:.0f} s:")
        await _follow_logs(client, node["id"])
    _next_steps(url, data, web_port)
    return 0


async def _follow_logs(client: PlatformClient, node_id: str) -> None:
    first: float | None = None

    async def _print() -> None:
        nonlocal first
        async for message in client.follow_logs(node_id, PREFIX, "logger", 3):
            if message.get("type") == "log":
                if first is None:
                    first = time.monotonic() - T0
                    say(f"         (first live log line {first:.1f} s after the demo started)")
                say("         " + str(message["line"]).rstrip("\n"))

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(_print(), LIVE_LOG_S)


def _next_steps(url: str, data: Path, web_port: int) -> None:
    ctl = f"{sys.executable} -m berth ctl --url {url} --data-dir {data}"
    say()
    say(f"Console: {url}/  (sign in with the API token: cat {data}/api-token)")
    say()
    say("The demo keeps running. Go on with:")
    say(f"  {ctl} nodes list")
    say(f"  {ctl} containers list {NODE_NAME} --prefix {PREFIX}")
    say(f"  {ctl} logs -f {NODE_NAME} {PREFIX} logger")
    say(f"  {ctl} restart {NODE_NAME} {PREFIX} web")
    say(f"  curl http://127.0.0.1:{web_port}/      (the web server)")
    say(f"  API: {url}/api/default/nodes  (Authorization: Bearer $(cat {data}/api-token))")
    say(f"Logs: {DEMO_DIR}/platform.log, {DEMO_DIR}/agent.log")
    say(f"Tear down: {sys.executable} -m berth.demo down")


def main(argv: list[str]) -> int:
    if argv[:1] == ["down"]:
        asyncio.run(teardown())
        return 0
    try:
        return asyncio.run(run())
    except (TimeoutError, ApiError, OSError) as err:
        say(f"demo failed: {err} (logs in {DEMO_DIR})")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
