"""The bounded buffer between a Docker log reader thread and the event loop: it never holds more
than its capacity, drops only when full, and counts every dropped line where it was dropped."""

from __future__ import annotations

import asyncio
import random
import threading

from waiting import wait_event

from berth.model import LogGap, LogItem
from berth.runtimes.docker.logstream import LineBuffer

CAPACITY = 30


def numbered(start: int, count: int) -> list[str]:
    return [f"{n}\n" for n in range(start, start + count)]


async def test_a_stalled_consumer_gets_the_capacity_then_one_gap_counting_the_rest() -> None:
    buffer = LineBuffer(CAPACITY, asyncio.get_running_loop())

    def flood() -> None:
        for chunk in range(10):
            buffer.push(numbered(chunk * 100, 100))

    await asyncio.to_thread(flood)
    batch = await wait_event(buffer.next_batch(), 5, "a batch")
    assert batch == [*numbered(0, CAPACITY), LogGap(1000 - CAPACITY)]
    assert buffer.dropped_total == 1000 - CAPACITY


async def test_every_batch_is_bounded_whatever_the_pace() -> None:
    """A producer and a consumer at random paces: each batch has at most ``capacity`` lines; a gap
    only ends a full batch; the lines keep their order and lines plus dropped add up."""
    buffer = LineBuffer(CAPACITY, asyncio.get_running_loop())
    pace = random.Random(14)
    sizes = [pace.choice((1, 5, 17, 29, 30, 31, 64)) for _ in range(80)]
    stalls = [pace.choice((0.0, 0.0, 0.001, 0.01)) for _ in range(len(sizes))]

    def produce() -> None:
        start = 0
        for size, stall in zip(sizes, stalls, strict=True):
            buffer.push(numbered(start, size))
            start += size
            threading.Event().wait(stall / 2)
        buffer.close()

    producer = asyncio.create_task(asyncio.to_thread(produce), name="line-buffer-producer")
    batches: list[list[LogItem]] = []
    while (batch := await wait_event(buffer.next_batch(), 20, "the next batch")) is not None:
        batches.append(batch)
        await asyncio.sleep(pace.choice((0.0, 0.0, 0.002, 0.02)))
    await producer

    lines = [item for batch in batches for item in batch if isinstance(item, str)]
    dropped = sum(item.dropped_lines for batch in batches for item in batch if isinstance(item, LogGap))
    assert len(lines) + dropped == sum(sizes) and dropped == buffer.dropped_total
    numbers = [int(line) for line in lines]
    assert numbers == sorted(numbers)
    assert dropped > 0, "the schedule never filled the buffer: the test would not see the bound"
    for batch in batches:
        in_batch = [item for item in batch if isinstance(item, str)]
        assert len(in_batch) <= CAPACITY
        gaps = [index for index, item in enumerate(batch) if isinstance(item, LogGap)]
        if gaps:
            assert gaps == [len(batch) - 1] and len(in_batch) == CAPACITY, batch
