"""Capped exponential backoff with jitter, reset after a healthy period (§18). One policy for
every retry loop: the agent's reconnect and engine wait, and the runtimes' state watches.

The n-th delay in a row is uniform in ``[ceiling * (1 - jitter), ceiling]`` with
``ceiling = min(cap_s, initial_s * 2**n)``. ``jitter=1`` is full jitter (delays may be close to
0); a smaller ``jitter`` keeps a floor under every delay, which bounds how often one client can
try (at most ``1 / (cap_s * (1 - jitter))`` per second once capped) while clients that failed
together still spread over the whole upper part of the range.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Final

MAX_EXPONENT: Final = 62  # 2**62 seconds is past any cap; keeps the float finite


class Backoff:
    """Delays for consecutive failures; ``reset()`` once things went well starts over."""

    def __init__(
        self,
        initial_s: float,
        cap_s: float,
        *,
        jitter: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        if initial_s <= 0 or cap_s < initial_s:
            raise ValueError("backoff needs 0 < initial_s <= cap_s")
        if not 0.0 < jitter <= 1.0:
            raise ValueError("backoff jitter must be in (0, 1]")
        self.initial_s = initial_s
        self.cap_s = cap_s
        self.jitter = jitter
        self.failures = 0
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography

    def ceiling_s(self) -> float:
        """The upper bound of the next delay."""
        return float(min(self.cap_s, self.initial_s * 2 ** min(self.failures, MAX_EXPONENT)))

    def floor_s(self) -> float:
        """The lower bound of the next delay."""
        return self.ceiling_s() * (1.0 - self.jitter)

    def next_delay_s(self) -> float:
        low, high = self.floor_s(), self.ceiling_s()
        self.failures += 1
        return self._rng.uniform(low, high)

    def reset(self) -> None:
        self.failures = 0


class HealthyTimer:
    """Tells whether something (a session, a subscription) lasted long enough to reset a backoff."""

    def __init__(self, healthy_after_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.healthy_after_s = healthy_after_s
        self._clock = clock
        self._started: float | None = None

    def start(self) -> None:
        self._started = self._clock()

    def was_healthy(self) -> bool:
        return self._started is not None and self._clock() - self._started >= self.healthy_after_s
