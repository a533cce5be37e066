"""The runtimes' one bridge to threads: a full stream pool refuses at once (never queues), and a
slot is held until the blocking function has really returned, cancelled or not."""

from __future__ import annotations

import asyncio
import threading

import pytest
from waiting import wait_event, wait_for

from berth.errors import TemporaryCommandError
from berth.runtimes.common.bridge import FULL_RETRY_AFTER_S, ThreadBridge


def blocked_until(release: threading.Event, started: threading.Event | None = None) -> str:
    if started is not None:
        started.set()
    release.wait(10)
    return "released"


async def test_one_shot_calls_run_in_a_thread_and_return_their_result() -> None:
    bridge = ThreadBridge("test", 1)
    loop_thread = threading.get_ident()
    assert await bridge.call(threading.get_ident) != loop_thread
    assert await bridge.call(lambda a, b=0: a + b, 2, b=3) == 5


async def test_a_full_stream_pool_refuses_at_once_with_a_retryable_error() -> None:
    bridge = ThreadBridge("test", 2)
    release = threading.Event()
    streams = [
        asyncio.create_task(bridge.stream(blocked_until, release), name=f"stream-{n}") for n in range(2)
    ]
    await asyncio.sleep(0)
    try:
        with pytest.raises(
            TemporaryCommandError, match=r"too many open test log follows and watches \(max 2\)"
        ) as err:
            await bridge.stream(blocked_until, release)
        assert err.value.retry_after_s == FULL_RETRY_AFTER_S
        # one-shot calls do not share the stream threads: they still run
        assert await wait_event(bridge.call(lambda: "one-shot"), 5, "a one-shot call") == "one-shot"
    finally:
        release.set()
    assert await wait_event(asyncio.gather(*streams), 5, "the streams to end") == ["released", "released"]
    assert await wait_event(bridge.stream(lambda: "again"), 5, "a stream after the others ended") == "again"
    bridge.close()


async def test_cancelling_the_wait_keeps_the_slot_until_the_thread_returns() -> None:
    bridge = ThreadBridge("test", 1)
    release, started = threading.Event(), threading.Event()
    stream = asyncio.create_task(bridge.stream(blocked_until, release, started), name="stream-cancelled")
    await wait_for(started.is_set, 5, "the stream thread to start")
    stream.cancel()
    with pytest.raises(asyncio.CancelledError):
        await wait_event(stream, 5, "the cancelled stream")
    # the thread still runs (a cancel cannot stop it): its slot is still taken
    with pytest.raises(TemporaryCommandError):
        bridge.submit_stream(lambda: None)
    release.set()  # what the owner's close of the SDK stream does
    result = await wait_for(lambda: _try_stream(bridge), 5, "the slot to come back")
    assert await wait_event(asyncio.wrap_future(result), 5, "the next stream") == "next"
    bridge.close()


def _try_stream(bridge: ThreadBridge) -> object:
    try:
        return bridge.submit_stream(lambda: "next")
    except TemporaryCommandError:
        return None


async def test_a_closed_bridge_refuses_new_streams() -> None:
    bridge = ThreadBridge("test", 4)
    assert await bridge.stream(lambda: 1) == 1
    bridge.close()
    with pytest.raises(TemporaryCommandError, match="the test runtime is closing"):
        await bridge.stream(lambda: 2)
