"""Guards shared by every test: no leaked asyncio tasks, no blocking calls on the event loop."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections.abc import AsyncIterator

import pytest
from waiting import scaled

# A step of the event loop slower than this fails the test. It is wall-clock time, which a busy
# machine stretches without anything blocking: it scales with the timeouts (tests/waiting.py).
BLOCKING_THRESHOLD_S = scaled(1.0)


class _SlowCallbacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "took" in message and "seconds" in message:
            self.seen.append(message)


@pytest.fixture(autouse=True)
def _event_loop_guards(request: pytest.FixtureRequest) -> None:
    """The guards below for every coroutine test (a plain test runs no event loop: nothing to
    guard, and no loop to start for it)."""
    if inspect.iscoroutinefunction(request.function):
        request.getfixturevalue("_guarded_event_loop")


@pytest.fixture
async def _guarded_event_loop() -> AsyncIterator[None]:
    """Fails a test that leaks tasks or blocks the loop for over a second (asyncio debug mode
    reports every callback slower than ``slow_callback_duration``)."""
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = BLOCKING_THRESHOLD_S
    handler = _SlowCallbacks()
    logging.getLogger("asyncio").addHandler(handler)
    before = set(asyncio.all_tasks())
    try:
        yield
    finally:
        logging.getLogger("asyncio").removeHandler(handler)
    await asyncio.sleep(0)
    leaked = [t for t in asyncio.all_tasks() - before if not t.done() and t is not asyncio.current_task()]
    for task in leaked:
        task.cancel()
    if leaked:
        await asyncio.gather(*leaked, return_exceptions=True)
    assert not leaked, f"tasks leaked by the test: {[t.get_name() for t in leaked]}"
    assert not handler.seen, f"the event loop was blocked: {handler.seen}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """With ``BERTH_TEST_NO_SKIP=1`` (``make test`` sets up every component and sets it), a test
    that skips fails instead: a missing engine, image or tool must not pass unnoticed."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("BERTH_TEST_NO_SKIP") == "1" and not hasattr(report, "wasxfail"):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped where every component must be present (BERTH_TEST_NO_SKIP=1): {reason}"
