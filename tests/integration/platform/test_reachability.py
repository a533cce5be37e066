"""``berth platform serve`` says at start when the address it advertises cannot be reached by
agents in containers or on other machines, and where the console is."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from waiting import wait_event, within


async def test_serve_warns_about_a_loopback_advertise_and_names_the_console(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "berth",
        "platform",
        "serve",
        "--data-dir",
        str(tmp_path / "data"),
        "--advertise",
        "127.0.0.1:0",
        "--grpc-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        banner = ""
        async with within(30, "the console banner and the warning"):
            while "console ->" not in banner:
                banner += (await process.stdout.readline()).decode()
            warning = ""
            while "warning:" not in warning:
                warning = (await process.stderr.readline()).decode()
        assert "console -> http://127.0.0.1:" in banner
        assert "loopback address" in warning and "host networking" in warning
    finally:
        process.send_signal(signal.SIGTERM)
        await wait_event(process.wait(), 30, "the process to exit")
