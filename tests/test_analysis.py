"""Analysis on synthetic results directories whose answers are known by construction.

Each expected value is computed by hand from the spec (see tests/synthetic.py): warm-up 2 s,
load phase 10 s at 10 Hz = 100 connection samples, idle phase 4 s = 40 samples (20 in its
second half), memory at 1 Hz. Locust's user count climbs to 150 in the first 2 s of the load
and holds, so the full-load window is load + 4 s (2 s of ramp, 2 s to settle) to its end:
6 s, 60 connection samples. The defects of issue 9 have their own tests (test_truth.py); this
file is the regression suite of the analysis package's port.
"""

from __future__ import annotations

import gc
import json
import random
import re
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from recompute import names_a_refusal
from synthetic import T0, EngineSpec, MiB, VariantSpec, seed_claim_specs, write_run

from poolbench.analysis.collector_pause import YOUNG_THRESHOLD, fewer_collections
from poolbench.analysis.figures import VariantFigures
from poolbench.analysis.run_analysis import Analysis, analyse
from poolbench.analysis.series import _by_metric, sorted_unique
from poolbench.analysis.typed import Window
from poolbench.config.bench import load_config
from poolbench.errors import PoolbenchError
from poolbench.results.applog import REFUSAL, count_log_refusals
from poolbench.results.failures import classify

BENCH_FILE = Path(__file__).resolve().parent.parent / "scenarios" / "bench.toml"
# the seed's claims as the bench file states them (claims are data: run.json carries them)
SEED_CLAIMS = {"seed-claim": load_config(BENCH_FILE).experiments["seed-claim"].claims}
LOAD0 = T0 + 2.0  # the load phase's start in every spec below (2 s of warm-up)
FULL_LOAD = Window("full load (150 users)", LOAD0 + 4.0, LOAD0 + 10.0)


def figures(analysis: Analysis, variant: str, experiment: str = "seed-claim") -> VariantFigures:
    """The first repeat's figures of one variant, as summary.json holds them."""
    for e in analysis.summary.experiments:
        if e.name == experiment and (v := e.variant(variant)) is not None:
            return v.first
    raise KeyError(variant)


def verdicts(analysis: Analysis, experiment: int = 0) -> dict[str, str]:
    claims = analysis.summary.experiments[experiment].claims
    assert claims is not None
    return {j.claim.id: j.verdict for j in claims.items}


def judgement(analysis: Analysis, claim_id: str, experiment: int = 0):
    claims = analysis.summary.experiments[experiment].claims
    assert claims is not None
    return next(j for j in claims.items if j.claim.id == claim_id)


def one(tmp_path: Path, spec: VariantSpec, **kwargs) -> tuple[Analysis, VariantFigures]:
    analysis = analyse(write_run(tmp_path, [spec], **kwargs))
    return analysis, figures(analysis, spec.name, spec.experiment)


@pytest.fixture(scope="module")
def seed_run(tmp_path_factory) -> Analysis:
    return analyse(
        write_run(tmp_path_factory.mktemp("seed"), seed_claim_specs(), claims=SEED_CLAIMS)
    )


# --- connections -------------------------------------------------------------------------


def test_peaks_percentiles_and_idle_of_the_seed_scenario(seed_run):
    before, after = figures(seed_run, "before"), figures(seed_run, "after")
    # before: 10 samples at 5 × 10 = 50, then 90 at 5 × 20 = 100
    assert before.connections.peak == 100
    assert before.connections.p95 == 100
    assert before.connections.idle == 100
    assert before.connections.samples_in_load == 100
    assert before.connections.run_peak == 100
    # the full-load window starts 3 s after the ramp of connections ended: all at 100
    assert before.windows.full_load == FULL_LOAD
    assert before.connections.mean_full_load == 100
    assert after.connections.peak == 20
    assert after.connections.mean_full_load == 20
    assert after.connections.idle == 20
    assert {e.name for e in before.connections.engines} == {
        f"before:{m}"
        for m in (
            "app.db.session",
            "app.core.database",
            "app.api.dependencies",
            "app.core.db",
            "app.db",
        )
    }
    assert all(e.peak == 20 and e.idle == 20 for e in before.connections.engines)
    assert before.connections.pools_holding_idle == 5 and after.connections.pools_holding_idle == 1
    assert seed_run.summary.headline == "Peak connections 100 → 20 (−80 %)"


@pytest.mark.parametrize(
    ("load", "p95", "mean_full_load"),
    [
        # 94 samples at 10, 6 at 60: sorted position 0.95 × 99 = 94.05 lies among the 60s;
        # the full-load window (60 samples) holds 54 at 10 and the 6 at 60
        ([(0.94, 10), (0.06, 60)], 60, (54 * 10 + 6 * 60) / 60),
        # 95 at 10, 5 at 60: numpy's linear interpolation, 10 + 0.05 × 50
        ([(0.95, 10), (0.05, 60)], 12.5, (55 * 10 + 5 * 60) / 60),
        # 96 at 10: positions 94 and 95 are both 10
        ([(0.96, 10), (0.04, 60)], 10, (56 * 10 + 4 * 60) / 60),
    ],
)
def test_p95_interpolates_and_mean_differs(tmp_path, load, p95, mean_full_load):
    spec = VariantSpec(name="only", engines=[EngineSpec("x:a", pool_size=60, load=load)])
    _, f = one(tmp_path, spec)
    assert f.connections.peak == 60
    assert f.connections.p95 == pytest.approx(p95)
    assert f.connections.mean_full_load == pytest.approx(mean_full_load)


def test_idle_is_the_median_of_the_second_half_of_the_idle_phase(tmp_path):
    # overflow still open in the first half of the idle phase (30), pool_size kept after (20)
    engine = EngineSpec(
        "v:a", pool_size=20, max_overflow=10, load=[(1.0, 30)], idle=[(0.5, 30), (0.5, 20)]
    )
    _, f = one(tmp_path, VariantSpec(name="v", engines=[engine]))
    assert f.connections.idle == 20  # the whole idle phase's median would be 25
    assert f.connections.engine("v:a").idle == 20
    assert f.windows.idle_settled == Window("idle, 2nd half", LOAD0 + 12, LOAD0 + 14)
    model = f.model
    assert model.idle == 20  # 1 worker × pool_size 20, from the configuration
    assert model.ceiling == 30  # 1 × (20 + 10)
    assert model.engines[0].filled  # it opened 30 ≥ 20
    assert {flag.code for flag in model.flags} >= {"idle_matches", "at_ceiling"}


def test_states_and_active_distribution(tmp_path):
    # active = min(level, 8); the full-load window (load + 4 … 10 s) holds 30 samples at level 4
    # (all 4 active) and 30 at level 20 (8 active, 2 idle in transaction, 10 idle)
    engine = EngineSpec("v:a", load=[(0.7, 4), (0.3, 20)], active=8, idle_in_transaction=2)
    _, f = one(tmp_path, VariantSpec(name="v", engines=[engine]))
    active = f.connections.active
    assert active.p50 == pytest.approx(6.0)  # between the 30th (4) and 31st (8) value
    assert active.p99 == 8
    assert active.max == 8
    assert active.mean == pytest.approx(6.0)
    states = f.connections.states_full_load
    assert states["active"] == pytest.approx(6.0)
    assert states["idle in transaction"] == pytest.approx(1.0)  # 0 then 2
    assert states["idle"] == pytest.approx(5.0)  # 0 then 10
    assert f.connections.states_idle["idle"] == 20
    assert f.connections.states_idle["active"] == 0
    assert f.connections.engine("v:a").active_max == 8


# --- the model: configuration only ----------------------------------------------------------


def test_model_counts_workers_and_overflow(tmp_path):
    # 2 workers × (5 + 10) per engine; each engine holds 12 over both workers, 10 when idle
    engines = [
        EngineSpec(f"w:{m}", pool_size=5, max_overflow=10, load=[(1.0, 12)], idle=[(1.0, 10)])
        for m in "ab"
    ]
    _, f = one(tmp_path, VariantSpec(name="w", engines=engines, workers=2))
    model = f.model
    assert model.workers == 2
    assert model.ceiling == 60  # 2 engines × 2 workers × (5 + 10)
    assert model.idle == 20  # 2 engines × 2 workers × 5
    assert model.measured_peak == 24
    assert model.measured_idle == 20
    assert [e.ceiling for e in model.engines] == [30, 30]
    assert [e.idle for e in model.engines] == [10, 10]
    assert all(e.filled for e in model.engines)  # each opened 12 ≥ 2 × 5
    codes = {flag.code for flag in model.flags}
    assert "below_ceiling" in codes and "idle_matches" in codes
    assert "workers_mismatch" not in codes  # tagged engines: the processes are not counted


def test_model_flags_mismatches_in_words(tmp_path):
    engines = [
        # holds 25 when idle, above pool_size 20: 5 sessions left "idle in transaction"
        EngineSpec("m:a", load=[(1.0, 20)], idle=[(1.0, 25)], pool_size=20),
        EngineSpec("m:health", load=[(1.0, 2)], idle=[(1.0, 0)], listed=False),
    ]
    _, f = one(tmp_path, VariantSpec(name="m", engines=engines))
    flags = {flag.code: flag.message for flag in f.model.flags}
    assert f.model.ceiling == 20
    assert f.connections.peak == 22
    assert "above_ceiling" in flags and "m:health 2" in flags["above_ceiling"]
    assert "idle_mismatch" in flags and "keeps 25 connections" in flags["idle_mismatch"]
    assert f.model.unlisted == {"m:health": 2.0}


def test_model_never_predicts_from_observed_application_names(tmp_path):
    # no engine declared: the model used to take pool settings from the app's settings and the
    # names it saw (a prediction built from the measurement); now there is no prediction
    engines = [EngineSpec(f"o:{m}", load=[(1.0, 7)], listed=False) for m in "abc"]
    spec = VariantSpec(name="o", engines=engines, app_settings={"pool_size": 10, "max_overflow": 5})
    _, f = one(tmp_path, spec)
    assert f.model is None
    assert f.connections.peak == 21  # still measured


def test_model_of_untagged_connections_counts_client_processes(tmp_path):
    # an app that sets no application_name: the collector names its connections
    # untagged:<process>:<pid>; 4 workers declared, 3 processes held 15 connections each
    engines = [
        EngineSpec(f"untagged:python3:{pid}", load=[(1.0, 15)], idle=[(1.0, 5)], listed=False)
        for pid in (11, 12, 13)
    ]
    engines.append(EngineSpec("untagged", pool_size=5, max_overflow=10, load=[(1.0, 0)]))
    _, f = one(tmp_path, VariantSpec(name="u", engines=engines, workers=4))
    model = f.model
    assert model.measured_processes == 3
    [engine] = model.engines
    # one engine in three processes is one engine: the per-process labels are merged
    assert engine.members == ["untagged"]
    assert [p.pid for p in f.connections.processes] == [11, 12, 13]
    assert engine.ceiling == 60 and engine.idle == 20  # 4 × (5 + 10), 4 × 5
    assert engine.measured_peak == 45 and engine.measured_idle == 15
    assert engine.opened == 45 and engine.filled
    codes = {flag.code for flag in model.flags}
    assert {"workers_mismatch", "idle_mismatch", "below_ceiling"} <= codes
    assert model.unlisted == {}


# --- right-sizing: server-side demand ------------------------------------------------------


def test_right_sizing_uses_active_connections_and_littles_law(tmp_path):
    # 500 requests/s of 10 ms each, every second alike: 3000 served in the 6 s window.
    # Active connections in the window: level 4 (all active) for 36 samples, then level 20
    # (8 active) for 24 → mean 5.6, p99 8
    engine = EngineSpec("r:a", pool_size=30, load=[(0.76, 4), (0.24, 20)], active=8)
    spec = VariantSpec(name="r", engines=[engine], rps=500.0, rps_sd=0.0, latency_cycle=(10.0,))
    analysis, _ = one(tmp_path, spec)
    sizing = analysis.summary.experiments[0].sizing
    [advice] = sizing.advice
    demand = advice.demand
    assert demand.requests_per_s == pytest.approx(500.0)
    assert demand.active_mean == pytest.approx(5.6)
    assert demand.active_p99 == 8 and demand.active_max == 8
    assert demand.db_time_ms == pytest.approx(11.2)  # L / λ = 5.6 / 500 s
    assert sizing.measured
    assert advice.needed == 8  # p99 active beats Little's 5.6
    assert advice.recommended_total == 10  # ceil(8 × 1.25)
    assert advice.pool_size_per_worker == 10 and advice.per_engine == {"r:a": 10}
    assert advice.usable_slots == 197  # max_connections 200 − 3 reserved
    assert not advice.capped and advice.bound == "demand"
    assert (sizing.cores, sizing.hikari) == (2, 5)


def test_right_sizing_never_exceeds_the_slots_the_server_can_give(tmp_path):
    # 170 active connections want ceil(170 × 1.25) = 213; the server has 197 for this app
    engine = EngineSpec("c:a", pool_size=200, load=[(1.0, 170)], active=170)
    analysis, _ = one(tmp_path, VariantSpec(name="c", engines=[engine]))
    [advice] = analysis.summary.experiments[0].sizing.advice
    assert advice.needed == 170
    assert advice.usable_slots == 197
    assert advice.recommended_total == 197 and advice.capped
    assert any("more than the 197 connections" in f for f in advice.findings)


def test_checked_out_connections_are_not_demand(tmp_path):
    # 2 active, 6 more idle in transaction: checked out of the pool = 8 while only 2 run queries
    engine = EngineSpec("c:a", pool_size=20, load=[(1.0, 20)], active=2, idle_in_transaction=6)
    spec = VariantSpec(name="c", engines=[engine], pool_metrics=True)
    analysis, f = one(tmp_path, spec)
    assert f.connections.checked_out.p99 == 8
    [advice] = analysis.summary.experiments[0].sizing.advice
    assert advice.demand.checked_out_p99 == 8
    assert advice.needed == 2
    # the pool of 20 sat at its ceiling all through full load: not advised smaller
    assert advice.kept and advice.recommended_total == 20
    # and it names why: sessions held idle in transaction (6) far more than active (2)
    assert advice.bound == "sessions held" and "releasing them sooner" in advice.action
    assert any("p99 8 checked out, 2 active" in f for f in advice.findings)


def test_a_pool_at_its_ceiling_is_flagged(tmp_path):
    # one pool of 4 with every connection active: requests queue for a connection
    engine = EngineSpec("s:a", pool_size=4, load=[(1.0, 4)], active=4)
    spec = VariantSpec(name="s", engines=[engine], pool_metrics=True)
    analysis, f = one(tmp_path, spec)
    row = f.connections.engine("s:a")
    assert row.active_max == 4 and row.checked_out_max == 4
    flags = {flag.code: flag.message for flag in f.model.flags}
    assert "at_ceiling" in flags and "Peak 4 is the ceiling" in flags["at_ceiling"]
    [advice] = analysis.summary.experiments[0].sizing.advice
    assert advice.recommended_total == 5 and advice.saturated  # ceil(4 × 1.25), not smaller
    assert advice.bound == "pool ceiling"


# --- churn, memory, CPU ---------------------------------------------------------------------


def test_memory_and_cpu(seed_run):
    before, after = figures(seed_run, "before"), figures(seed_run, "after")
    # backends 100 × 1 MiB + postmaster 10 MiB + other 6 MiB
    assert before.memory.postgres_pss.idle == 116 * MiB
    assert after.memory.postgres_pss.idle == 36 * MiB
    assert before.memory.postgres_uss.idle == (50 + 16) * MiB
    assert before.memory.backends_idle == 100
    # summed RSS (16 MiB per backend + 16 MiB) over PSS, idle
    assert before.memory.rss_overstatement == pytest.approx(1616 / 116)
    slope = before.memory.pss_per_backend  # PSS = 16 MiB + 1 MiB per backend, exactly
    assert slope.value == pytest.approx(MiB) and slope.low == pytest.approx(MiB)
    assert before.memory.app_uss.peak == 60 * MiB
    assert before.memory.app_uss.full_load == 60 * MiB
    assert before.cpu.full_load["app"] == pytest.approx(80.0)
    assert before.cpu.full_load["postgres"] == pytest.approx(53.0)
    assert before.cpu.full_load["collector"] == pytest.approx(3.0)


def test_sessions_per_second(tmp_path):
    spec = VariantSpec(name="c", engines=[EngineSpec("c:a")], sessions_new_per_s=7.0)
    _, f = one(tmp_path, spec)
    assert f.churn.total_new == pytest.approx(70.0)
    assert f.churn.churn_per_s == pytest.approx(7.0)
    assert f.churn.idle_per_s == pytest.approx(0.0)
    assert f.churn.abandoned == 0 and f.churn.fatal == 0


def test_empty_value_is_unavailable_not_zero(tmp_path):
    run_dir = write_run(tmp_path, [VariantSpec(name="u", engines=[EngineSpec("u:a")])])
    path = run_dir / "seed-claim/u-1/samples.csv"
    lines = path.read_text().splitlines()
    # blank every app memory value: the collector could not read them
    out = [lines[0]]
    for line in lines[1:]:
        cells = line.split(",")
        if cells[1].startswith("mem_") and cells[5] == "app":
            cells[6] = ""
        out.append(",".join(cells))
    path.write_text("\n".join(out) + "\n")
    f = figures(analyse(run_dir), "u")
    assert f.memory.app_uss.peak is None and f.memory.app_uss.full_load is None
    assert f.memory.postgres_pss.idle == (20 + 16) * MiB


# --- the leak test: a slope over a long enough window at a constant load after the pools filled -

STEPS = [(0.05, 4), (0.05, 8), (0.05, 12), (0.05, 16), (0.8, 20)]  # 20 s per step, then 320 s


def ramp_specs() -> list[VariantSpec]:
    """Connections climb for 80 s of a 400 s load (1 MiB PSS each, so PSS climbs too), then
    hold for 320 s: long enough to tell 3 MiB/h (the threshold) from 0.25 MiB of jitter."""
    return [
        VariantSpec(
            name=name,
            engines=[EngineSpec(f"{name}:m{i}", load=STEPS) for i in range(n)],
            load_s=400.0,
            rps=50.0,
            rps_sd=0.0,
            latency_cycle=(10.0,),
            seed=n,
        )
        for name, n in (("before", 5), ("after", 1))
    ]


def trend(f: VariantFigures, what: str):
    return next(t for t in f.leak if t.what == what)


def test_memory_rising_with_connections_is_not_a_leak(tmp_path):
    analysis = analyse(write_run(tmp_path, ramp_specs(), claims=SEED_CLAIMS))
    before = figures(analysis, "before")
    pss = trend(before, "PostgreSQL USS")
    # the window starts once the pools stopped growing (80 s into the load), not with the ramp
    assert LOAD0 + 80 <= pss.window.start <= LOAD0 + 81 and pss.window.end == LOAD0 + 400
    assert pss.verdict == "no growth"
    assert pss.slope_per_h == pytest.approx(0.0, abs=1)
    assert trend(before, "PostgreSQL PSS").verdict == "not judged"  # shared pages: shown only
    assert trend(before, "connections").verdict == "no growth"
    assert trend(before, "app USS").verdict == "no growth"
    item = judgement(analysis, "memory_leak")
    assert item.verdict == "does not hold"
    assert "no leak to eliminate" in item.reason and "fixed multiplier" in item.reason


def test_memory_rising_at_a_constant_load_is_a_leak(tmp_path):
    before, after = ramp_specs()
    before.pg_leak_bytes_per_s = MiB / 60  # 60 MiB/h, inside every step and after them
    analysis = analyse(write_run(tmp_path, [before, after], claims=SEED_CLAIMS))
    uss = trend(figures(analysis, "before"), "PostgreSQL USS")  # the leak is private memory
    assert uss.verdict == "growing"
    assert uss.slope_per_h == pytest.approx(60 * MiB, rel=1e-6)
    assert uss.low_per_h > 0
    assert trend(figures(analysis, "before"), "connections").verdict == "no growth"
    assert trend(figures(analysis, "after"), "PostgreSQL USS").verdict == "no growth"
    assert judgement(analysis, "memory_leak").verdict == "holds"


def test_app_memory_growing_in_both_variants_is_not_eliminated(tmp_path):
    before, after = ramp_specs()
    before.app_leak_bytes_per_s = after.app_leak_bytes_per_s = MiB / 120  # 30 MiB/h
    analysis = analyse(write_run(tmp_path, [before, after], claims=SEED_CLAIMS))
    for name in ("before", "after"):
        f = figures(analysis, name)
        assert trend(f, "app USS").verdict == "growing"
        assert trend(f, "app USS").slope_per_h == pytest.approx(30 * MiB, rel=1e-6)
        assert trend(f, "PostgreSQL USS").verdict == "no growth"
    item = judgement(analysis, "memory_leak")
    assert item.verdict == "does not hold"
    assert "after the change too" in item.reason


def test_too_little_time_at_a_constant_load_is_not_measured(seed_run):
    # 6 s of full load after the pools filled: nothing to fit a slope on
    for name in ("before", "after"):
        for t in figures(seed_run, name).leak:
            assert t.verdict == "not measured" and "too short" in t.reason
            assert t.slope_per_h is None
    assert judgement(seed_run, "memory_leak").verdict == "not measured"


# --- traffic: every request -------------------------------------------------------------------

FAILURES = [
    (
        "GET",
        "/items",
        'CatchResponseError("500: asyncpg.exceptions.TooManyConnectionsError: '
        'sorry, too many clients already")',
        7,
    ),
    (
        "GET",
        "/orders",
        "HTTPError('500 Server Error: FATAL: remaining connection slots are reserved for roles "
        "with the SUPERUSER attribute')",
        3,
    ),
    (
        "POST",
        "/orders",
        "CatchResponseError('500: QueuePool limit of size 5 overflow 10 reached, "
        "connection timed out, timeout 30.00')",
        4,
    ),
    ("GET", "/users", "ConnectionRefusedError(111, 'Connection refused')", 2),
    ("GET", "/health", "HTTPError('503 Server Error: Service Unavailable for url: /health')", 1),
    ("GET", "/items/{id}", "something odd", 1),
]


def test_failures_grouped_by_kind_and_53300_detected(tmp_path):
    spec = VariantSpec(
        name="f",
        engines=[EngineSpec("f:a")],
        failures=FAILURES,
        app_log="ERROR sqlstate 53300\nINFO fine\nFATAL: sorry, too many clients already\n",
    )
    _, f = one(tmp_path, spec)
    assert f.traffic.failure_kinds == {
        "too_many_connections": 10,
        "pool_timeout": 4,
        "timeout": 0,
        "connection_error": 2,
        "http_5xx": 1,
        "http_4xx": 0,
        "other": 1,
    }
    assert sum(f.traffic.failure_kinds.values()) == 18
    assert f.traffic.refusals_app_log == 2  # two log records name a refusal
    assert f.traffic.refusals == 10  # Locust saw more than the app logged


def test_goodput_and_latency_from_every_request(tmp_path):
    # 100 requests a second cycling through 10, 20, … 100 ms: every second of the window serves
    # each value 10 times, so 600 requests, p50 50 ms, p95 and p99 100 ms (an observed value,
    # not 95.5 interpolated), mean 55 ms
    spec = VariantSpec(
        name="t",
        engines=[EngineSpec("t:a")],
        rps=100.0,
        rps_sd=0.0,
        latency_cycle=tuple(float(v) for v in range(10, 101, 10)),
    )
    _, f = one(tmp_path, spec)
    t = f.traffic
    assert t.source == "requests"
    assert t.window == FULL_LOAD
    assert (t.requests, t.successes, t.failures) == (600, 600, 0)
    assert t.goodput == pytest.approx(100.0) and t.failures_per_s == 0
    assert (t.latency.p50, t.latency.p95, t.latency.p99) == (50, 100, 100)
    assert t.latency.mean == pytest.approx(55.0) and t.latency.max == 100
    assert t.users_mean == 150
    # one row per second of the load phase: (second, successful, failed)
    assert len(t.per_second) == 10
    assert [row[1:] for row in t.per_second[1:9]] == [[100.0, 0.0]] * 8


def test_goodput_ignores_locusts_rolling_history(tmp_path):
    spec = VariantSpec(
        name="t", engines=[EngineSpec("t:a")], rps=500.0, rps_sd=0.0, latency_cycle=(10.0,)
    )
    run_dir = write_run(tmp_path, [spec])
    path = run_dir / "seed-claim/t-1/locust_stats_history.csv"
    history = pd.read_csv(path, keep_default_na=False)
    history["Requests/s"] = 1.0  # Locust's rolling average, deliberately wrong here
    history.to_csv(path, index=False)
    assert figures(analyse(run_dir), "t").traffic.goodput == pytest.approx(500.0)


def test_without_request_records_figures_come_from_locusts_totals(tmp_path):
    # an older run: no requests.bin. Locust's Aggregated row over the whole load phase (10 s):
    # 600 requests/s every second, 18 of them failed
    spec = VariantSpec(
        name="o", engines=[EngineSpec("o:a")], rps_sd=0.0, failures=FAILURES, write_requests=False
    )
    _, f = one(tmp_path, spec)
    t = f.traffic
    assert t.source == "locust totals"
    assert t.window == Window("load (Locust's totals, all requests)", LOAD0, LOAD0 + 10)
    assert (t.requests, t.failures, t.successes) == (6000, 18, 5982)
    assert t.goodput == pytest.approx(598.2) and t.failures_per_s == pytest.approx(1.8)
    assert (t.latency.p50, t.latency.p95, t.latency.p99) == (20, 60, 90)
    assert (t.latency.mean, t.latency.max) == (22, 180)


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        (
            "psycopg.OperationalError: connection failed: FATAL: sorry, too many clients already",
            "too_many_connections",
        ),
        ("asyncpg ... SQLSTATE 53300", "too_many_connections"),
        (
            "sqlalchemy.exc.TimeoutError: QueuePool limit of size 20 overflow 0 reached",
            "pool_timeout",
        ),
        ("ReadTimeout('timed out')", "timeout"),
        ("HTTPError('404 Client Error')", "http_4xx"),
        ("", "other"),
    ],
)
def test_classify_failure(message, kind):
    assert classify(message) == kind


def test_refused_requests_are_counted_once_per_log_record(tmp_path: Path) -> None:
    """A chained traceback names 'too many clients' several times for one request."""
    record = (
        "ERROR:    Exception in ASGI application\n"
        "Traceback (most recent call last):\n"
        '  File "app.py", line 1, in <module>\n'
        "asyncpg.exceptions.TooManyConnectionsError: sorry, too many clients already\n"
        "\n"
        "The above exception was the direct cause of the following exception:\n"
        "sqlalchemy.exc.DBAPIError: (asyncpg.Error) sorry, too many clients already\n"
    )
    log = tmp_path / "app.log"
    log.write_text("INFO:     started\n" + record * 3 + "INFO:     GET /users 200\n")
    assert count_log_refusals(log) == 3
    log.write_text("no prefixes: too many clients\nagain: too many clients\nfine\n")
    assert count_log_refusals(log) == 2
    assert count_log_refusals(None) is None


# REFUSAL as first written: poolbench.results.applog's form starts with a case-sensitive set
# of first letters (3 × faster over a log) and must match exactly where this one does
REFUSAL_READABLE = re.compile(
    r"(?<![\w:/.\[#-])53300(?![\w\]:.])|too many clients|remaining connection slots|"
    r"TooManyConnections",
    re.I,
)


def test_refusal_pattern_matches_where_its_readable_form_does() -> None:
    rng = random.Random(3)
    pieces = [
        "53300", "153300", "533001", ":53300", "/53300", "[53300]", "#53300", "-53300",
        ".53300", "53300.", "53300:", " 53300 ", "(53300)", "too many clients",
        "TOO MANY CLIENTS", "Too Many Clients", "too many client", "remaining connection slots",
        "Remaining Connection Slots", "remaining connection", "TooManyConnections",
        "toomanyconnections", "TooManyConnectionsError", "tt", "rr", "5", "t", "r", " ", "x",
        "é", "\u0130",
    ]  # fmt: skip
    for _ in range(3000):
        line = "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 6)))
        expected = [m.span() for m in REFUSAL_READABLE.finditer(line)]
        assert [m.span() for m in REFUSAL.finditer(line)] == expected, line


def test_the_end_to_end_tests_refusal_check_skips_a_client_port_of_53300() -> None:
    """test_run's stock-postgres test once asked whether "53300" occurred anywhere in the
    after variant's app log, and CI failed when a request came from client port 53300."""
    access = 'INFO:     127.0.0.1:53300 - "GET /users/53300 HTTP/1.1" 200 OK\n'
    assert "53300" in access  # the old check counted this line
    assert not names_a_refusal(access)
    refused = "asyncpg.exceptions.TooManyConnectionsError: sorry, too many clients already\n"
    assert names_a_refusal(access + refused)
    assert names_a_refusal("HTTPError('500: remaining connection slots are reserved')")
    assert names_a_refusal("psycopg.errors.TooManyConnections: SQLSTATE 53300")


# --- comparisons across repeats ---------------------------------------------------------------


@pytest.mark.slow
def test_repeats_are_summarised_by_their_median(tmp_path):
    specs = []
    for repeat, level in ((1, 20), (2, 18), (3, 16)):
        for name, n in (("before", 5), ("after", 1)):
            engines = [EngineSpec(f"{name}:m{i}", load=[(1.0, level)]) for i in range(n)]
            specs.append(
                VariantSpec(name=name, engines=engines, repeat=repeat, seed=repeat * 10 + n)
            )
    summary = analyse(write_run(tmp_path, specs)).summary
    experiment = summary.experiments[0]
    before = experiment.variants[0]
    assert [f.repeat for f in before.repeats] == [1, 2, 3]
    assert [f.connections.peak for f in before.repeats] == [100, 90, 80]
    row = experiment.comparisons[0].row("peak_connections")
    assert (row.baseline, row.variant) == (90, 18)
    assert row.baseline_values == [100, 90, 80] and row.variant_values == [20, 18, 16]
    assert row.change_pct == pytest.approx(-80.0)
    # a count that varies across repeats is not exact: tested, and 3 vs 3 cannot reach p < 0.05
    assert row.result.status == "untested" and row.verdict == "untested"
    assert (row.result.a.n, row.result.b.n) == (3, 3)
    notes = " ".join(row.result.footnotes)
    assert "before varies across repeats (100, 90, 80)" in notes
    assert "smallest achievable p is 0.1" in notes  # 2 / C(6, 3)
    assert summary.headline == "Peak connections 90 → 18 (−80 %)"
    assert experiment.claims is None  # the experiment states no claims


@pytest.fixture(scope="module")
def five_repeats(tmp_path_factory) -> Analysis:
    """Five repeats per variant, every one alike: 100 → 120 requests/s (seed-claim), and
    100 → 100 (same); the same latencies (10, 20, 30, 40 ms) everywhere."""
    specs = []
    for experiment, rps_after in (("seed-claim", 120.0), ("same", 100.0)):
        for repeat in range(1, 6):
            before, after = seed_claim_specs(
                experiment=experiment,
                repeat=repeat,
                rps=100.0,
                rps_sd=0.0,
                latency_cycle=(10.0, 20.0, 30.0, 40.0),
            )
            after.rps = rps_after
            specs += [before, after]
    claims = {"seed-claim": SEED_CLAIMS["seed-claim"], "same": SEED_CLAIMS["seed-claim"]}
    return analyse(write_run(tmp_path_factory.mktemp("repeats"), specs, claims=claims))


def test_a_goodput_shift_across_repeats_is_significant(five_repeats):
    table = five_repeats.summary.experiments[0].comparisons[0]
    assert (table.n_baseline, table.n_variant) == (5, 5)
    row = table.row("goodput")
    assert (row.baseline, row.variant) == (100, 120)
    assert row.change_pct == pytest.approx(20.0)
    # every after above every before: p = 2 / C(10, 5)
    assert row.result.p_value == pytest.approx(2 / 252)
    assert row.verdict == "better" and row.established and not row.within_run
    assert table.row("p95_ms").verdict == "no difference"  # 40 ms in every repeat
    # goodput better, p95 and refusals unchanged: "better performance" only partly
    item = judgement(five_repeats, "performance")
    assert item.verdict == "partly"
    assert "Goodput" in item.reason and "No difference" in item.reason


def test_no_goodput_shift_across_repeats_is_no_difference(five_repeats):
    experiment = five_repeats.summary.experiments[1]
    assert experiment.name == "same"
    row = experiment.comparisons[0].row("goodput")
    assert (row.baseline, row.variant) == (100, 100)
    assert row.verdict == "no difference" and not row.established
    item = judgement(five_repeats, "performance", experiment=1)
    assert item.verdict == "does not hold"
    assert item.reason.startswith("No difference")


# --- claims and generic baselines -------------------------------------------------------------


def test_seed_claims_judged(seed_run):
    assert verdicts(seed_run) == {
        "connections": "holds",
        "connections_pct": "holds",
        "pools": "holds",
        "engines": "not measured",  # no census.json: the engine sites were not counted
        "memory_leak": "not measured",  # 6 s at a constant load
        "memory_reduction": "untested",  # one repeat: measured, the difference untested
        "performance": "untested",  # one repeat: a within-run test never decides a claim
    }
    assert judgement(seed_run, "connections").measured == "100 → 20"
    assert judgement(seed_run, "pools").measured == "5 → 1"


def _sites(n: int) -> dict:
    return {
        "sites": [
            {"module": f"app.m{i}", "line": i, "kind": "async", "scope": "import"} for i in range(n)
        ]
    }


@pytest.mark.parametrize(
    ("before_sites", "after_sites", "verdict"),
    [
        (9, 4, "holds"),
        (10, 4, "holds"),  # meets the claimed 4 from a higher start: beats the claim
        (9, 5, "partly"),  # fewer, but not as few as claimed
        (9, 9, "does not hold"),
    ],
)
def test_engines_claim_uses_the_census(tmp_path, before_sites, after_sites, verdict):
    before, after = seed_claim_specs()
    before.census, after.census = _sites(before_sites), _sites(after_sites)
    analysis = analyse(write_run(tmp_path, [before, after], claims=SEED_CLAIMS))
    item = judgement(analysis, "engines")
    assert item.verdict == verdict
    assert item.measured == f"{before_sites} → {after_sites}"
    assert figures(analysis, "before").census.sites == before_sites
    assert figures(analysis, "before").census.by_scope == {"import": before_sites}


def test_baseline_is_the_first_variant_whatever_its_name(tmp_path):
    new = VariantSpec(
        name="consolidated", engines=[EngineSpec("c:a", load=[(1.0, 10)], pool_size=10)]
    )
    old = VariantSpec(
        name="sprawl",
        engines=[EngineSpec(f"s:{i}", load=[(1.0, 10)], pool_size=10) for i in range(3)],
    )
    analysis = analyse(write_run(tmp_path, [new, old], claims=SEED_CLAIMS))
    experiment = analysis.summary.experiments[0]
    assert experiment.baseline == "consolidated"
    table = experiment.comparisons[0]
    assert (table.baseline, table.variant) == ("consolidated", "sprawl")
    assert analysis.summary.headline == "Peak connections 10 → 30 (+200 %)"
    assert judgement(analysis, "connections").verdict == "does not hold"
    assert judgement(analysis, "connections_pct").verdict == "does not hold"


def test_single_variant_has_a_headline_and_unmeasured_claims(tmp_path):
    analysis = analyse(write_run(tmp_path, seed_claim_specs()[:1], claims=SEED_CLAIMS))
    assert analysis.summary.headline == "Peak connections 100 (before)"
    assert analysis.summary.experiments[0].comparisons == []
    assert set(verdicts(analysis).values()) == {"not measured"}
    assert list(verdicts(analysis)) == list(SEED_CLAIMS["seed-claim"])


# --- the directory ---------------------------------------------------------------------------


def test_missing_or_malformed_directories_raise_one_line_errors(tmp_path):
    with pytest.raises(PoolbenchError, match="no such results directory"):
        analyse(tmp_path / "nope")
    with pytest.raises(PoolbenchError, match=r"no run\.json"):
        analyse(tmp_path)
    (tmp_path / "run.json").write_text("{ not json")
    with pytest.raises(PoolbenchError, match="not valid JSON") as info:
        analyse(tmp_path)
    assert "\n" not in str(info.value)


def test_variants_without_samples_are_left_out_with_a_warning(tmp_path):
    run_dir = write_run(tmp_path, seed_claim_specs())
    (run_dir / "seed-claim/after-1/samples.csv").unlink()
    summary = analyse(run_dir).summary
    assert [v.name for v in summary.experiments[0].variants] == ["before"]
    assert summary.experiments[0].comparisons == []
    assert any("after-1" in w and "no samples.csv" in w for w in summary.warnings)
    (run_dir / "seed-claim/before-1/samples.csv").unlink()
    with pytest.raises(PoolbenchError, match=r"no variant with a samples\.csv"):
        analyse(run_dir)


def test_a_malformed_samples_file_is_an_error(tmp_path):
    run_dir = write_run(tmp_path, seed_claim_specs()[:1])
    (run_dir / "seed-claim/before-1/samples.csv").write_text("when,what\n1,2\n")
    with pytest.raises(PoolbenchError) as info:
        analyse(run_dir)
    assert "\n" not in str(info.value)


def test_variant_dirs_cannot_escape_the_run(tmp_path):
    run_dir = write_run(tmp_path, seed_claim_specs())
    run = json.loads((run_dir / "run.json").read_text())
    run["experiments"][0]["variants"][1]["dir"] = "../../etc"
    (run_dir / "run.json").write_text(json.dumps(run))
    summary = analyse(run_dir).summary
    assert len(summary.experiments[0].variants) == 1
    assert any("outside the run" in w for w in summary.warnings)


def test_partial_run_is_flagged(tmp_path):
    summary = analyse(write_run(tmp_path, seed_claim_specs(), status="partial")).summary
    assert summary.run.status == "partial"
    assert "partial" in summary.warnings[0]
    assert summary.headline.endswith("— run partial")


def test_synthetic_generator_writes_the_contract(tmp_path):
    run_dir = write_run(tmp_path, seed_claim_specs(), claims=SEED_CLAIMS)
    header = (run_dir / "seed-claim/before-1/samples.csv").read_text().splitlines()[0]
    assert header == "ts,metric,application_name,state,wait_event_type,component,value"
    run = json.loads((run_dir / "run.json").read_text())
    assert run["experiments"][0]["variants"][0]["dir"] == "seed-claim/before-1"
    assert run["experiments"][0]["claims"] == SEED_CLAIMS["seed-claim"]
    for name in ("locust_stats_history.csv", "requests.bin", "requests.names.json"):
        assert (run_dir / "seed-claim/before-1" / name).is_file(), name


def _wide_by_pandas(frame: pd.DataFrame, column: str, index: pd.Index) -> pd.DataFrame:
    """What series._wide computed before its bincount path: pandas' groupby, as it was."""
    wide = (
        frame.groupby(["ts", column], sort=True, observed=True)["value"]
        .sum(min_count=1)
        .unstack(column)
    )
    wide.columns = wide.columns.astype("str")
    return wide.reindex(index).fillna(0.0)


@pytest.mark.parametrize("labels", ["category", "str"])
@pytest.mark.parametrize("values", ["counts", "bytes", "fractions"])
def test_wide_series_equal_pandas_groupby_sums(labels, values):
    """Per-label series summed with bincount: the same table, column order and all, as the
    groupby it replaced, with NaN values, repeated (ts, label) rows, absent labels and ticks."""
    import numpy as np

    from poolbench.analysis.series import _wide

    rng = np.random.default_rng(7)
    n = 5_000
    names = np.array(["b:z", "a:y", "untagged", "c", "a:x"])
    value = {
        "counts": rng.integers(0, 40, n).astype(float),
        "bytes": rng.integers(0, 2**34, n).astype(float),
        "fractions": rng.random(n) * 100,
    }[values]
    value[rng.random(n) < 0.05] = np.nan
    frame = pd.DataFrame(
        {
            "ts": T0 + rng.integers(0, 300, n) / 10,
            "label": pd.Series(names[rng.integers(0, 4, n)]).astype(labels),
            "value": value,
        }
    )
    if labels == "category":  # a category no row uses, out of sorted order
        frame["label"] = frame["label"].cat.set_categories(["untagged", "c", "b:z", "a:y", "q"])
    index = pd.Index(np.sort(np.unique(np.r_[frame["ts"], T0 + 31.05])), name="ts")
    got = _wide(frame, "label", index)
    pd.testing.assert_frame_equal(got, _wide_by_pandas(frame, "label", index), check_exact=True)


def test_per_block_reuses_a_logs_time_order_without_changing_a_figure():
    """per_block sorts a request log by response time once and reuses the order for the next
    cuts of the same log, and keeps its last cuts: every figure equals a per-call lexsort's,
    for several cuts of one log (NaN response times, failures, requests outside), a cut asked
    again after its first answer was written over, and a second log."""
    import numpy as np

    from poolbench.analysis.block_test import per_block

    def by_lexsort(start, response_ms, ok, edges):
        k = edges.size - 1
        index = np.searchsorted(edges, start + response_ms / 1000, side="right") - 1
        good = (index >= 0) & (index < k) & ok
        order = np.lexsort((response_ms[good], index[good]))
        blocks, times = index[good][order], response_ms[good][order]
        served = np.bincount(blocks, minlength=k)
        first = np.searchsorted(blocks, np.arange(k))
        p95 = [
            times[f + max(int(np.ceil(0.95 * n - 1e-9)), 1) - 1] if n else np.nan
            for f, n in zip(first, served, strict=True)
        ]
        mean = np.bincount(blocks, weights=times, minlength=k) / np.maximum(served, 1)
        return served, np.array(p95), np.where(served > 0, mean, np.nan)

    rng = np.random.default_rng(3)
    for n in (20_000, 7_000):
        start = T0 + np.sort(rng.random(n) * 600)
        response_ms = np.round(rng.exponential(40, n), 1)  # many equal times
        response_ms[rng.random(n) < 0.01] = np.nan
        ok = rng.random(n) > 0.03
        for edges in (T0 + np.arange(0, 601, 1.0), T0 + np.arange(100, 400, 7.5)):
            edges = np.asarray(edges, float)
            got = per_block(start, response_ms, ok, edges)
            served, p95, mean = by_lexsort(start, response_ms, ok, edges)
            np.testing.assert_array_equal(got.goodput, served / np.diff(edges))
            np.testing.assert_array_equal(got.p95_ms, p95)
            np.testing.assert_array_equal(got.mean_ms, mean)
            got.p95_ms[:] = -1  # a caller's own arrays: the next cut of these seconds is whole
            again = per_block(start, response_ms, ok, edges)
            np.testing.assert_array_equal(again.p95_ms, p95)


def test_a_client_port_path_or_pid_that_reads_53300_is_not_a_refusal(tmp_path):
    """CI stop 29: uvicorn's access log gave a request from port 53300 and it counted as
    PostgreSQL refusing a connection (an ephemeral port lies in 32768–60999)."""
    app_log = (
        "INFO:     Started server process [53300]\n"
        'INFO:     127.0.0.1:53300 - "GET /users/53300?limit=20 HTTP/1.1" 200 OK\n'
        'INFO:     127.0.0.1:41000 - "GET /orders/53300 HTTP/1.1" 200 OK\n'
        "ERROR:    Exception in ASGI application\n"
        "asyncpg.exceptions.TooManyConnectionsError: sorry, too many clients already\n"
        "ERROR:    pgcode=53300 (SQLSTATE 53300)\n"
    )
    spec = VariantSpec(name="f", engines=[EngineSpec("f:a")], app_log=app_log)
    _, f = one(tmp_path, spec)
    assert f.traffic.refusals_app_log == 2  # the two ERROR records, not the INFO lines


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("HTTPError('500 Server Error for url: http://127.0.0.1:8000/users/53300')", "http_5xx"),
        ("worker pid 153300 exited", "other"),
    ],
)
def test_a_number_that_contains_53300_is_not_classified_a_refusal(message, kind):
    assert classify(message) == kind


@pytest.mark.parametrize(
    "values",
    [
        [],
        [5.0],
        [1.0, 1.0, 2.5, 2.5, 2.5, 7.0],  # in time order: one pass
        [3.0, 1.0, 3.0, 2.0],  # not: sorted
        [1.0, float("nan"), 2.0, float("nan")],
        [1.0, 2.0, float("nan")],
    ],
)
def test_sorted_unique_is_numpys_unique(values: list[float]) -> None:
    x = np.asarray(values, dtype=float)
    distinct, inverse = sorted_unique(x)
    expected, expected_inverse = np.unique(x, return_inverse=True)
    np.testing.assert_array_equal(distinct, expected)
    np.testing.assert_array_equal(inverse, expected_inverse)


def test_rows_by_metric_as_a_groupby_gives_them() -> None:
    """build_series splits metric categories by one sort: each metric's rows, in file order,
    with their index, as pandas' groupby split gives them (a missing label: the groupby)."""
    metrics = ["connections", "slots_left", "connections", "gap", "slots_left", "connections"]
    frame = pd.DataFrame({"ts": [1.0, 1.0, 2.0, 2.0, 3.0, 3.0], "metric": metrics})
    frame["value"] = range(len(frame))
    for column in (frame["metric"].astype("category"), frame["metric"]):
        split = _by_metric(frame.assign(metric=column))
        expected = dict(tuple(frame.assign(metric=column).groupby("metric", observed=True)))
        assert sorted(split) == sorted(str(k) for k in expected)
        for key, rows in expected.items():
            pd.testing.assert_frame_equal(split[str(key)], rows)


def test_fewer_collections_restores_the_collector_and_keeps_no_garbage() -> None:
    """The report's analysis and charts run with the collector frozen and slowed; after the
    block the thresholds and the frozen set are as before, and a cycle made inside is freed."""

    class Node:
        pass

    before = gc.get_threshold()
    with fewer_collections():
        assert gc.get_threshold()[0] >= YOUNG_THRESHOLD and gc.get_freeze_count() > 0
        node = Node()
        node.self = node  # type: ignore[attr-defined]  # a cycle: only the collector frees it
        ref = weakref.ref(node)
        del node
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    gc.collect()
    assert ref() is None
