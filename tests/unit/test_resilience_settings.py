"""The resilience settings block: defaults and each variable, errors naming the variable."""

from __future__ import annotations

import pytest

from berth.errors import ConfigError
from berth.settings import ResilienceSettings, load_agent_settings


def test_defaults() -> None:
    assert load_agent_settings({}).docker.resilience == ResilienceSettings()


def test_every_variable_is_read() -> None:
    env = {
        "BERTH_HEALTH_GATE": "false",
        "BERTH_HEALTH_TIMEOUT": "90s",
        "BERTH_HEALTH_SLACK": "500ms",
        "BERTH_DISK_CHECK": "false",
        "BERTH_PRUNE_IMAGES": "false",
        "BERTH_PRUNE_KEEP": "0",
        "BERTH_DESIRED_STATE": "false",
        "BERTH_RECONCILE": "false",
        "BERTH_RECONCILE_AFTER": "2m",
        "BERTH_FIX_DRIFT": "true",
    }
    assert load_agent_settings(env).docker.resilience == ResilienceSettings(
        health_gate=False,
        health_timeout_s=90.0,
        health_slack_s=0.5,
        disk_check=False,
        prune_images=False,
        prune_keep=0,
        desired_state=False,
        reconcile_at_start=False,
        reconcile_after_s=120.0,
        fix_drift=True,
    )


def test_a_negative_keep_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        load_agent_settings({"BERTH_PRUNE_KEEP": "-1"})
    assert caught.value.setting == "BERTH_PRUNE_KEEP"
