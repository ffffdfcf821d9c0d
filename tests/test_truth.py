"""One truth per figure: the defects of issue 9, each on a synthetic run with a known answer.

Every test reads what a team would paste into a pull request — the report's Markdown (and, where
it needs more, summary.json's typed model) — of a results directory written by tests/synthetic.py,
and compares it with an answer worked out by hand from the spec. They were written against the
old analysis first, where each of them failed (see the closing note of issue 9).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from synthetic import EngineSpec, VariantSpec, request_arrays, seed_claim_specs, write_run

from poolbench.analysis.run_analysis import analyse
from poolbench.report import build_report

MiB = 1024 * 1024
NUMBER = r"−?[\d ]+(?:\.\d+)?"


def report_md(tmp_path: Path, specs: list[VariantSpec], **kwargs) -> str:
    run_dir = write_run(tmp_path, specs, **kwargs)
    build_report(run_dir, charts=False)
    return (run_dir / "report.md").read_text()


def plain(md: str) -> str:
    """Markdown without its backslash escapes (`pool\\_size` → `pool_size`), for searching."""
    return re.sub(r"\\(.)", r"\1", md)


def table_row(md: str, label: str) -> list[str]:
    """The cells of the first table row whose first cell starts with `label`."""
    for line in md.splitlines():
        if line.startswith("| ") and line[2:].startswith(label):
            return [c.strip() for c in line.strip().strip("|").split("|")]
    raise AssertionError(f"no table row starting with {label!r}")


def _num(text: str) -> float:
    return float(text.replace("−", "-").replace(" ", ""))


def values_in(cells: list[str], unit: str) -> list[float]:
    """The numbers of the cells that hold exactly one figure in `unit`."""
    pattern = re.compile(rf"^({NUMBER}) {re.escape(unit)}$")
    return [_num(m.group(1)) for c in cells if (m := pattern.match(c))]


def change_in(cells: list[str]) -> float:
    for cell in cells:
        if m := re.search(r"([+−±])(\d+(?:\.\d+)?) %", cell):
            return _num(m.group(2)) * (-1 if m.group(1) == "−" else 1)
    raise AssertionError(f"no change in {cells}")


# --- 1. a row's change comes from the values beside it -----------------------------------------


def test_1_latency_row_change_is_computed_from_the_values_shown(tmp_path: Path) -> None:
    before, after = seed_claim_specs(latency_sd=8.0)
    before.latency_cycle = tuple(range(10, 110))  # p95 ≈ 104.5 ms
    after.latency_cycle = tuple(range(20, 180))  # p95 ≈ 172 ms
    md = report_md(tmp_path, [before, after])
    cells = table_row(md, "Latency p95")
    shown_before, shown_after = values_in(cells, "ms")
    assert change_in(cells) == pytest.approx(
        (shown_after - shown_before) / shown_before * 100, abs=0.06
    )


# --- 2. percentiles from every request -------------------------------------------------------


def test_2_percentiles_come_from_every_request_in_the_full_load_window(tmp_path: Path) -> None:
    specs = seed_claim_specs(rps=100.0, rps_sd=0.0)
    for spec in specs:
        spec.latency_cycle = tuple(float(v) for v in range(1, 101))  # one cycle a second
    md = report_md(tmp_path, specs)
    # each second serves the values 1..100 once: p50 = 50, p95 = 95, p99 = 99 (an observed value)
    for label, expected in (("Latency p50", 50), ("Latency p95", 95), ("Latency p99", 99)):
        assert values_in(table_row(md, label), "ms") == [pytest.approx(expected, abs=1)] * 2


# --- 3. one requests/s definition, its window named -------------------------------------------


def test_3_one_throughput_figure_per_variant_and_its_window_is_named(tmp_path: Path) -> None:
    specs = seed_claim_specs(rps_sd=40.0)
    run_dir = write_run(tmp_path, specs)
    build_report(run_dir, charts=False)
    md = (run_dir / "report.md").read_text()
    glance = table_row(md, "Goodput")
    assert "full load" in " ".join(glance)
    per_variant = values_in(glance, "/s")
    detail = table_row(md, "goodput; failures/s")
    assert [_num(c.split(" /s")[0]) for c in detail[1:]] == per_variant
    assert "Requests/s" not in md  # no second, differently defined figure under that name


# --- 4. failures are not throughput -------------------------------------------------------------


def test_4_failed_requests_are_reported_beside_goodput_not_in_it(tmp_path: Path) -> None:
    before, after = seed_claim_specs(rps=200.0, rps_sd=0.0)
    before.fail_every = 5  # a fifth of before's requests fail
    md = report_md(tmp_path, [before, after])
    goodput = values_in(table_row(md, "Goodput"), "/s")
    failures = values_in(table_row(md, "Failed requests/s"), "/s")
    assert goodput == [pytest.approx(160, abs=1), pytest.approx(200, abs=1)]
    assert failures == [pytest.approx(40, abs=1), 0.0]


# --- 5. pool fill is not churn -------------------------------------------------------------


def test_5_sessions_opened_while_the_pools_fill_are_not_churn(tmp_path: Path) -> None:
    specs = seed_claim_specs(sessions_new_per_s=2.0, load_s=20.0)
    specs[0].sessions_fill, specs[1].sessions_fill = 100, 20
    md = report_md(tmp_path, specs)
    churn = values_in(table_row(md, "New sessions/s after the pools filled"), "/s")
    assert churn == [pytest.approx(2.0, abs=0.01)] * 2
    filled = table_row(md, "Sessions opened while the pools filled")
    # the pools fill in the first 2 s of the load (the ramp): the burst plus the churn meanwhile
    # (the counters land up to a second late, so the fill window reaches a second beyond)
    assert 104 <= _num(filled[2]) <= 108 and 24 <= _num(filled[3]) <= 28


# --- 6. the model predicts from configuration only ---------------------------------------------


def test_6_idle_prediction_comes_from_configuration_and_an_unfilled_pool_proves_nothing(
    tmp_path: Path,
) -> None:
    spec = VariantSpec(
        name="before",
        engines=[
            EngineSpec("before:app.db", pool_size=20, load=[(1.0, 8)]),
            EngineSpec("before:app.x", pool_size=5, load=[(1.0, 5)]),
        ],
    )
    other = VariantSpec(
        name="after", engines=[EngineSpec("after:app.db", pool_size=20, load=[(1.0, 8)])], seed=2
    )
    run_dir = write_run(tmp_path, [spec, other])
    analysis = analyse(run_dir)
    model = analysis.summary.experiments[0].variants[0].first.model
    by_name = {e.name: e for e in model.engines}
    assert by_name["before:app.db"].idle == 20 and not by_name["before:app.db"].filled
    assert by_name["before:app.x"].idle == 5 and by_name["before:app.x"].filled
    build_report(run_dir, analysis, charts=False)
    md = (run_dir / "report.md").read_text()
    text = plain(md)
    assert "before:app.db never filled its pools" in text
    # the match is only claimed for the pool that filled
    assert (
        "Every pool that filled keeps exactly workers × pool_size when idle (before:app.x 5)"
        in text
    )


# --- 7. the cost of a connection is the marginal one ---------------------------------------------


def test_7_a_connection_costs_the_slope_of_pss_against_backends(tmp_path: Path) -> None:
    specs = seed_claim_specs(shared_pss=60 * MiB, pss_per_connection=MiB + MiB // 2)
    md = report_md(tmp_path, specs)
    marginal = table_row(md, "PSS per additional backend")
    assert marginal[1].startswith("1.5 MiB") and marginal[2].startswith("1.5 MiB")
    assert "fixed amount" not in md
    factors = table_row(md, "summed RSS ÷ PSS of PostgreSQL")
    # RSS 16 MiB per connection against PSS (60 MiB shared + 1.5 MiB each) + 16 MiB fixed, idle
    rss_b, pss_b = 100 * 16 * MiB + 16 * MiB, 60 * MiB + 100 * 1.5 * MiB + 16 * MiB
    rss_a, pss_a = 20 * 16 * MiB + 16 * MiB, 60 * MiB + 20 * 1.5 * MiB + 16 * MiB
    assert factors[1:] == [f"{rss_b / pss_b:.1f} ×", f"{rss_a / pss_a:.1f} ×"]


# --- 8. one verdict rule ------------------------------------------------------------------------


CLAIMS = {
    "seed-claim": {
        "pct": {"text": "80 % fewer connections", "metric": "peak_connections", "change_pct": -80},
        "level": {"text": "100 → 20", "metric": "peak_connections", "before": 100, "after": 20},
    }
}


def test_8_exact_counts_have_no_tolerance_and_every_claim_follows_one_rule(tmp_path: Path) -> None:
    before, after = seed_claim_specs()
    after.engines[0].load = [(0.1, 10), (0.9, 25)]  # 100 → 25: −75 %
    md = report_md(tmp_path, [before, after], claims=CLAIMS)
    assert "partly" in table_row(md, "80 % fewer connections")[3]
    assert "partly" in table_row(md, "100 → 20")[3]


def test_8_a_claim_met_exactly_holds(tmp_path: Path) -> None:
    md = report_md(tmp_path, seed_claim_specs(), claims=CLAIMS)
    assert "holds" in table_row(md, "80 % fewer connections")[3]
    assert "holds" in table_row(md, "100 → 20")[3]


# --- 9. badges only on exact or tested differences ---------------------------------------------


def test_9_no_badge_on_an_untested_difference_and_no_claim_of_noise_with_one_repeat(
    tmp_path: Path,
) -> None:
    before, after = seed_claim_specs()
    after.app_uss = int(before.app_uss * 0.96)  # −4 %, one repeat: untested
    lower = {"text": "Less app memory", "metrics": ["app_uss"], "direction": "lower"}
    claims = {"seed-claim": {**CLAIMS["seed-claim"], "mem": lower}}  # they declare directions
    md = report_md(tmp_path, [before, after], claims=claims)
    row = table_row(md, "App memory, USS")
    assert "✅" not in row[-1] and "❌" not in row[-1]
    assert "untested" in row[-1]
    assert "run-to-run noise" not in md and "significant" not in " ".join(table_row(md, "Goodput"))
    assert "✅" in table_row(md, "Peak connections")[-1]  # an exact count keeps its badge


@pytest.mark.slow
def test_9_repeats_earn_a_badge_for_a_tested_shift(tmp_path: Path) -> None:
    specs = []
    for repeat in range(1, 6):
        before, after = seed_claim_specs(repeat=repeat)
        after.app_uss = int(before.app_uss * 0.9) + repeat * 1000
        before.app_uss += repeat * 1000
        specs += [before, after]
    lower = {"text": "Less app memory", "metrics": ["app_uss"], "direction": "lower"}
    md = report_md(tmp_path, specs, claims={"seed-claim": {"mem": lower}})  # which way is better
    assert "✅" in table_row(md, "App memory, USS")[-1]


# --- 10. a command variant with four workers, one of which dies --------------------------------


def test_10_a_worker_exiting_is_an_event_not_an_impossible_memory_figure(tmp_path: Path) -> None:
    events = [
        {
            "ts": 1_764_393_300.0 + 2 + 5,
            "event": "app_process_exited",
            "pid": 4242,
            "exit_status": -9,
        }
    ]
    specs = [
        VariantSpec(
            name=name,
            engines=[
                EngineSpec(
                    f"untagged:python3:{pid}",
                    pool_size=5,
                    max_overflow=10,
                    load=[(1.0, 15)],
                    listed=False,
                )
                for pid in pids
            ],
            workers=4,
            app_uss=2800 * MiB,
            app_uss_drop=(0.5, 700 * MiB),
            events=events,
            seed=i,
        )
        for i, (name, pids) in enumerate((("one", (11, 12, 13, 14)), ("two", (21, 22, 23, 24))))
    ]
    md = report_md(tmp_path, specs)
    impossible = [m for m in re.findall(r"−(\d+(?:\.\d+)?) %", md) if float(m) > 100]
    assert impossible == []
    assert "app_process_exited" in plain(md) and "pid 4242" in md
    assert "Claims" not in md  # an experiment without claims gets no claims section
    assert "Engines" not in md  # worker processes are not engines


def test_10_a_change_below_minus_100_percent_is_a_bug_not_a_finding() -> None:
    from poolbench.analysis.typed import AnalysisBug, pct_change

    assert pct_change(100.0, 0.0) == -100.0
    with pytest.raises(AnalysisBug):
        pct_change(100.0, -5.0)


# --- the synthetic requests are what the tests above assume ------------------------------------


def test_synthetic_requests_are_evenly_spread_and_cycle_their_latency() -> None:
    spec = seed_claim_specs(rps=100.0, rps_sd=0.0)[0]
    spec.latency_cycle = (1.0, 2.0)
    start, response, ok = request_arrays(spec)
    assert start.size == 100 * int(spec.load_s) and ok.all()
    assert np.all(np.diff(start) > 0) and set(response) == {1.0, 2.0}


# --- a fault is not a finding (issue 15) --------------------------------------------------------


def test_a_variant_that_failed_spoils_every_claim_and_the_headline_says_what(
    tmp_path: Path,
) -> None:
    before, after = seed_claim_specs()
    after.status = "failed"
    after.error = "the app's master process (pid 4242) exited (signal 9) at t = 1.5 s (load phase)"
    md = report_md(tmp_path, [before, after], claims=CLAIMS, status="failed")
    first = md.splitlines()[0]
    assert "not complete: after-1 failed" in first and "signal 9" in first
    for claim in ("80 % fewer connections", "100 → 20"):
        assert "not measured" in table_row(md, claim)[3]


@pytest.mark.slow
def test_refused_requests_keep_a_performance_claim_from_holding(tmp_path: Path) -> None:
    specs = []
    for repeat in range(1, 6):
        before, after = seed_claim_specs(repeat=repeat)
        after.rps = before.rps * 1.3  # clearly more goodput …
        after.app_log = (
            "ERROR Exception in ASGI application\n  asyncpg: sorry, too many clients already\n"
        )
        specs += [before, after]  # … but one request refused per repeat
    claims = {
        "seed-claim": {"perf": {"text": "Faster", "metrics": ["goodput"], "direction": "better"}}
    }
    md = report_md(tmp_path, specs, claims=claims)
    verdict = table_row(md, "Faster")
    assert "partly" in verdict[3] and "refused" in plain(verdict[4])


# --- leak test: growth the connections do not explain (issue 11) -------------------------------


def test_memory_that_follows_new_connections_is_not_growth_but_a_real_leak_is() -> None:
    import pandas as pd

    from poolbench.analysis.leak import FLAT, GROWING, Window, trend

    t = 1_000.0 + np.arange(600.0)  # ten minutes at 1 Hz
    rng = np.random.default_rng(3)
    connections = pd.Series(np.minimum(20, 10 + np.floor(t - t[0]) // 60), index=t)  # pools filling
    per_connection = connections * 2 * MiB + rng.normal(0, 0.2 * MiB, t.size)
    window = Window("soak", t[0], t[-1] + 1)
    held = trend(
        "PSS", "bytes", pd.Series(100 * MiB + per_connection, index=t), window, connections
    )
    assert held.verdict == FLAT and held.low_per_h <= 0 <= held.high_per_h
    leak = pd.Series(100 * MiB + per_connection + (t - t[0]) * 30 * MiB / 3600, index=t)
    grows = trend("PSS", "bytes", leak, window, connections)
    assert grows.verdict == GROWING and grows.low_per_h <= 30 * MiB <= grows.high_per_h
    naive = trend("PSS", "bytes", pd.Series(100 * MiB + per_connection, index=t), window)
    assert naive.verdict == GROWING  # without the connection count, filling pools look like a leak
