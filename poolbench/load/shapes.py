"""Load shapes as plain functions of time, so they can be tested without Locust.

Each returns the number of users wanted `t` seconds into a load phase of `duration` seconds
that peaks at `users`. `ramp_s` is the ramp's length: it reaches `users` at `ramp_s` in equal
steps and then holds them for the rest of the phase, so throughput and latency can be compared
on a window at full load that is long enough to mean something (the hold). The Locust side
(`poolbench/load/plugin.py`) only calls these.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from poolbench.config.kinds import Shape

RAMP_STEPS = 5
MIN_HOLD_S = 30.0  # shorter than this, a full-load window is too short to compare


def steady(t: float, users: int, duration: float, ramp_s: float = 0.0) -> int:
    """All users for the whole phase: the steady state the pools settle into."""
    return users


def ramp(t: float, users: int, duration: float, ramp_s: float = 0.0) -> int:
    """`RAMP_STEPS` equal steps, the last (all users) at `ramp_s`, then a hold at `users`.

    Connections can be read against concurrency on the steps; the hold is the steady window.
    """
    if ramp_s <= 0 or t >= ramp_s:
        return users
    step = min(RAMP_STEPS - 1, int(t / (ramp_s / (RAMP_STEPS - 1))))
    return max(1, math.ceil(users * (step + 1) / RAMP_STEPS))


def spike(t: float, users: int, duration: float, ramp_s: float = 0.0) -> int:
    """A tenth of the users, a burst of all of them in the middle third, then a tenth again.

    What stays open after the burst is what the pools keep, not what the load needs.
    """
    baseline = max(1, users // 10)
    return users if duration / 3 <= t < 2 * duration / 3 else baseline


SHAPES: dict[Shape, Callable[[float, int, float, float], int]] = {
    Shape.STEADY: steady,
    Shape.RAMP: ramp,
    Shape.SPIKE: spike,
}


def full_load_window(
    shape: str, users: int, duration: float, ramp_s: float, spawn_rate: float
) -> tuple[float, float]:
    """Seconds into the phase between which all `users` run: the window to compare on.

    It opens when the shape asks for all users plus the time Locust needs to spawn the last
    step at `spawn_rate`, and closes when the shape lets them go (or the phase ends).
    """
    asked, end, previous = 0.0, duration, 0  # steady: all users spawned from none
    if shape == Shape.RAMP and ramp_s > 0:
        asked, previous = ramp_s, math.ceil(users * (RAMP_STEPS - 1) / RAMP_STEPS)
    elif shape == Shape.SPIKE:
        asked, end, previous = duration / 3, 2 * duration / 3, spike(0, users, duration)
    spawn = (users - previous) / spawn_rate if spawn_rate > 0 else 0.0
    start = min(end, asked + spawn)
    return start, end


def hold_s(shape: str, users: int, duration: float, ramp_s: float, spawn_rate: float) -> float:
    """How long all users run: the length of `full_load_window`."""
    start, end = full_load_window(shape, users, duration, ramp_s, spawn_rate)
    return end - start
