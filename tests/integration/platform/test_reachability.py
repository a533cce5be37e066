"""``berth platform serve`` says at start when the address it advertises cannot be reached by
agents in containers or on other machines, and where the console is."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest

from berth.platform.config import PlatformConfig, reachability_warnings


@pytest.mark.parametrize(
    ("advertise", "grpc_listen", "http_listen", "public_url", "expected"),
    [
        ("127.0.0.1:5001", "127.0.0.1:5001", "127.0.0.1:8000", "", ["loopback address"]),
        ("localhost:5001", "0.0.0.0:5001", "127.0.0.1:8000", "", ["loopback address"]),
        ("[::1]:5001", "[::1]:5001", "127.0.0.1:8000", "", ["loopback address"]),
        (
            "0.0.0.0:5001",
            "0.0.0.0:5001",
            "127.0.0.1:8000",
            "http://h:8000",
            ["not an address anyone can dial"],
        ),
        ("10.0.0.5:5001", "127.0.0.1:5001", "0.0.0.0:8000", "", ["gRPC listens only on 127.0.0.1:5001"]),
        ("10.0.0.5:5001", "0.0.0.0:5001", "127.0.0.1:8000", "", ["--public-url"]),
        ("10.0.0.5:5001", "0.0.0.0:5001", "127.0.0.1:8000", "https://berth.example", []),
        ("node.example:5001", "0.0.0.0:5001", "0.0.0.0:8000", "", []),
    ],
)
def test_reachability_warnings(
    advertise: str, grpc_listen: str, http_listen: str, public_url: str, expected: list[str]
) -> None:
    config = PlatformConfig(
        data_dir=Path("/nonexistent"),
        advertise=advertise,
        grpc_listen=grpc_listen,
        http_listen=http_listen,
        public_url=public_url,
    )
    warnings = reachability_warnings(config)
    assert len(warnings) == len(expected), warnings
    for warning, fragment in zip(warnings, expected, strict=True):
        assert fragment in warning


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
        async with asyncio.timeout(30):
            while "console ->" not in banner:
                banner += (await process.stdout.readline()).decode()
            warning = ""
            while "warning:" not in warning:
                warning = (await process.stderr.readline()).decode()
        assert "console -> http://127.0.0.1:" in banner
        assert "loopback address" in warning and "host networking" in warning
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 30)
