"""The bounded buffer between log reader threads and the event loop (both runtimes use it): it
never holds more than its capacity, drops only when full, and counts every dropped line exactly,
where it was dropped."""

from __future__ import annotations

import asyncio
import random
import threading

from waiting import wait_event

from berth.model import LogGap, LogItem
from berth.runtimes.common.buffer import BoundedBuffer

CAPACITY = 30


def numbered(start: int, count: int) -> list[str]:
    return [f"{n}\n" for n in range(start, start + count)]


async def test_a_stalled_consumer_gets_the_capacity_then_one_gap_counting_the_rest() -> None:
    buffer = BoundedBuffer[str](CAPACITY, asyncio.get_running_loop())

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
    buffer = BoundedBuffer[str](CAPACITY, asyncio.get_running_loop())
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


async def test_the_drop_count_is_exact_and_each_gap_sits_where_its_lines_were_lost() -> None:
    """Two floods with a drain between them: two gaps, each after the lines kept before it."""
    buffer = BoundedBuffer[str](CAPACITY, asyncio.get_running_loop(), backpressure_s=0)
    buffer.push(numbered(0, CAPACITY + 7))
    buffer.push(numbered(100, 3))  # still full: joins the same gap
    first = await wait_event(buffer.next_batch(), 5, "the first batch")
    assert first == [*numbered(0, CAPACITY), LogGap(10)]
    buffer.push(numbered(200, 5))
    buffer.push(numbered(300, CAPACITY))
    second = await wait_event(buffer.next_batch(), 5, "the second batch")
    assert second == [*numbered(200, 5), *numbered(300, CAPACITY - 5), LogGap(5)]
    assert buffer.dropped_total == 15
    buffer.close()
    assert await wait_event(buffer.next_batch(), 5, "the end") is None


async def test_items_of_any_type_and_several_producers_add_up() -> None:
    """Tagged items (the Kubernetes runtime buffers ``(pod, line)``) from several threads."""
    buffer = BoundedBuffer[tuple[str, int]](CAPACITY, asyncio.get_running_loop(), backpressure_s=0)

    def produce(pod: str) -> None:
        for n in range(200):
            buffer.push([(pod, n)])

    await asyncio.gather(*(asyncio.to_thread(produce, pod) for pod in ("a", "b", "c")))
    buffer.close()
    kept: list[tuple[str, int]] = []
    dropped = 0
    while (batch := await wait_event(buffer.next_batch(), 5, "a batch")) is not None:
        for item in batch:
            if isinstance(item, LogGap):
                dropped += item.dropped_lines
            else:
                kept.append(item)
    assert len(kept) == CAPACITY and dropped == 600 - CAPACITY == buffer.dropped_total
    for pod in ("a", "b", "c"):
        numbers = [n for p, n in kept if p == pod]
        assert numbers == sorted(numbers)


async def test_a_cancelled_wait_loses_nothing() -> None:
    buffer = BoundedBuffer[str](CAPACITY, asyncio.get_running_loop())
    waiting = asyncio.create_task(buffer.next_batch(), name="buffer-wait")
    await asyncio.sleep(0)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    await asyncio.to_thread(buffer.push, numbered(0, 2))
    assert await wait_event(buffer.next_batch(), 5, "the lines pushed after the cancel") == numbered(0, 2)
