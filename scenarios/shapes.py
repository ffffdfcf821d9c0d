"""Load shapes as plain functions of time, so they can be tested without Locust.

Each returns the number of users wanted `t` seconds into a load phase of `duration`
seconds that peaks at `users`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

RAMP_STEPS = 5


def steady(t: float, users: int, duration: float) -> int:
    """All users for the whole phase: the steady state the pools settle into."""
    return users


def ramp(t: float, users: int, duration: float) -> int:
    """Equal steps up to `users`, so connections can be read against concurrency."""
    step = min(RAMP_STEPS - 1, int(t / (duration / RAMP_STEPS)))
    return max(1, math.ceil(users * (step + 1) / RAMP_STEPS))


def spike(t: float, users: int, duration: float) -> int:
    """A tenth of the users, a burst of all of them in the middle third, then a tenth again.

    What stays open after the burst is what the pools keep, not what the load needs.
    """
    baseline = max(1, users // 10)
    return users if duration / 3 <= t < 2 * duration / 3 else baseline


SHAPES: dict[str, Callable[[float, int, float], int]] = {
    "steady": steady,
    "ramp": ramp,
    "spike": spike,
}
