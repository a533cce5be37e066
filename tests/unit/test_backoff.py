from __future__ import annotations

import random

import pytest

from berth.runtimes.common.backoff import Backoff, HealthyTimer


def test_delays_stay_within_the_growing_capped_ceiling() -> None:
    backoff = Backoff(0.5, 8.0, rng=random.Random(1))
    ceilings = []
    for _ in range(10):
        ceiling = backoff.ceiling_s()
        delay = backoff.next_delay_s()
        assert 0.0 <= delay <= ceiling
        ceilings.append(ceiling)
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0]


def test_full_jitter_uses_the_whole_range() -> None:
    backoff = Backoff(1.0, 1.0, rng=random.Random(7))
    delays = [backoff.next_delay_s() for _ in range(1000)]
    assert min(delays) < 0.05
    assert max(delays) > 0.95
    assert len(set(delays)) == len(delays)  # jittered, not a fixed schedule


def test_reset_starts_over_and_huge_failure_counts_do_not_overflow() -> None:
    backoff = Backoff(1.0, 60.0)
    for _ in range(500):
        backoff.next_delay_s()
    assert backoff.ceiling_s() == 60.0
    backoff.reset()
    assert backoff.ceiling_s() == 1.0


def test_invalid_bounds_are_rejected() -> None:
    with pytest.raises(ValueError):
        Backoff(0.0, 1.0)
    with pytest.raises(ValueError):
        Backoff(2.0, 1.0)
    with pytest.raises(ValueError):
        Backoff(1.0, 2.0, jitter=0.0)
    with pytest.raises(ValueError):
        Backoff(1.0, 2.0, jitter=1.5)


def test_healthy_timer() -> None:
    now = [100.0]
    timer = HealthyTimer(60.0, clock=lambda: now[0])
    assert not timer.was_healthy()
    timer.start()
    now[0] += 59.0
    assert not timer.was_healthy()
    now[0] += 1.0
    assert timer.was_healthy()
