"""Health-gated deploys: a new container with a health check (the image's ``HEALTHCHECK`` or the
one its create request set) counts as deployed only once the engine reports it healthy.

The bound comes from the check itself: a container can fail its check for ``start_period`` and
then needs ``retries`` failures in a row, each at most ``interval + timeout`` apart, before the
engine calls it unhealthy; ``slack`` covers the engine's own scheduling. A setting may fix the
bound instead. The wait follows the engine's event stream (no polling delay on the way to
SUCCESSFUL), with a slow re-inspection as a safety net against a missed event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import structlog

from berth.errors import PermanentCommandError, RuntimeFailure
from berth.model import ContainerState, LogLevel
from berth.runtimes.base import DeployEvents
from berth.runtimes.common.deadlines import event_set
from berth.runtimes.docker.engine import Engine
from berth.settings import ResilienceSettings

log = structlog.get_logger(__name__)

# the engine's defaults for a check that leaves a field at 0 (nanoseconds in the API)
DEFAULT_INTERVAL_S: Final = 30.0
DEFAULT_TIMEOUT_S: Final = 30.0
DEFAULT_RETRIES: Final = 3
SAFETY_POLL_S: Final = 1.0
OUTPUT_LINES: Final = 10
_NS: Final = 1e9


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """The effective health check of a created container (its ``Config.Healthcheck``)."""

    test: tuple[str, ...]
    interval_s: float = DEFAULT_INTERVAL_S
    timeout_s: float = DEFAULT_TIMEOUT_S
    start_period_s: float = 0.0
    retries: int = DEFAULT_RETRIES

    def bound_s(self, slack_s: float) -> float:
        return self.start_period_s + self.retries * (self.interval_s + self.timeout_s) + slack_s

    def describe(self) -> str:
        command = (
            " ".join(self.test[1:]) if self.test[:1] in (("CMD",), ("CMD-SHELL",)) else " ".join(self.test)
        )
        return (
            f"{command!r} every {self.interval_s:g} s, timeout {self.timeout_s:g} s, "
            f"start period {self.start_period_s:g} s, {self.retries} retries"
        )


def health_check_of(attrs: Mapping[str, Any]) -> HealthCheck | None:
    """The check a container runs, or ``None`` when it has none (or ``NONE`` disables it)."""
    raw = (attrs.get("Config") or {}).get("Healthcheck") or {}
    test = tuple(str(part) for part in raw.get("Test") or ())
    if not test or test[0] == "NONE":
        return None

    def seconds(key: str, default: float) -> float:
        value = raw.get(key) or 0
        return value / _NS if value > 0 else default

    return HealthCheck(
        test=test,
        interval_s=seconds("Interval", DEFAULT_INTERVAL_S),
        timeout_s=seconds("Timeout", DEFAULT_TIMEOUT_S),
        start_period_s=seconds("StartPeriod", 0.0),
        retries=int(raw.get("Retries") or 0) or DEFAULT_RETRIES,
    )


def health_status(attrs: dict[str, Any]) -> str:
    """``starting``, ``healthy``, ``unhealthy``, or ``""`` without a check."""
    return str(((attrs.get("State") or {}).get("Health") or {}).get("Status") or "")


def last_output_lines(attrs: dict[str, Any], limit: int = OUTPUT_LINES) -> list[str]:
    """The last probes' output, newest last, each line prefixed with its exit code."""
    probes = ((attrs.get("State") or {}).get("Health") or {}).get("Log") or []
    lines: list[str] = []
    for probe in probes:
        code = probe.get("ExitCode")
        output = str(probe.get("Output") or "").strip() or "(no output)"
        lines.extend(f"health check exit {code}: {line}" for line in output.splitlines())
    return lines[-limit:]


class HealthGate:
    def __init__(self, engine: Engine, settings: ResilienceSettings) -> None:
        self._engine = engine
        self._settings = settings

    async def wait(
        self, workload_id: str, cid: str, name: str, events: DeployEvents, attrs: dict[str, Any] | None = None
    ) -> float | None:
        """Return once the container is healthy (the seconds it took), ``None`` at once when it
        has no check or the gate is off; raise ``PermanentCommandError`` (after logging the
        check's last output) when it turns unhealthy, exits or misses the bound. ``attrs``: the
        container's inspect data when the caller has it (its configuration is all that is read)."""
        if not self._settings.health_gate:
            return None
        check = health_check_of(attrs if attrs is not None else await self._inspect(name, cid))
        if check is None:
            return None
        bound_s = self._settings.health_timeout_s or check.bound_s(self._settings.health_slack_s)
        await events.log(
            LogLevel.INFO,
            f"Waiting up to {bound_s:g} s for {name} to become healthy: {check.describe()}",
        )
        started = time.monotonic()
        changed = asyncio.Event()
        pump = await self._subscribe(cid, changed)
        try:
            return await self._follow(
                workload_id, cid, name, bound_s=bound_s, started=started, pump=pump, events=events
            )
        finally:
            await pump.aclose()

    async def _follow(
        self,
        workload_id: str,
        cid: str,
        name: str,
        *,
        bound_s: float,
        started: float,
        pump: _EventPump,
        events: DeployEvents,
    ) -> float:
        reported = ""
        deadline = started + bound_s
        changed = pump.changed
        while True:
            changed.clear()  # before the inspection: an event arriving during it is not lost
            attrs = await self._inspect(name, cid)
            status = health_status(attrs) or "starting"
            state = attrs.get("State") or {}
            if pump.exit_code is not None:  # died, and maybe restarted by its restart policy
                await self._fail(
                    name, attrs, events, f"{name} exited with code {pump.exit_code} before it was healthy"
                )
            if status != reported and state.get("Running", False):
                reported = status
                level = LogLevel.ERROR if status == "unhealthy" else LogLevel.INFO
                await events.instance(workload_id, ContainerState.RUNNING, f"running ({status})", level)
            if status == "healthy":
                elapsed = time.monotonic() - started
                await events.log(LogLevel.INFO, f"{name} is healthy after {elapsed:.1f} s")
                log.info("health_gate_passed", container=name, elapsed_s=round(elapsed, 3))
                return elapsed
            if not state.get("Running", False):  # the engine marks a stopped container unhealthy
                code = state.get("ExitCode")
                await self._fail(name, attrs, events, f"{name} exited with code {code} before it was healthy")
            if status == "unhealthy":
                await self._fail(name, attrs, events, f"{name} turned unhealthy")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                await self._fail(name, attrs, events, f"{name} was not healthy within {bound_s:g} s")
            await event_set(changed, min(SAFETY_POLL_S, remaining))

    @staticmethod
    async def _fail(name: str, attrs: dict[str, Any], events: DeployEvents, reason: str) -> None:
        lines = last_output_lines(attrs)
        if lines:
            await events.log(LogLevel.ERROR, f"Last health check output of {name}:", *lines)
        log.warning("health_gate_failed", container=name, reason=reason)
        raise PermanentCommandError(reason)

    async def _inspect(self, name: str, cid: str) -> dict[str, Any]:
        attrs: dict[str, Any] = await self._engine.call(
            f"inspect {name}", lambda c: c.api.inspect_container(cid)
        )
        return attrs

    async def _subscribe(self, cid: str, changed: asyncio.Event) -> _EventPump:
        pump = _EventPump(self._engine, cid, changed)
        try:
            await pump.start()
        except RuntimeFailure as err:  # the safety poll still sees every change, a little later
            log.debug("health_events_unavailable", error=str(err))
        return pump


class _EventPump:
    """Sets ``changed`` on every engine event of one container, from a stream thread."""

    def __init__(self, engine: Engine, cid: str, changed: asyncio.Event) -> None:
        self._engine = engine
        self._cid = cid
        self.changed = changed
        self.exit_code: str | None = None
        self._stream: Any = None
        self._pumping: asyncio.Future[None] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        filters = {"type": "container", "container": self._cid}
        stream = await self._engine.call(
            "subscribe to health events", lambda c: c.api.events(decode=True, filters=filters)
        )
        self._engine.track(stream)
        self._stream = stream

        def died(code: str) -> None:
            self.exit_code = code
            self.changed.set()

        def pump() -> None:
            try:
                for event in stream:
                    if str(event.get("Action") or event.get("status") or "") in ("die", "died"):
                        code = str((event.get("Actor") or {}).get("Attributes", {}).get("exitCode", "?"))
                        loop.call_soon_threadsafe(died, code)
                    else:
                        loop.call_soon_threadsafe(self.changed.set)
            except Exception as err:  # closed by aclose, or the engine went away
                log.debug("health_events_ended", error=str(err))

        self._pumping = asyncio.wrap_future(self._engine.submit_stream(pump))

    async def aclose(self) -> None:
        if self._stream is not None:
            self._engine.untrack(self._stream)
        if self._pumping is not None:
            await asyncio.gather(self._pumping, return_exceptions=True)
