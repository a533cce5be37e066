"""The network between agent and platform blackholes (packets vanish, no RST): keepalive notices
within its timeout and the agent reconnects once the network heals.

The test makes its own network namespace joined to the host by a veth pair; a byte relay inside
it forwards the agent's connection to the platform (both legs cross the link). The blackhole is an
iptables DROP of everything inside that namespace, so nothing outside the test is touched.

The production keepalive floor is 30 s; by default this test pings every
``BERTH_FAULT_KEEPALIVE_S`` = 2 s (set it to 30 to run with the production floor).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fakeplatform import agent_settings, running_agent
from kits.fault_kit import PING_FRIENDLY, TunedPlatformServer
from waiting import wait_event

import berth.agent.session
from berth.runtimes.memory import MemoryRuntime

KEEPALIVE_S = float(os.environ.get("BERTH_FAULT_KEEPALIVE_S", "2"))
KEEPALIVE_TIMEOUT_S = 2.0
RELAY = Path(__file__).with_name("tcp_relay.py")


def ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True)


@dataclass
class Namespace:
    name: str
    host_ip: str
    inner_ip: str

    def blackhole(self, on: bool) -> None:
        action = "-A" if on else "-D"
        for chain in ("INPUT", "OUTPUT"):
            ip("netns", "exec", self.name, "iptables", action, chain, "-j", "DROP")


@pytest.fixture
async def namespace() -> AsyncIterator[Namespace]:
    tag = secrets.token_hex(3)
    octet = int(tag[:2], 16) % 250 + 1
    name, outer, inner = f"berthbh{tag}", f"vbh{tag}a", f"vbh{tag}b"
    created = Namespace(name, f"10.231.{octet}.1", f"10.231.{octet}.2")
    await asyncio.to_thread(ip, "netns", "add", name)
    try:
        for args in (
            ("link", "add", outer, "type", "veth", "peer", "name", inner),
            ("link", "set", inner, "netns", name),
            ("addr", "add", f"{created.host_ip}/30", "dev", outer),
            ("link", "set", outer, "up"),
            ("netns", "exec", name, "ip", "addr", "add", f"{created.inner_ip}/30", "dev", inner),
            ("netns", "exec", name, "ip", "link", "set", inner, "up"),
            ("netns", "exec", name, "ip", "link", "set", "lo", "up"),
        ):
            await asyncio.to_thread(ip, *args)
        yield created
    finally:
        await asyncio.to_thread(ip, "link", "del", outer, check=False)
        await asyncio.to_thread(ip, "netns", "del", name)


async def start_relay(ns: Namespace, listen_port: int, target_port: int) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        "ip",
        "netns",
        "exec",
        ns.name,
        sys.executable,
        str(RELAY),
        ns.inner_ip,
        str(listen_port),
        ns.host_ip,
        str(target_port),
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    line = await wait_event(process.stdout.readline(), 10, "a line from the process")
    assert line.strip() == b"ready"
    return process


async def test_blackhole_is_detected_by_keepalive_and_healed(
    namespace: Namespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(berth.agent.session, "KEEPALIVE_MIN_S", KEEPALIVE_S)
    keepalive_ms = int(KEEPALIVE_S * 1000)
    options = (
        *PING_FRIENDLY,
        ("grpc.keepalive_time_ms", keepalive_ms),
        ("grpc.keepalive_timeout_ms", int(KEEPALIVE_TIMEOUT_S * 1000)),
    )
    async with TunedPlatformServer(host=namespace.host_ip, options=options) as server:
        platform = server.platform
        relay_port = 40000 + secrets.randbelow(20000)
        process = await start_relay(namespace, relay_port, server.port)
        try:
            settings = agent_settings(
                tmp_path / "data",
                platform.issue_connection_token(),
                keepalive_s=KEEPALIVE_S,
                keepalive_timeout_s=KEEPALIVE_TIMEOUT_S,
                dial_override=f"{namespace.inner_ip}:{relay_port}",
                backoff_initial_s=0.5,
                backoff_max_s=2.0,
            )
            async with running_agent(settings, runtime=MemoryRuntime()) as running:
                await platform.wait_accepted()
                health = running.agent.health
                await wait_event(health.wait_accepted(), 5, "the session to be accepted")
                await asyncio.to_thread(namespace.blackhole, True)
                cut = time.monotonic()
                while health.stream_open:
                    await wait_event(
                        health.changed.wait(),
                        KEEPALIVE_S + KEEPALIVE_TIMEOUT_S + 10,
                        "the session state to change",
                    )
                detected_s = time.monotonic() - cut
                print(f"blackhole detected after {detected_s:.1f} s (keepalive {KEEPALIVE_S:.0f} s)")
                # gRPC pings after keepalive_time of silence and gives up keepalive_timeout later;
                # allow one more ping period for where in its cycle the cut fell.
                assert detected_s <= 2 * KEEPALIVE_S + KEEPALIVE_TIMEOUT_S + 2
                await asyncio.sleep(1.0)  # the cut outlasts its detection a little: a fixed outage
                await asyncio.to_thread(namespace.blackhole, False)
                healed = time.monotonic()
                await platform.wait_accepted(count=2, within_s=2 * KEEPALIVE_S + KEEPALIVE_TIMEOUT_S + 15)
                print(f"reconnected {time.monotonic() - healed:.1f} s after the network healed")
                assert not running.task.done()
        finally:
            process.terminate()
            await process.wait()
