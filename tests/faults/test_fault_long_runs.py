"""Long runs and bounds (the CI sizes of the soak and burst benchmarks, tests/kits/soak.py and
tests/kits/burst.py, with assertions):

* soak: ``BERTH_SOAK_SECONDS`` (60) of deploy/restart/inspect/log-follow/delete cycles: RSS grows
  under 10 MB, file descriptors and threads do not grow (a warm-up allowance of 2);
* flood: ``BERTH_FLOOD_SECONDS`` (10) of a container printing as fast as it can: RSS stays under
  80 MB and every containerInspect is answered within the platform's 5 s callback timeout;
* burst: 200 commands across 50 containers, all answered, per-container order kept.
"""

from __future__ import annotations

import os

import pytest
from kits import burst, soak

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SOAK_SECONDS = float(os.environ.get("BERTH_SOAK_SECONDS", "60"))
FLOOD_SECONDS = float(os.environ.get("BERTH_FLOOD_SECONDS", "10"))


def figures(rows: list[tuple[str, float, float, float, str]]) -> dict[str, tuple[float, float]]:
    return {figure.split(" (")[0].split(" over ")[0]: (berth, floor) for figure, berth, floor, _, _ in rows}


async def test_soak_keeps_memory_fds_and_threads_bounded() -> None:
    rows = figures(await soak.soak(SOAK_SECONDS))
    growth, _ = rows["soak RSS growth"]
    fds, fds_before = rows["soak open fds"]
    threads, threads_before = rows["soak threads"]
    assert growth < soak.RSS_GROWTH_TARGET_MB
    assert fds <= fds_before + 2
    assert threads <= threads_before + 2


async def test_log_flood_keeps_memory_bounded_and_the_session_responsive() -> None:
    rows = figures(await soak.flood(FLOOD_SECONDS))
    worst, _ = rows["flood: worst containerInspect answer"]
    peak, _ = rows["flood: agent peak RSS"]
    assert worst < soak.INSPECT_TARGET_S
    assert peak < soak.FLOOD_RSS_TARGET_MB


async def test_burst_of_200_commands_all_answered_in_order() -> None:
    rows = figures(await burst.measure())
    answered, expected = rows["burst inspects answered in order"]
    assert answered == expected == 2 * burst.CONTAINERS
