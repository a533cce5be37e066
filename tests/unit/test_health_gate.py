"""The health check read from a container's inspect data, and the bound derived from it."""

from __future__ import annotations

from berth.runtimes.docker.health_gate import HealthCheck, health_check_of, last_output_lines
from berth.runtimes.docker.status import health_of


def test_no_check_or_none_means_no_gate() -> None:
    assert health_check_of({"Config": {}}) is None
    assert health_check_of({"Config": {"Healthcheck": {"Test": ["NONE"]}}}) is None


def test_engine_defaults_fill_zero_fields_and_the_bound_covers_every_retry() -> None:
    check = health_check_of({"Config": {"Healthcheck": {"Test": ["CMD-SHELL", "true"], "Retries": 0}}})
    assert check == HealthCheck(test=("CMD-SHELL", "true"))
    assert check.bound_s(10) == 0 + 3 * (30 + 30) + 10


def test_bound_from_nanoseconds() -> None:
    raw = {"Test": ["CMD", "x"], "Interval": 2_000_000_000, "Timeout": 1_000_000_000}
    raw |= {"StartPeriod": 5_000_000_000, "Retries": 2}
    check = health_check_of({"Config": {"Healthcheck": raw}})
    assert check is not None and check.bound_s(1) == 5 + 2 * 3 + 1
    assert "'x' every 2 s" in check.describe()


def test_last_output_lines_are_prefixed_with_the_exit_code() -> None:
    probes = [{"ExitCode": 1, "Output": f"line {i}\nmore"} for i in range(8)]
    lines = last_output_lines({"State": {"Health": {"Log": probes}}}, limit=3)
    assert lines == ["health check exit 1: more", "health check exit 1: line 7", "health check exit 1: more"]


def test_health_from_the_human_status() -> None:
    assert health_of("Up 3 seconds (health: starting)") == "starting"
    assert health_of("Up 3 minutes (healthy)") == "healthy"
    assert health_of("Up 3 minutes (unhealthy)") == "unhealthy"
    assert health_of("Up 3 minutes") == ""
