from __future__ import annotations

import itertools
import random

import pytest

from berth.agent.session import RECONNECT_JITTER, reconnect_backoff
from berth.runtimes.common.backoff import Backoff, HealthyTimer
from berth.settings import ConnectionSettings


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


# -- the agent's reconnect policy -----------------------------------------------------------------


def policy(seed: int) -> Backoff:
    defaults = ConnectionSettings()
    return Backoff(
        defaults.backoff_initial_s,
        defaults.backoff_max_s,
        jitter=RECONNECT_JITTER,
        rng=random.Random(seed),
    )


def test_reconnect_policy_is_the_sessions() -> None:
    backoff = reconnect_backoff(ConnectionSettings())
    assert (backoff.initial_s, backoff.cap_s, backoff.jitter) == (2.0, 4.0, RECONNECT_JITTER)


def test_seeded_jitter_repeats_and_stays_between_floor_and_ceiling() -> None:
    first, second = policy(42), policy(42)
    delays = []
    for _ in range(50):
        floor, ceiling = first.floor_s(), first.ceiling_s()
        delay = first.next_delay_s()
        assert floor <= delay <= ceiling
        assert floor == ceiling / 4
        delays.append(delay)
    assert delays == [second.next_delay_s() for _ in range(50)]
    assert delays != [policy(43).next_delay_s() for _ in range(50)]
    assert [round(d, 3) for d in delays[:3]] == [1.459, 1.075, 1.825]  # seed 42, pinned


def test_the_cap_holds_however_long_the_outage() -> None:
    backoff = policy(1)
    delays = [backoff.next_delay_s() for _ in range(10_000)]
    assert max(delays) <= 4.0
    assert min(delays[3:]) >= 1.0  # once capped, never sooner than cap / 4


def test_a_healthy_session_resets_and_a_short_one_does_not() -> None:
    now = [0.0]
    backoff = policy(3)
    for _ in range(5):
        backoff.next_delay_s()
    short = HealthyTimer(ConnectionSettings().healthy_after_s, clock=lambda: now[0])
    short.start()
    now[0] += 9.9
    assert not short.was_healthy()  # a platform that accepts and drops at once stays capped
    assert backoff.ceiling_s() == 4.0
    healthy = HealthyTimer(ConnectionSettings().healthy_after_s, clock=lambda: now[0])
    now[0] = 100.0
    healthy.start()
    now[0] = 110.0
    assert healthy.was_healthy()
    backoff.reset()
    assert backoff.ceiling_s() == 2.0


def attempts_during(outage_s: float, backoff: Backoff) -> list[float]:
    """When one agent tries during an outage that starts at 0, in virtual time."""
    at, attempts = 0.0, []
    while True:
        at += backoff.next_delay_s()
        if at > outage_s:
            return [*attempts, at]  # the last one finds the platform back
        attempts.append(at)


def test_one_agent_tries_at_most_once_a_second_once_capped() -> None:
    attempts = attempts_during(300.0, policy(5))
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert min(gaps[3:]) >= 1.0
    assert 300 / 4.0 <= len(attempts) <= 300 / 1.0
    per_second = len(attempts) / 300
    assert 0.3 <= per_second <= 0.5  # about one attempt per mean delay (2.5 s)


@pytest.mark.parametrize("outage_s", [3.0, 10.0, 30.0, 60.0, 300.0])
def test_the_policy_reconnects_within_the_targets_after_any_outage(outage_s: float) -> None:
    """The policy alone (no transport): 400 seeded agents, delay from the platform's return to
    each agent's next attempt. Targets: p50 <= 2 s, p95 <= 5 s; the fleet spreads out."""
    delays = sorted(attempts_during(outage_s, policy(seed))[-1] - outage_s for seed in range(400))
    p50, p95 = delays[len(delays) // 2], delays[int(len(delays) * 0.95)]
    assert p50 <= 2.0
    assert p95 <= 5.0
    assert delays[-1] <= 4.0
    assert delays[int(len(delays) * 0.9)] - delays[int(len(delays) * 0.1)] >= 1.5  # no herd
