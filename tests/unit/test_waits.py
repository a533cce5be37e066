"""WaitBoard: a newer command for the same workload or prefix ends a deploy's wait at once."""

from __future__ import annotations

import asyncio

import pytest

from berth.runtimes.waits import Superseded, WaitBoard


async def test_a_wait_that_finishes_returns_its_result() -> None:
    board = WaitBoard()

    async def quick() -> int:
        return 7

    assert await board.run("p", frozenset({"web"}), quick()) == 7


@pytest.mark.parametrize(
    ("prefix", "names", "ends"),
    [
        ("p", None, True),
        ("p", frozenset({"web"}), True),
        ("p", frozenset({"db"}), False),
        ("q", None, False),
    ],
)
async def test_supersede_matches_the_prefix_and_the_workloads(
    prefix: str, names: frozenset[str] | None, ends: bool
) -> None:
    board = WaitBoard()
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    waiting = asyncio.create_task(board.run("p", frozenset({"web", "api"}), forever()), name="waiting")
    await asyncio.sleep(0)
    assert board.supersede(prefix, names, "a delete") == int(ends)
    if ends:
        with pytest.raises(Superseded, match="superseded by a delete"):
            await asyncio.wait_for(waiting, 1)
        assert cancelled.is_set()
    else:
        assert board.supersede_all("shutdown") == 1
        with pytest.raises(Superseded, match="superseded by shutdown"):
            await asyncio.wait_for(waiting, 1)
