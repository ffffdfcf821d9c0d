"""Load shapes as functions of time, their full-load window, and the checks on a ramp's hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from poolbench.config.bench import load_config, select
from poolbench.errors import PoolbenchError
from poolbench.load import locust as load
from poolbench.load import shapes
from poolbench.options import Overrides


def test_steady_is_flat() -> None:
    assert {shapes.steady(t, 150, 60) for t in range(60)} == {150}


def test_ramp_climbs_in_five_equal_steps_then_holds_the_peak() -> None:
    users = [shapes.ramp(t / 2, 150, 60, ramp_s=20) for t in range(120)]  # every 0.5 s
    assert sorted(set(users)) == [30, 60, 90, 120, 150]
    assert users == sorted(users)
    assert users[0] == 30
    assert users.index(150) == 40  # all users at t = ramp_s = 20 s ...
    assert set(users[40:]) == {150}  # ... and held for the remaining 40 s
    steps = [users.index(level) for level in (30, 60, 90, 120, 150)]
    assert steps == [0, 10, 20, 30, 40]  # equal steps of 5 s


def test_ramp_without_a_ramp_time_is_all_users_at_once() -> None:
    assert {shapes.ramp(t, 150, 60, ramp_s=0) for t in range(60)} == {150}


def test_spike_bursts_in_the_middle_third_only() -> None:
    users = [shapes.spike(t, 100, 60) for t in range(60)]
    assert users[:20] == [10] * 20
    assert users[20:40] == [100] * 20
    assert users[40:] == [10] * 20


def test_full_load_window_opens_after_the_last_step_has_spawned() -> None:
    # the last ramp step adds 30 users at 50/s: 0.6 s after t = ramp_s
    assert shapes.full_load_window("ramp", 150, 55, 20, 50) == pytest.approx((20.6, 55))
    assert shapes.full_load_window("steady", 150, 40, 0, 50) == pytest.approx((3.0, 40))
    assert shapes.full_load_window("spike", 100, 60, 0, 90) == pytest.approx((21.0, 40))


def test_the_shipped_seed_claim_ramp_holds_150_users_for_at_least_30_s() -> None:
    [seed] = select(load_config(), Overrides(experiments=("seed-claim",)))
    assert seed.load.shape == "ramp" and seed.load.users == 150
    hold = shapes.hold_s("ramp", 150, seed.phases.load_s, seed.load.ramp_s, seed.load.spawn_rate)
    assert hold >= shapes.MIN_HOLD_S
    assert load.hold_warning(seed.load, seed.phases.load_s) is None


def _bench(tmp_path: Path, load_table: str, load_s: float) -> Path:
    path = tmp_path / "bench.toml"
    path.write_text(
        '[variants.after]\napp_dir = "apps_after"\n[experiments.e]\n'
        f"load = {{{load_table}}}\nphases = {{load_s = {load_s}}}\n"
    )
    return path


def test_a_ramp_with_no_time_left_to_hold_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PoolbenchError) as error:
        load_config(_bench(tmp_path, 'shape = "ramp", ramp_s = 45', 45))
    assert str(error.value) == (
        "experiments.e.load.ramp_s (45 s) must be shorter than phases.load_s (45 s): "
        "the ramp holds all users for the rest of the phase"
    )


def test_a_short_hold_is_warned_about_not_refused(tmp_path: Path) -> None:
    [experiment] = select(load_config(_bench(tmp_path, 'shape = "ramp", ramp_s = 30', 45)))
    warning = load.hold_warning(experiment.load, experiment.phases.load_s)
    assert warning is not None and "only 15 s (< 30 s)" in warning


def test_locust_args_must_be_a_list_of_strings(tmp_path: Path) -> None:
    with pytest.raises(PoolbenchError, match=r"experiments.e.load.locust_args must be a list"):
        load_config(_bench(tmp_path, 'locust_args = "--hold-ms 5"', 45))
    config = load_config(_bench(tmp_path, 'locust_args = ["--hold-ms", "5"]', 45))
    assert config.experiments["e"].load.locust_args == ("--hold-ms", "5")
