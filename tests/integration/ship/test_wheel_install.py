"""Berth as a user installs it: the wheel built from this tree, installed into fresh virtual
environments from the package index (pinned by constraints.txt), never the editable checkout.

- ``pip install berth`` (no extras) is a working Docker node agent: it connects to a platform and
  deploys from the authenticated registry on the real engine. The platform, ``ctl``, the demo and
  the Kubernetes runtime each answer with one line naming the extra to install.
- ``pip install 'berth[platform]'`` serves the platform and its console from the wheel and renders
  every install script (the templates travel in the wheel); an agent of the plain install joins
  it with the generated script's install token.

Both environments are built once per test session (about a minute with a warm pip cache) and the
figures the README quotes (site-packages size, distribution count) are printed as FIGURE lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import httpx
import pytest
from fakeplatform import PlatformServer
from kits.wheel import install_venv
from waiting import scaled, wait_event, wait_for

from berth.extras import EXTRAS
from berth.proto import agent_pb2, common_pb2

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

PREFIX_LABEL = "org.dyrectorio.container.prefix"
REGISTRY = os.environ.get("BERTH_TEST_REGISTRY", "127.0.0.1:5000")
IMAGE = os.environ.get("BERTH_TEST_IMAGE", f"{REGISTRY}/berth/busybox")
USER = os.environ.get("BERTH_TEST_REGISTRY_USER", "berth")
PASSWORD = os.environ.get("BERTH_TEST_REGISTRY_PASSWORD", "berth-registry-pass")
EXTRA_MODULES = {extra: sorted(dists.values()) for extra, dists in EXTRAS.items()}


@dataclass(frozen=True)
class Venv:
    root: Path

    @property
    def berth(self) -> str:
        return str(self.root / "bin" / "berth")

    def python(self, code: str) -> str:
        done = subprocess.run(
            [str(self.root / "bin" / "python"), "-c", code],
            env=_clean_env(),
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout.strip()

    def weight(self) -> tuple[float, int, float, int]:
        """site-packages in MB and its distribution count, with and without pip/setuptools (the
        venv's own tools, not Berth's)."""
        figures = json.loads(
            self.python(
                "import importlib.metadata as m, json, os, sysconfig\n"
                "site = sysconfig.get_paths()['purelib']\n"
                "dists = {d.metadata['Name'].lower(): d for d in m.distributions()}\n"
                "def size(d): return sum(os.path.getsize(d.locate_file(f)) for f in d.files or ())\n"
                "tools = [size(d) for n, d in dists.items() if n in ('pip', 'setuptools')]\n"
                "total = sum(os.path.getsize(os.path.join(p, f)) for p, _, fs in os.walk(site) for f in fs)\n"
                "print(json.dumps([total, len(dists), total - sum(tools), len(dists) - len(tools)]))"
            )
        )
        total, count, own, own_count = figures
        return total / 1e6, count, own / 1e6, own_count


def _clean_env(**values: str) -> dict[str, str]:
    """The test's environment without this checkout's venv or agent settings."""
    drop = ("BERTH_RUNTIME", "BERTH_INSECURE", "GRPC_", "DEBUG", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(values)
    return env


def _make_venv(base: Path, name: str, requirement: str) -> Venv:
    venv = Venv(base / name)
    installed = install_venv(venv.root, requirement, _clean_env(), timeout_s=scaled(600))
    assert installed.returncode == 0, f"pip install {requirement} failed:\n{installed.stderr[-3000:]}"
    where = venv.python("import berth; print(berth.__file__)")
    assert where.startswith(str(venv.root)), f"berth imported from {where}, not from the fresh install"
    mb, count, own_mb, own_count = venv.weight()
    print(
        f"\nFIGURE install weight ({requirement.rpartition('/')[2]}): site-packages {mb:.0f} MB, "
        f"{count} distributions; without pip/setuptools {own_mb:.0f} MB, {own_count}"
    )
    return venv


@pytest.fixture(scope="session")
def venvs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("wheel-venvs")


@pytest.fixture(scope="session")
def plain(venvs_dir: Path, berth_wheel: Path) -> Venv:
    """``pip install berth``: the core, no extras."""
    return _make_venv(venvs_dir, "plain", str(berth_wheel))


@pytest.fixture(scope="session")
def with_platform(venvs_dir: Path, berth_wheel: Path) -> Venv:
    """``pip install 'berth[platform]'``."""
    return _make_venv(venvs_dir, "platform", f"{berth_wheel}[platform]")


def _run(command: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, env=_clean_env(**env), capture_output=True, text=True, timeout=scaled(60), cwd="/"
    )


def _agent_env(data: Path, token: str) -> dict[str, str]:
    return _clean_env(
        GRPC_TOKEN=token,
        BERTH_INSECURE="true",
        INTERNAL_MOUNT_PATH=str(data),
        DATA_MOUNT_PATH=str(data),
        BERTH_HEALTH_SOCKET=str(data / "health.sock"),
        BERTH_LOG_FORMAT="json",
    )


@contextlib.asynccontextmanager
async def _process(
    *command: str, env: dict[str, str], log: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A process of a fresh install, its output in ``log``, stopped with SIGTERM (then killed) when
    the block ends."""
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            *command, env=env, cwd="/", stdout=out, stderr=asyncio.subprocess.STDOUT
        )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await wait_event(process.wait(), 20, f"{command[0]} {command[1]} to stop on SIGTERM")
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()


@pytest.fixture
def prefix() -> Iterator[str]:
    """A container prefix of this test; its containers are removed afterwards."""
    value = f"wh{secrets.token_hex(3)}"
    yield value
    client = docker.from_env()
    try:
        for container in client.containers.list(all=True, filters={"label": f"{PREFIX_LABEL}={value}"}):
            container.remove(force=True)
    finally:
        client.close()


# -- the plain install -----------------------------------------------------------------------------


def test_plain_install_brings_no_extra(plain: Venv) -> None:
    modules = [module for names in EXTRA_MODULES.values() for module in names]
    found = plain.python(
        f"import importlib.util; print([m for m in {modules!r} if importlib.util.find_spec(m)])"
    )
    assert found == "[]"
    help_text = _run([plain.berth, "agent", "--help"])
    assert help_text.returncode == 0, help_text.stderr
    assert help_text.stdout.startswith("usage: berth agent")
    version = _run([plain.berth, "version"])
    assert version.returncode == 0 and version.stdout.startswith("berth "), version.stderr


@pytest.mark.parametrize(
    ("command", "env", "extra"),
    [
        (["platform", "serve", "--data-dir", "/nonexistent", "--advertise", "127.0.0.1:5"], {}, "platform"),
        (["ctl", "nodes", "list"], {}, "platform"),
        (["agent"], {"BERTH_RUNTIME": "kubernetes", "GRPC_TOKEN": "unused"}, "kubernetes"),
        (["init"], {"BERTH_RUNTIME": "kubernetes", "GRPC_TOKEN": "unused"}, "kubernetes"),
    ],
    ids=["platform", "ctl", "kubernetes-agent", "kubernetes-init"],
)
def test_plain_install_names_the_missing_extra(
    plain: Venv, tmp_path: Path, command: list[str], env: dict[str, str], extra: str
) -> None:
    done = _run([plain.berth, *command], INTERNAL_MOUNT_PATH=str(tmp_path), **env)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.count("\n") == 1, done.stderr  # one line, no traceback
    assert f"berth {command[0]}: needs the optional '{extra}' extra" in done.stderr
    assert f"pip install 'berth[{extra}]'" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_plain_install_demo_names_the_missing_extra(plain: Venv) -> None:
    done = _run([str(plain.root / "bin" / "python"), "-m", "berth.demo"])
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stderr.strip() == (
        "python -m berth.demo: needs the optional 'platform' extra (the httpx module is not installed);"
        " install it with: pip install 'berth[platform]'"
    )


async def test_plain_install_is_a_working_docker_agent(plain: Venv, tmp_path: Path, prefix: str) -> None:
    async with PlatformServer() as server:
        platform = server.platform
        env = _agent_env(tmp_path / "data", platform.issue_connection_token())
        log = tmp_path / "agent.log"
        async with _process(plain.berth, "agent", env=env, log=log) as agent:
            connect = await platform.wait_accepted(within_s=30)
            assert connect.info.id == platform.node_id
            registry, _, repository = IMAGE.partition("/")
            workload = agent_pb2.DeployWorkloadRequest(
                id="w1",
                registry=registry,
                imageName=repository,
                tag="1",
                registryAuth=agent_pb2.RegistryAuth(name="test", url=registry, user=USER, password=PASSWORD),
                common=agent_pb2.CommonContainerConfig(
                    name="web",
                    commands=["sh", "-c"],
                    args=['trap "exit 0" TERM; while true; do sleep 0.1; done'],
                ),
            )
            await platform.send(
                agent_pb2.AgentCommand(
                    deploy=agent_pb2.DeployRequest(id="d-wheel", prefix=prefix, requests=[workload])
                )
            )
            status = await platform.wait_stream("DeploymentStatus", within_s=30)
            await wait_event(status.done.wait(), 90, "the deployment status stream to finish")
            final = status.messages[-1]
            assert final.deploymentStatus == common_pb2.SUCCESSFUL, [list(m.log) for m in status.messages]
            await platform.send(
                agent_pb2.AgentCommand(
                    containerState=agent_pb2.ContainerStateRequest(prefix=prefix, oneShot=True)
                )
            )
            state = await platform.wait_stream("ContainerState", within_s=20)
            await wait_event(state.done.wait(), 20, "the container state stream to finish")
            items = [(i.id.prefix, i.id.name, i.state) for m in state.messages for i in m.data]
            assert items == [(prefix, "web", common_pb2.RUNNING)]
        assert agent.returncode == 0, log.read_text()
        output = log.read_text()
        assert '"runtime": "docker"' in output
        assert env["GRPC_TOKEN"] not in output


# -- berth[platform] ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    api: httpx.AsyncClient
    console: str
    grpc_address: str


@contextlib.asynccontextmanager
async def _serve(venv: Venv, data: Path) -> AsyncIterator[Served]:
    """``berth platform serve`` of ``venv`` (plaintext gRPC on loopback) and a client of its API."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    command = [venv.berth, "platform", "serve", "--data-dir", str(data), "--insecure"]
    command += ["--grpc-listen", address, "--advertise", address, "--http-listen", "127.0.0.1:0"]
    log = data.parent / "platform.log"
    async with _process(*command, env=_clean_env(), log=log) as process:

        def serving() -> re.Match[str] | None:
            assert process.returncode is None, f"berth platform serve ended:\n{log.read_text()}"
            return re.search(r"API token[^:]*: (\S+)\n.*API -> (\S+),", log.read_text(), re.S)

        found = await wait_for(serving, 60, "berth platform serve to print its API token and address")
        token, url = found.group(1), found.group(2)
        async with httpx.AsyncClient(
            base_url=f"{url}/api/default", headers={"authorization": f"Bearer {token}"}, timeout=15
        ) as api:
            yield Served(api, url, address)


async def test_platform_extra_serves_scripts_and_console_and_a_plain_agent_joins(
    with_platform: Venv, plain: Venv, tmp_path: Path
) -> None:
    async with _serve(with_platform, tmp_path / "platform") as served:
        api = served.api
        created = await api.post("/nodes", json={"name": "wheel-node"})
        assert created.status_code == 201, created.text
        node_id = created.json()["id"]
        install_token = ""
        for node_type, script_type in [
            ("k8s", "shell"),
            ("docker", "powershell"),
            ("docker", "systemd"),
            ("docker", "shell"),
        ]:
            generated = await api.post(
                f"/nodes/{node_id}/script", json={"type": node_type, "scriptType": script_type}
            )
            assert generated.status_code == 201, (node_type, script_type, generated.text)
            script = await api.get(f"/nodes/{node_id}/script", headers={"authorization": ""})
            assert script.status_code == 200, (node_type, script_type, script.text)
            assert "@@" not in script.text and served.grpc_address in script.text
            if script_type == "shell" and node_type == "docker":
                token_line = next(x for x in script.text.splitlines() if x.startswith("BERTH_TOKEN="))
                install_token = token_line.split("'")[1]

        async with httpx.AsyncClient(base_url=served.console, timeout=15) as browser:
            login = await browser.get("/login")
            assert login.status_code == 200 and "<form" in login.text, login.text[:500]
            css = await browser.get("/static/console.css")
            assert css.status_code == 200 and css.text.strip()

        env = _agent_env(tmp_path / "agent", install_token)
        async with _process(plain.berth, "agent", env=env, log=tmp_path / "agent.log"):

            async def connected() -> bool:
                node = await api.get(f"/nodes/{node_id}")
                return bool(node.json()["status"] == "connected")

            await wait_for(connected, 60, "the plain-install agent to connect to the wheel's platform")
