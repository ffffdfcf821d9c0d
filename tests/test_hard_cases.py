"""Issue 22 (part B): the report stays true when pools saturate, apps run many processes, idle
is not idle, the server is shared. One test per defect, each on a synthetic run with a known
answer (tests/synthetic.py); each docstring records what the code before the fix printed."""

from __future__ import annotations

from pathlib import Path

import pytest
from synthetic import EngineSpec, MiB, VariantSpec, write_run

from poolbench.analysis.figures import VariantFigures
from poolbench.analysis.run_analysis import Analysis, analyse
from poolbench.analysis.summary import read_summary, write_summary
from poolbench.report import build_report


def run(tmp_path: Path, specs: list[VariantSpec]) -> tuple[Analysis, str]:
    run_dir = write_run(tmp_path, specs)
    analysis = analyse(run_dir)
    build_report(run_dir, analysis, charts=False)
    return analysis, (run_dir / "report.md").read_text().replace("\\", "")  # md escapes


def figures(analysis: Analysis, variant: str) -> VariantFigures:
    return next(r.figures for r in analysis.runs if r.figures.variant == variant)


def advice(analysis: Analysis, variant: str):
    return next(a for a in analysis.summary.experiments[0].sizing.advice if a.variant == variant)


# --- 5: a saturated pool is never advised smaller ---------------------------------------------


def test_a_saturated_pool_is_never_advised_smaller(tmp_path):
    """after's single pool of 20 sits at its ceiling through the whole load with 8 of its
    connections active and the app at 95 % of its one core. Before the fix the report read
    "Recommended: 10 connections in total — pool_size 10 per worker × 1 worker(s)" beside
    "after: ... reached its ceiling ... the advice from it is a lower bound"."""
    before = VariantSpec(
        name="before", engines=[EngineSpec("before:db", pool_size=40, load=[(1.0, 20)], active=8)]
    )
    after = VariantSpec(
        name="after",
        engines=[EngineSpec("after:db", pool_size=20, load=[(1.0, 20)], active=8)],
        cpu={"app": 95.0, "postgres": 40.0},
        seed=2,
    )
    analysis, md = run(tmp_path, [before, after])
    a = advice(analysis, "after")
    assert a.saturated and a.kept
    assert a.pool_size_per_worker == 20 and a.recommended_total == 20  # not 10
    assert a.bound == "app CPU"
    assert "another worker is the first change" in a.action
    # before's pool (ceiling 40) never filled: its advice comes from the demand, 8 × 1.25
    b = advice(analysis, "before")
    assert not b.saturated and b.bound == "demand" and b.recommended_total == 10
    assert (
        "after: Keep 20 connections in total — 20 per worker (after:db 20 (pool_size 20 + "
        "max_overflow 0, kept)) × 1 worker(s)" in md
    )
    assert "pool_size 10 per worker × 1 worker(s)" not in md.split("after: ", 1)[1]


# --- 6: total = per worker × workers ----------------------------------------------------------


def test_advice_total_is_per_worker_times_workers(tmp_path):
    """2 workers, 7 active connections: ceil(7 × 1.25) = 9 wanted, 5 per worker, so 10 in
    total. Before the fix: "Recommended: 9 connections in total — pool_size 5 per worker ×
    2 worker(s)" (summary.json recommended_total 9, pool_size_per_worker 5) and "Against w2's
    20 connections held when idle: 11 fewer"."""
    spec = VariantSpec(
        name="w2",
        workers=2,
        engines=[EngineSpec("w2:db", pool_size=20, load=[(1.0, 20)], active=7)],
    )
    analysis, md = run(tmp_path, [spec])
    a = advice(analysis, "w2")
    assert a.needed == 7
    assert (a.pool_size_per_worker, a.workers, a.recommended_total) == (5, 2, 10)
    assert "10 connections in total — pool_size 5 per worker × 2 worker(s)" in md
    # the saving follows from the total: 20 held when idle, 10 advised
    assert a.saving.idle == 20 and a.saving.fewer_connections == 10
    assert "20 connections held when idle: 10 fewer" in md
    write_summary(analysis.summary, analysis.run_dir)
    back = read_summary(analysis.run_dir).experiments[0].sizing.advice[0]
    assert back.recommended_total == back.pool_size_per_worker * back.workers == 10


# --- 7: one engine in N worker processes is one engine ----------------------------------------


def untagged(name: str, labels: list[str], workers: int, seed: int) -> VariantSpec:
    engines = [EngineSpec(label, load=[(1.0, 5)], listed=False) for label in labels]
    engines.append(EngineSpec("untagged", pool_size=5, max_overflow=0, load=[(1.0, 0)]))
    return VariantSpec(name=name, engines=engines, workers=workers, seed=seed)


def test_worker_processes_are_not_phantom_engines(tmp_path):
    """One engine without application_name in 1 vs 2 uvicorn workers, labelled by the
    collector after each client process. Before the fix: "Application names holding
    connections when idle 1 → 2 ❌ +100 % (exact)", and the engines were
    `untagged:fastapi:28268` vs `untagged:python3.11:32531` / `untagged:python3.11:32532`."""
    one = untagged("one", ["untagged:fastapi:28268"], 1, 1)
    two = untagged("two", ["untagged:python3.11:32531", "untagged:python3.11:32532"], 2, 2)
    analysis, md = run(tmp_path, [one, two])
    row = analysis.summary.experiments[0].comparisons[0].row("pools_holding_idle")
    assert (row.baseline, row.variant) == (1, 1)
    for name, pids in (("one", [28268]), ("two", [32531, 32532])):
        f = figures(analysis, name)
        assert [e.name for e in f.connections.engines] == ["untagged"]
        assert [p.pid for p in f.connections.processes] == pids
        assert f.model.measured_processes == len(pids)
        [engine] = f.model.engines
        assert engine.measured_idle == 5 * len(pids) == engine.idle
    line = next(x for x in md.splitlines() if "holding connections when idle" in x)
    assert "+100" not in line
    # the per-process detail has its own table (for the variant with more than one process)
    assert "two: untagged connections per client process (one engine)" in md
    assert "| 32531 |" in md


# --- 8: idle that is not idle -----------------------------------------------------------------


def test_a_backlog_in_the_idle_phase_is_not_blamed_on_the_configuration(tmp_path):
    """pool 5 + overflow 10: the app is still serving the load's backlog (15 connections
    active) through the whole idle phase. Before the fix: "untagged keeps 15 connections when
    idle, not the 5 its full pools should keep (pool_recycle, a failed pre-ping, a disposed
    engine, or sessions never returned)"."""
    engine = EngineSpec(
        "app:db",
        pool_size=5,
        max_overflow=10,
        load=[(1.0, 15)],
        idle=[(1.0, 15)],
        active=15,
        idle_active=[(1.0, 15)],
    )
    analysis, md = run(tmp_path, [VariantSpec(name="slow", engines=[engine])])
    f = figures(analysis, "slow")
    codes = {flag.code for flag in f.model.flags}
    assert "idle_mismatch" not in codes and "idle_not_reached" in codes
    assert f.connections.idle is None and f.windows.idle_settled is None
    assert "idle was not reached" in f.windows.idle_note
    assert "pool_recycle" not in md and "Idle was not reached" in md


def test_idle_is_measured_once_the_backlog_drained(tmp_path):
    """The backlog drains 9 s into a 12 s idle phase (15 active, then 5 idle). Before the fix
    the idle count was the median over the 2nd half, 10 — "keeps 10 connections when idle, not
    the 5 its full pools should keep (pool_recycle, …)"; after it, 5, measured from when the
    backlog drained."""
    engine = EngineSpec(
        "app:db",
        pool_size=5,
        max_overflow=10,
        load=[(1.0, 15)],
        idle=[(0.75, 15), (0.25, 5)],
        active=15,
        idle_active=[(0.75, 15), (0.25, 0)],
    )
    analysis, _ = run(tmp_path, [VariantSpec(name="drain", engines=[engine], idle_s=12.0)])
    f = figures(analysis, "drain")
    idle = f.windows.phases["idle"]
    assert f.windows.idle_settled.name == "idle, after the backlog drained"
    assert idle.start + 9 <= f.windows.idle_settled.start <= idle.start + 10
    assert f.connections.idle == 5
    codes = {flag.code for flag in f.model.flags}
    assert "idle_mismatch" not in codes and "idle_matches" in codes


# --- 9: memory on a shared server -------------------------------------------------------------


def test_memory_on_a_shared_server_counts_only_the_variants_own_backends(tmp_path):
    """Another database's client holds 40 connections (2 MiB each) through `before` and 40 → 10
    through `after`, while the variant's own connections go 4 → 15 (1 MiB each, postmaster
    10 MiB). Before the fix: "PostgreSQL memory, PSS | idle | 100 MiB | 51.0 MiB | −49.0 %"
    (server-wide) and for after "PSS per additional backend −3.0 MiB (−3.0 MiB … −3.0 MiB)"."""
    before = VariantSpec(
        name="before",
        engines=[EngineSpec("before:db", pool_size=4, load=[(1.0, 4)], warmup=4)],
        other_clients=(40, 40, 40),
    )
    after = VariantSpec(
        name="after",
        engines=[EngineSpec("after:db", pool_size=15, load=[(1.0, 15)])],
        other_clients=(40, 10, 10),
        seed=2,
    )
    analysis, md = run(tmp_path, [before, after])
    b, a = figures(analysis, "before").memory, figures(analysis, "after").memory
    assert (
        b.scope == a.scope == "the variant's own backends + the postmaster (other clients present)"
    )
    assert (b.other_clients, a.other_clients) == (40, 40)
    assert b.postgres_pss.idle == (4 + 10) * MiB and a.postgres_pss.idle == (15 + 10) * MiB
    assert a.pss_per_backend.value == pytest.approx(MiB)  # 0 → 15 own backends, +1 MiB each
    row = analysis.summary.experiments[0].comparisons[0].row("postgres_pss_idle")
    assert row.change_pct > 0  # more connections cost more memory, not less
    assert "other clients held up to 40 connections" in md
    assert any(
        "before-1: other clients held 40 connections" in w for w in analysis.summary.warnings
    )


def test_a_negative_marginal_cost_is_not_measured_never_a_saving():
    """PSS falling while backends rise (another client left): before the fix, a slope of
    −3.0 MiB per backend that the savings multiplied."""
    import pandas as pd

    from poolbench.analysis.memory import marginal_pss

    t = pd.Index([float(i) for i in range(20)])
    backends = pd.Series([0.0] * 10 + [15.0] * 10, index=t)
    pss = pd.Series([96.0 * MiB] * 10 + [51.0 * MiB] * 10, index=t)
    slope, note = marginal_pss(pss, backends)
    assert slope is None and "PSS fell as backends were added" in note


# --- 10: intervals as wide as the data --------------------------------------------------------


def test_marginal_cost_interval_respects_time_drift_and_autocorrelation(tmp_path):
    """Backends step 4 → 8 → 12 → 16 → 20 over 100 s (1 MiB each) while PostgreSQL's PSS also
    grows 0.05 MiB/s with time (pages faulted in). The known cost per backend is 1 MiB. Before
    the fix, with every 1 Hz sample taken as independent: "1.3 MiB (1.3 MiB … 1.3 MiB)" (1.28,
    95 % CI 1.26 … 1.29 MiB, n = 122) — an interval that excludes the truth."""
    steps = [(0.2, 4), (0.2, 8), (0.2, 12), (0.2, 16), (0.2, 20)]
    spec = VariantSpec(
        name="drift",
        engines=[EngineSpec("drift:db", load=steps)],
        load_s=100.0,
        idle_s=20.0,
        pss_drift_bytes_per_s=0.05 * MiB,
        rps=50.0,
        rps_sd=0.0,
        latency_cycle=(10.0,),
    )
    analysis, md = run(tmp_path, [spec])
    slope = figures(analysis, "drift").memory.pss_per_backend
    assert slope.low <= MiB <= slope.high
    assert slope.value == pytest.approx(MiB, rel=0.02)
    assert slope.n < slope.samples  # one observation per stretch at one backend count
    assert "levels" in md and "samples)" in md


# --- 11: unsteady windows ---------------------------------------------------------------------


def test_a_trend_in_the_full_load_window_is_flagged(tmp_path):
    """Goodput falls 1 request/s every second of a 60 s load around 230 /s (≈ 232 → 204 /s
    between the full-load window's halves). Before the fix nothing said so: the goodput row read
    "goodput; failures/s | 228 /s; 0.00 /s" and Little's law "+1.2 % | ✅ agrees"."""
    falling = VariantSpec(
        name="falling",
        engines=[EngineSpec("f:db")],
        load_s=60.0,
        rps=230.0,
        rps_sd=2.0,
        rps_trend_per_s=-1.0,
        latency_cycle=(10.0,),
    )
    steady = VariantSpec(
        name="steady",
        engines=[EngineSpec("s:db")],
        load_s=60.0,
        rps=230.0,
        rps_sd=2.0,
        latency_cycle=(10.0,),
        seed=2,
    )
    analysis, md = run(tmp_path, [falling, steady])
    [drop] = figures(analysis, "falling").traffic.unsteady
    assert drop.what == "goodput" and drop.high < 0
    assert drop.first_half == pytest.approx(230 + 14, abs=3)  # window = load from 4 s to 60 s
    assert drop.second_half == pytest.approx(230 - 14, abs=3)
    assert figures(analysis, "steady").traffic.unsteady == []
    note = f"not steady: goodput {drop.first_half:.0f} /s → {drop.second_half:.0f} /s"
    assert any(
        "falling-1: the full-load window is not steady" in w for w in analysis.summary.warnings
    )
    assert md.count(note) >= 2  # beside goodput, and in Little's law's table
    row = analysis.summary.experiments[0].comparisons[0].row("goodput")
    assert any(t.startswith("falling: not steady, goodput") for t in row.result.footnotes)
    assert not any(t.startswith("steady: not steady") for t in row.result.footnotes)


# --- 15: a leak verdict needs warm-up excluded, a threshold that matters, private memory ------


def test_warm_up_and_shared_pages_are_not_a_leak(tmp_path):
    """The app's USS climbs 2 MiB over the first 60 s of a 500 s load (allocator arenas), then
    holds; PostgreSQL's PSS grows 36 MiB/h as backends fault in shared_buffers while its USS
    holds. Before the fix: PostgreSQL PSS "❌ growing" (+36.0 MiB/h) — a leak verdict from
    shared pages — and app USS "not measured" (4.2 MiB/h, 95 % CI −51.7 … 60.2: the warm-up
    inside the window widened the interval past any verdict)."""
    spec = VariantSpec(
        name="soak",
        engines=[EngineSpec("s:db")],
        load_s=500.0,
        rps=50.0,
        rps_sd=0.0,
        latency_cycle=(10.0,),
        app_warmup_bytes=2 * MiB,
        app_warmup_s=60.0,
        pss_drift_bytes_per_s=0.01 * MiB,
    )
    analysis, md = run(tmp_path, [spec])
    trends = {t.what: t for t in figures(analysis, "soak").leak}
    app = trends["app USS"]
    assert app.verdict == "no growth"
    assert app.warmup_s == pytest.approx(124, abs=1)  # the window's first quarter, 496 s / 4
    assert app.threshold_per_h == 3 * MiB  # 60 MiB doubling in a day is 2.5 MiB/h: the floor
    assert trends["PostgreSQL USS"].verdict == "no growth"
    pss = trends["PostgreSQL PSS"]
    assert pss.verdict == "not judged" and not pss.judged
    assert pss.slope_per_h == pytest.approx(36 * MiB, rel=0.01)  # shown, not judged
    table = md.split("Growth at a constant load")[1].split("\n\n#")[0]
    assert "of warm-up" in table and "| growing |" not in table


def test_a_short_soak_gives_no_leak_verdict(tmp_path):
    """`--soak 70`: 70 s at a constant load, the app growing 13 MiB/h. Before the fix: app USS
    "growing" (+13 MiB/h). 70 s cannot tell 3 MiB/h from 0.25 MiB of jitter (that takes
    300 s): not measured. Before the fix: "app USS | full load, pools filled, 70 s | 13.0 MiB/h |
    ❌ growing"."""
    spec = VariantSpec(
        name="quick",
        engines=[EngineSpec("q:db")],
        load_s=74.0,
        rps=50.0,
        rps_sd=0.0,
        latency_cycle=(10.0,),
        app_leak_bytes_per_s=13 * MiB / 3600,
    )
    analysis, _ = run(tmp_path, [spec])
    app = next(t for t in figures(analysis, "quick").leak if t.what == "app USS")
    assert app.verdict == "not measured"
    assert "too short" in app.reason and "at least 300 s" in app.reason


def test_connections_below_their_ceiling_are_never_a_leak():
    """A connection count rising 10 → 25 over a 120 s soak, under a ceiling of 40. Before the
    fix: "connections ❌ growing" beside "that is a leak only if the count passes it"."""
    import numpy as np
    import pandas as pd

    from poolbench.analysis.figures import _below_ceiling
    from poolbench.analysis.leak import trend
    from poolbench.analysis.model import PoolModel
    from poolbench.analysis.typed import Window

    t = np.arange(0.0, 120.0, 0.1)
    count = pd.Series(np.floor(10 + 15 * t / 120), index=t)
    raw = trend("connections", "connections", count, Window("soak", 0.0, 120.0))
    assert raw.verdict == "growing"
    model = PoolModel(1, None, [], {}, ceiling=40, idle=20, measured_peak=25, measured_idle=None)
    judged = _below_ceiling(raw, model)
    assert judged.verdict == "not judged" and "below the pools' ceiling (25 of 40)" in judged.reason
    at_ceiling = PoolModel(
        1, None, [], {}, ceiling=25, idle=20, measured_peak=25, measured_idle=None
    )
    assert _below_ceiling(raw, at_ceiling).verdict == "growing"


def test_split_over_engines_adds_up_to_the_per_worker_size(tmp_path):
    """Three engines, one doing nearly all the work (4 active): 1 each, the rest by activity,
    summing to pool_size per worker. Before the fix: "5 connections in total — 5 per worker,
    split over its engines (m:busy pool_size 4, m:rare pool_size 1, m:idle pool_size 1)": 6."""
    engines = [
        EngineSpec("m:busy", pool_size=40, load=[(1.0, 20)], active=4),
        EngineSpec("m:rare", pool_size=40, load=[(1.0, 2)], active=0),
        EngineSpec("m:idle", pool_size=40, load=[(1.0, 1)], active=0),
    ]
    analysis, _ = run(tmp_path, [VariantSpec(name="m", engines=engines)])
    a = advice(analysis, "m")
    assert a.recommended_total == a.pool_size_per_worker == 5  # ceil(4 × 1.25)
    assert sum(a.per_engine.values()) == a.pool_size_per_worker
    assert a.per_engine["m:rare"] >= 1 and a.per_engine["m:idle"] >= 1
