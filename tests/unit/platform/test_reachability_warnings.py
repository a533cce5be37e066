"""The warnings ``berth platform serve`` prints when the address it advertises cannot be reached by
agents in containers or on other machines (the serve process itself: tests/integration/platform)."""

from __future__ import annotations

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
