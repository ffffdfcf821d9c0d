"""Load shapes as functions of time."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "scenarios"))
import shapes


def test_steady_is_flat() -> None:
    assert {shapes.steady(t, 150, 60) for t in range(60)} == {150}


def test_ramp_climbs_in_five_equal_steps_to_the_peak() -> None:
    users = [shapes.ramp(t, 150, 60) for t in range(60)]
    assert sorted(set(users)) == [30, 60, 90, 120, 150]
    assert users == sorted(users)
    assert users[0] == 30 and users[-1] == 150


def test_spike_bursts_in_the_middle_third_only() -> None:
    users = [shapes.spike(t, 100, 60) for t in range(60)]
    assert users[:20] == [10] * 20
    assert users[20:40] == [100] * 20
    assert users[40:] == [10] * 20
