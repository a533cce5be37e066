"""The Docker state watch's wait for the next engine event honours a cancel that lands in the same
loop iteration as the event. ``asyncio.wait_for`` (Python 3.11) returned the event instead, so a
stopped watch ran on forever: bench/docker_state_latency.py hung at its cleanup, and an agent
whose platform completed a ContainerState stream kept the engine subscription open."""

from __future__ import annotations

import asyncio

import pytest

from berth.runtimes.common.deadlines import next_item as next_event


async def test_a_cancel_landing_with_an_event_cancels() -> None:
    queue: asyncio.Queue[object] = asyncio.Queue()
    waiting = asyncio.create_task(next_event(queue, 60.0), name="test-next-event")
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # parked in queue.get()
    queue.put_nowait({"Action": "stop"})
    waiting.cancel()  # the same iteration: the event is there, the cancel too
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert queue.qsize() in (0, 1)  # nothing invented; the event may stay queued


async def test_an_event_is_returned_and_a_quiet_queue_times_out() -> None:
    queue: asyncio.Queue[object] = asyncio.Queue()
    queue.put_nowait("event")
    assert await next_event(queue, 5.0) == "event"
    assert await next_event(queue, 0.01) is None
