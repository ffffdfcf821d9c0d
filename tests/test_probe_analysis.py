"""The pool probe's figures on a synthetic run with known answers (no app, no database).

Two worker processes (pids 100, 101) each create the engine at `app.x:10` (QueuePool 2 + 1,
ceiling 3, named by the probe) and pid 100 also `app.y:20` (QueuePool 10 + 0). The full-load
window is T0 + 6 … T0 + 12 s (60 ticks of 0.1 s per process).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from synthetic import T0, EngineSpec, VariantSpec, write_probe, write_run

from poolbench.analysis.pool_probe import headroom, p95_ms_per_bin, spread
from poolbench.analysis.run_analysis import analyse
from poolbench.report.document import build_document
from poolbench.report.markdown import render_markdown

OPENED = 0x100
X = {
    "engine": 1,
    "site": "app.x:10",
    "module": "app.x",
    "line": 10,
    "file": "app/x.py",
    "pool_class": "QueuePool",
    "queue": True,
    "pool_size": 2,
    "max_overflow": 1,
    "ceiling": 3,
    "pool_timeout": 30.0,
    "pool_recycle": -1,
    "pool_pre_ping": False,
    "driver": "postgresql+asyncpg",
    "database": "shop",
    "user": "app",
}
Y = {
    **X,
    "engine": 2,
    "site": "app.y:20",
    "module": "app.y",
    "line": 20,
    "pool_size": 10,
    "max_overflow": 0,
    "ceiling": 10,
}
ZERO = dict.fromkeys(
    (
        "idle",
        "open",
        "overflow",
        "connecting",
        "checkouts",
        "closes_detached",
        "detaches",
        "invalidations",
        "soft_invalidations",
        "pre_ping_failures",
        "errors",
    ),
    0,
)


def _samples(engine: int, full_until: float, **counters) -> list[dict]:
    """Every 0.5 s from T0 + 0.45: out 3 (and 4 waiting) from T0 + 5.95 until `full_until`,
    else 1; `counters` maps a name to [(from offset, value)]."""
    rows = []
    for k in range(33):
        t = T0 + 0.45 + 0.5 * k
        full = T0 + 5.95 <= t < full_until
        out, pending = (3, 4) if full else (1, 0)
        row = {
            "t": t,
            "engine": engine,
            **ZERO,
            "out": out,
            "out_max": out,
            "pending": pending,
            "pending_max": pending,
            "connects": 0,
            "closes": 0,
            "timeouts": 0,
            "engines": 1,
        }
        for name, steps in counters.items():
            row[name] = max([v for since, v in steps if t >= T0 + since], default=0)
        rows.append(row)
    return rows


def _y_samples() -> list[dict]:
    rows = _samples(2, 0)
    for row in rows:
        row["out"] = row["out_max"] = 3 if abs(row["t"] - (T0 + 8.45)) < 1e-6 else 2
    return rows


def _probe_processes() -> dict[int, dict]:
    checkouts = [
        (T0 + 6.0 + 0.05 * i, (i + 1) / 1000, 0.005, 1, OPENED if i >= 90 else 0)
        for i in range(100)
    ]
    outside = [(T0 + 3.0, 10.0, 0.005, 1, 0)] * 5
    y = [(T0 + 7.0 + 0.01 * i, 0.00005, 0.002, 2, 0) for i in range(50)]
    return {
        100: {
            "engines": [X, Y],
            "names": {1: ("app.x:10", "probe"), 2: ("shop-y", "app")},
            "samples": _samples(1, T0 + 8.95, connects=[(0, 2), (6.45, 3)], closes=[(10.45, 1)])
            + _y_samples(),
            "records": [*checkouts, *outside, (T0 + 6.4, 0.007, 0.0, 1, 3), *y],
        },
        101: {
            "engines": [X],
            "names": {1: ("app.x:10", "probe")},
            "samples": _samples(1, T0 + 7.45, timeouts=[(7.95, 1)]),
            "records": [(T0 + 8.0, 0.5, float("nan"), 1, 1)],
        },
    }


def _analysis(tmp_path: Path, engines: list[EngineSpec]):
    spec = VariantSpec(name="v", engines=engines, workers=2)
    run_dir = write_run(tmp_path, [spec])
    write_probe(run_dir / spec.dir, _probe_processes())
    analysis = analyse(run_dir)
    return analysis, analysis.summary.experiments[0].variants[0].first


MEASURED = [
    EngineSpec("app.x:10", listed=False, load=[(1.0, 6)], idle=[(1.0, 4)]),
    EngineSpec("shop-y", listed=False, load=[(1.0, 3)], idle=[(1.0, 2)]),
]


def test_wait_percentiles_are_exact_over_the_window_timeouts_included(tmp_path: Path) -> None:
    _, f = _analysis(tmp_path, MEASURED)
    assert f.probe is not None and f.probe.window == f.traffic.window
    x = f.probe.engine("app.x:10")
    # 100 checkouts waiting 1 … 100 ms and one 500 ms timeout in the window; 5 outside
    assert x.wait.n == 101
    assert (x.wait.p50_ms, x.wait.p95_ms, x.wait.p99_ms, x.wait.max_ms) == pytest.approx(
        (51, 96, 100, 500), rel=1e-6
    )
    # queueing alone: without the 10 checkouts that opened a connection (91 … 100 ms)
    assert x.queued.n == 91 and x.queued.p95_ms == pytest.approx(87, rel=1e-6)
    assert (x.checkouts, x.opened, x.use.p50_ms) == (100, 10, pytest.approx(5, rel=1e-6))
    assert x.create.n == 1 and x.create.p50_ms == pytest.approx(7, rel=1e-6)


def test_time_at_ceiling_peaks_counters_and_sizing_advice(tmp_path: Path) -> None:
    analysis, f = _analysis(tmp_path, MEASURED)
    x = f.probe.engine("app.x:10")
    # pid 100 full for 30 of its 60 ticks, pid 101 for 15 of 60
    assert x.at_ceiling_share == pytest.approx(45 / 120)
    assert (x.peak_out, x.peak_out_total, x.peak_waiting, x.processes) == (3, 6, 4, 2)
    assert x.counters == {
        "connects": 1,
        "closes": 1,
        "invalidations": 0,
        "pre_ping_failures": 0,
        "timeouts": 1,
        "errors": 0,
    }
    assert x.advice.startswith(
        "checkouts queued for a connection (p95 87.0 ms, at its ceiling 38 %"
    )
    assert "1 timeouts" in x.advice
    y = f.probe.engine("app.y:20")
    assert y.application_name == "shop-y" and y.name_source == "app"
    assert y.peak_out == 3 and y.at_ceiling_share == 0
    assert "can shrink to 4" in y.advice  # 3 at most, no queueing: 3 + headroom
    sizing = analysis.summary.experiments[0].sizing
    assert sizing.waits == [f"v app.x:10: {x.advice}", f"v app.y:20: {y.advice}"]


def test_the_model_takes_the_measured_pools_when_none_are_declared(tmp_path: Path) -> None:
    _, f = _analysis(tmp_path, MEASURED)
    model = f.model
    assert model is not None
    by_name = {e.name: e for e in model.engines}
    assert set(by_name) == {"app.x:10", "shop-y"}
    assert by_name["app.x:10"].ceiling == 2 * 3 and by_name["shop-y"].ceiling == 2 * 10
    assert by_name["app.x:10"].measured_peak == 6
    assert not [fl for fl in model.flags if fl.code == "declaration_mismatch"]


def test_a_declaration_that_disagrees_with_the_probe_is_flagged(tmp_path: Path) -> None:
    """`untagged` 5 + 10 declared; the probe named the app's unnamed engine app.x:10 and
    measured 2 + 1: its connections are the declared engine's, and the mismatch is said."""
    declared = [*MEASURED, EngineSpec("untagged", pool_size=5, max_overflow=10, load=[(1.0, 0)])]
    analysis, f = _analysis(tmp_path, declared)
    [engine] = f.model.engines
    assert engine.name == "untagged" and "app.x:10" in engine.members
    [flag] = [fl for fl in f.model.flags if fl.code == "declaration_mismatch"]
    assert "pool_size 5, max_overflow 10" in flag.message and "2 + 1 at app.x:10" in flag.message
    text = render_markdown(build_document(analysis.summary, [], tmp_path))
    assert "### Inside the pools" in text
    assert (
        "| v | app.x:10 | app.x:10 (set by the probe) | "
        "QueuePool 2 + 1 × 2 processes, timeout 30 s |" in text
    )


def test_spread_is_the_inverted_cdf_and_headroom_adds_a_quarter() -> None:
    s = spread(np.array([0.004, 0.001, 0.003, 0.002, np.nan]))
    assert (s.n, s.p50_ms, s.p95_ms, s.max_ms) == (4, 2.0, 4.0, 4.0)
    assert spread(np.array([])).n == 0
    assert [headroom(k) for k in (0, 1, 3, 4, 8)] == [1, 2, 4, 5, 10]


def test_a_variant_without_probe_files_has_no_probe_figures(tmp_path: Path) -> None:
    spec = VariantSpec(name="v", engines=MEASURED)
    analysis = analyse(write_run(tmp_path, [spec]))
    f = analysis.summary.experiments[0].variants[0].first
    assert f.probe is None
    assert "Inside the pools" not in render_markdown(build_document(analysis.summary, [], tmp_path))


def test_the_report_sets_the_change_in_p95_beside_the_change_in_wait(tmp_path: Path) -> None:
    """b's requests are slower at p95 and its checkouts wait three times longer: the wait
    accounts for the change; with the same waits on both sides it does not."""
    a = VariantSpec(name="a", engines=MEASURED, workers=2, latency_cycle=(10.0,))
    b = VariantSpec(name="b", engines=MEASURED, workers=2, latency_cycle=(200.0,))
    run_dir = write_run(tmp_path / "slower", [a, b])
    slower = _probe_processes()
    for p in slower.values():
        p["records"] = [(t, w * 3, u, e, k) for t, w, u, e, k in p["records"]]
    write_probe(run_dir / a.dir, _probe_processes())
    write_probe(run_dir / b.dir, slower)
    text = render_markdown(build_document(analyse(run_dir).summary, [], tmp_path))
    [line] = [x for x in text.splitlines() if x.startswith("a → b: request p95")]
    assert line.startswith("a → b: request p95 10 ms → 200 ms (+190 ms); checkout wait p95 of")
    assert "the pool requests waited on longest 96.0 ms (app.x:10)" in line
    assert "(app.x:10) → 288" in line and "accounts for at least half of that change" in line

    run_dir = write_run(tmp_path / "same", [a, b])
    write_probe(run_dir / a.dir, _probe_processes())
    write_probe(run_dir / b.dir, _probe_processes())
    text = render_markdown(build_document(analyse(run_dir).summary, [], tmp_path))
    assert "the wait for a connection does not account for it" in text


def test_a_damaged_line_or_a_foreign_file_is_skipped_and_said(tmp_path: Path) -> None:
    spec = VariantSpec(name="v", engines=MEASURED, workers=2)
    run_dir = write_run(tmp_path, [spec])
    vdir = run_dir / spec.dir
    write_probe(vdir, _probe_processes())
    text = (vdir / "probe" / "101.jsonl").read_text().splitlines(keepends=True)
    text.insert(3, '{"type": "sample", "t": 17\n')  # a line broken in the middle
    (vdir / "probe" / "101.jsonl").write_text("".join(text))
    (vdir / "probe" / "notes.jsonl").write_text("not the probe's\n")
    analysis = analyse(run_dir)
    f = analysis.summary.experiments[0].variants[0].first
    assert f.probe.damaged == ["notes.jsonl: not read", "101.jsonl: 1 damaged lines skipped"]
    assert f.probe.engine("app.x:10").wait.n == 101  # everything else still read
    text = render_markdown(build_document(analysis.summary, [], tmp_path))
    assert "Damaged probe files: v notes.jsonl: not read; v 101.jsonl: 1 damaged" in text


def test_p95_per_bin_is_the_spread_of_each_bin() -> None:
    """The chart's checkout wait p95 per second, one sort for all bins: each bin's value is
    spread()'s p95 of its waits, NaN waits left out, NaN for a bin holding only NaN."""
    rng = np.random.default_rng(4)
    bins = np.floor(rng.uniform(0, 30, 2000))
    waits = rng.lognormal(-6, 1.5, 2000)
    waits[rng.random(2000) < 0.1] = np.nan
    waits[bins == 7] = np.nan  # a bin of connects only: no wait
    got = p95_ms_per_bin(bins, waits)
    assert list(got.index) == sorted(set(bins))
    for key, value in got.items():
        expected = spread(waits[bins == key]).p95_ms
        assert (np.isnan(value) and expected is None) or value == expected, key


def test_record_kinds_are_named_and_an_unknown_code_is_a_question_mark(tmp_path: Path) -> None:
    """The checkout records' kinds by their code (the low byte; 0x100 flags a checkout that
    opened a connection), an unknown code read as "?" rather than dropped or guessed."""
    from poolbench.results.pool_probe import OPENED, RECORD_DTYPE, _read_records

    codes = [0, 1, 2, 3, 7, 0 | OPENED, 3]
    records = np.zeros(len(codes), dtype=RECORD_DTYPE)
    records["kind"] = codes
    records["t"] = np.arange(len(codes))
    (tmp_path / "p.bin").write_bytes(records.tobytes())
    frame = _read_records(tmp_path / "p.bin", pid=1)
    kinds = ["checkout", "timeout", "error", "connect", "?", "checkout", "connect"]
    assert list(frame["kind"]) == kinds
    assert list(frame["opened"]) == [False] * 5 + [True, False]
