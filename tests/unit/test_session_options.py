from __future__ import annotations

from pathlib import Path

import pytest

from berth.agent.session import PlatformChannel, reconnect_backoff
from berth.errors import ConfigError
from berth.settings import ConnectionSettings, load_agent_settings


def test_keepalive_is_never_below_30_s_and_messages_are_capped() -> None:
    options = dict(PlatformChannel(ConnectionSettings(keepalive_s=5.0))._options("platform:443"))
    assert options["grpc.keepalive_time_ms"] == 30_000
    assert options["grpc.keepalive_timeout_ms"] == 5_000
    assert options["grpc.keepalive_permit_without_calls"] == 1
    assert options["grpc.http2.max_pings_without_data"] == 0
    assert options["grpc.max_send_message_length"] == 4 * 1024 * 1024
    assert "grpc.ssl_target_name_override" not in options


def test_dial_override_keeps_the_tls_name_of_iss() -> None:
    channel = PlatformChannel(ConnectionSettings(dial_override="10.0.0.5:5000"))
    assert (
        dict(channel._options("platform.example.com:443"))["grpc.ssl_target_name_override"]
        == "platform.example.com"
    )


def test_settings_clamp_keepalive_and_tls_is_the_default(tmp_path: Path) -> None:
    settings = load_agent_settings({"GRPC_KEEPALIVE": "10s", "INTERNAL_MOUNT_PATH": str(tmp_path)})
    assert settings.connection.keepalive_s == 30.0
    assert settings.connection.allow_plaintext is False
    assert load_agent_settings({"DEBUG": "true"}).connection.allow_plaintext is True


def test_grpc_reconnects_never_outpace_or_outlast_the_sessions_policy() -> None:
    options = dict(PlatformChannel(ConnectionSettings(backoff_max_s=4.0))._options("platform:443"))
    assert options["grpc.use_local_subchannel_pool"] == 1  # a new channel starts afresh
    assert options["grpc.initial_reconnect_backoff_ms"] == 4_000
    assert options["grpc.max_reconnect_backoff_ms"] == 4_000
    assert options["grpc.min_reconnect_backoff_ms"] == 4_000  # gRPC: the shortest connect timeout


def test_reconnect_policy_defaults_and_environment(tmp_path: Path) -> None:
    connection = load_agent_settings({"INTERNAL_MOUNT_PATH": str(tmp_path)}).connection
    assert (connection.backoff_initial_s, connection.backoff_max_s, connection.healthy_after_s) == (
        2.0,
        4.0,
        10.0,
    )
    tuned = load_agent_settings(
        {"INTERNAL_MOUNT_PATH": str(tmp_path), "BERTH_BACKOFF_MAX": "8s", "BERTH_HEALTHY_AFTER": "30s"}
    ).connection
    assert (tuned.backoff_max_s, tuned.healthy_after_s) == (8.0, 30.0)


def test_reconnect_policy_settings_are_checked(tmp_path: Path) -> None:
    base = {"INTERNAL_MOUNT_PATH": str(tmp_path)}
    with pytest.raises(ConfigError, match="BERTH_BACKOFF_MAX"):
        load_agent_settings({**base, "BERTH_BACKOFF_MAX": "0s"})
    with pytest.raises(ConfigError, match="BERTH_BACKOFF_INITIAL"):
        load_agent_settings({**base, "BERTH_BACKOFF_INITIAL": "0"})
    low_cap = reconnect_backoff(load_agent_settings({**base, "BERTH_BACKOFF_MAX": "1s"}).connection)
    assert (low_cap.initial_s, low_cap.cap_s) == (1.0, 1.0)
