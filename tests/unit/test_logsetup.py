from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog

from berth.logsetup import configure_logging


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def test_json_lines_with_bound_context_and_redaction() -> None:
    out = io.StringIO()
    configure_logging("json", "info", stream=out)
    log = structlog.get_logger("test")
    with structlog.contextvars.bound_contextvars(command="deploy"):
        log.info("deploy_finished", token="eyJ-secret", outcome="successful")
    log.debug("hidden")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["event"] == "deploy_finished"
    assert event["command"] == "deploy"
    assert event["token"] == "***"
    assert event["level"] == "info" and "timestamp" in event


def test_auto_is_json_when_not_a_tty() -> None:
    out = io.StringIO()
    configure_logging("auto", "debug", stream=out)
    structlog.get_logger("test").debug("visible")
    assert json.loads(out.getvalue())["event"] == "visible"
