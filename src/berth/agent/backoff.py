"""Capped exponential backoff with full jitter that resets after a healthy period (§18)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable


class Backoff:
    """``next_delay_s()`` is uniform in ``[0, min(max_s, initial_s * 2**n)]`` for the n-th failure
    in a row; ``reset()`` (after a session stayed healthy) starts over."""

    def __init__(
        self,
        initial_s: float,
        max_s: float,
        *,
        rng: Callable[[float, float], float] | None = None,
    ) -> None:
        if initial_s <= 0 or max_s < initial_s:
            raise ValueError("backoff needs 0 < initial_s <= max_s")
        self.initial_s = initial_s
        self.max_s = max_s
        self.failures = 0
        self._rng = rng or random.uniform

    def ceiling_s(self) -> float:
        """The upper bound of the next delay."""
        exponent = min(self.failures, 62)
        return float(min(self.max_s, self.initial_s * (2**exponent)))

    def next_delay_s(self) -> float:
        ceiling = self.ceiling_s()
        self.failures += 1
        return self._rng(0.0, ceiling)

    def reset(self) -> None:
        self.failures = 0


class HealthyTimer:
    """Tells whether a session lasted long enough to reset the backoff."""

    def __init__(self, healthy_after_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.healthy_after_s = healthy_after_s
        self._clock = clock
        self._started: float | None = None

    def start(self) -> None:
        self._started = self._clock()

    def was_healthy(self) -> bool:
        return self._started is not None and self._clock() - self._started >= self.healthy_after_s
