"""Analysis on synthetic results directories whose answers are known by construction.

Each expected value is computed by hand from the spec (see tests/synthetic.py): load phase
10 s at 10 Hz = 100 connection samples, idle phase 4 s = 40 samples (20 in its second half),
memory at 1 Hz.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from synthetic import EngineSpec, MiB, VariantSpec, seed_claim_specs, write_run

from poolbench.analysis import analyse, bootstrap_difference, classify_failure, median_tree
from poolbench.errors import PoolbenchError


def variant(summary: dict, name: str, experiment: int = 0) -> dict:
    for v in summary["experiments"][experiment]["variants"]:
        if v["variant"] == name:
            return v["metrics"]
    raise KeyError(name)


def claim(summary: dict, claim_id: str) -> dict:
    return next(i for i in summary["claims"]["items"] if i["id"] == claim_id)


@pytest.fixture(scope="module")
def seed_run(tmp_path_factory) -> dict:
    return analyse(write_run(tmp_path_factory.mktemp("seed"), seed_claim_specs())).summary


# --- connections -------------------------------------------------------------------------


def test_peaks_percentiles_and_idle_of_the_seed_scenario(seed_run):
    before, after = variant(seed_run, "before"), variant(seed_run, "after")
    # before: 10 samples at 5 × 10 = 50, then 90 at 5 × 20 = 100
    assert before["connections"]["load_peak"] == 100
    assert before["connections"]["load_p95"] == 100
    assert before["connections"]["load_mean"] == pytest.approx(95.0)
    assert before["connections"]["idle"] == 100
    assert before["connections"]["samples_in_load"] == 100
    assert after["connections"]["load_peak"] == 20
    assert after["connections"]["load_mean"] == pytest.approx(19.0)
    assert after["connections"]["idle"] == 20
    assert set(before["per_engine"]) == {f"before:{m}" for m in
                                         ("app.db.session", "app.core.database",
                                          "app.api.dependencies", "app.core.db", "app.db")}  # fmt: skip
    assert all(e["load_peak"] == 20 for e in before["per_engine"].values())
    assert seed_run["headline"] == "Peak connections 100 → 20 (−80 %)"


def test_p95_interpolates_and_mean_differs(tmp_path):
    # 94 samples at 10, 6 at 60: sorted position 0.95 × 99 = 94.05 lies among the 60s
    spec = VariantSpec(
        name="only", engines=[EngineSpec("x:a", pool_size=60, load=[(0.94, 10), (0.06, 60)])]
    )
    m = variant(analyse(write_run(tmp_path, [spec])).summary, "only")
    assert m["connections"]["load_peak"] == 60
    assert m["connections"]["load_p95"] == 60
    assert m["connections"]["load_mean"] == pytest.approx(13.0)

    spec = VariantSpec(
        name="only", engines=[EngineSpec("x:a", pool_size=60, load=[(0.96, 10), (0.04, 60)])]
    )
    m = variant(analyse(write_run(tmp_path / "b", [spec])).summary, "only")
    # 96 at 10: positions 94 and 95 are both 10
    assert m["connections"]["load_p95"] == 10
    assert m["connections"]["load_mean"] == pytest.approx(12.0)


def test_idle_is_the_median_of_the_second_half_of_the_idle_phase(tmp_path):
    # overflow still open in the first half of the idle phase (30), pool_size kept after (20)
    engine = EngineSpec(
        "v:a", pool_size=20, max_overflow=10, load=[(1.0, 30)], idle=[(0.5, 30), (0.5, 20)]
    )
    summary = analyse(write_run(tmp_path, [VariantSpec(name="v", engines=[engine])])).summary
    m = variant(summary, "v")
    assert m["connections"]["idle"] == 20  # the whole idle phase's median would be 25
    assert m["per_engine"]["v:a"]["idle"] == 20
    assert m["model"]["predicted_idle"] == 20  # min(pool_size 20, opened 30)
    assert m["model"]["predicted_ceiling"] == 30
    assert {f["code"] for f in m["model"]["flags"]} >= {"idle_matches", "at_ceiling"}


def test_states_and_active_distribution(tmp_path):
    # active = min(level, 8): 50 samples at level 4 (all active), 50 at 20 (8 active)
    engine = EngineSpec("v:a", load=[(0.5, 4), (0.5, 20)], active=8, idle_in_transaction=2)
    m = variant(
        analyse(write_run(tmp_path, [VariantSpec(name="v", engines=[engine])])).summary, "v"
    )
    assert m["active"]["p50"] == pytest.approx(6.0)
    assert m["active"]["p99"] == 8
    assert m["active"]["max"] == 8
    assert m["active"]["mean"] == pytest.approx(6.0)
    assert m["states"]["load_mean"]["idle in transaction"] == pytest.approx(1.0)  # 0 then 2
    assert m["states"]["load_mean"]["idle"] == pytest.approx(5.0)  # 0 then 10
    assert m["states"]["idle"]["idle"] == 20


# --- the model ----------------------------------------------------------------------------


def test_model_counts_workers_and_overflow(tmp_path):
    # 2 workers × (5 + 10) per engine; each engine holds 12 over both workers, 10 when idle
    engines = [
        EngineSpec(f"w:{m}", pool_size=5, max_overflow=10, load=[(1.0, 12)], idle=[(1.0, 10)])
        for m in "ab"
    ]
    m = variant(
        analyse(write_run(tmp_path, [VariantSpec(name="w", engines=engines, workers=2)])).summary,
        "w",
    )
    model = m["model"]
    assert model["source"] == "variant.json"
    assert model["predicted_ceiling"] == 60
    assert model["predicted_idle"] == 20  # Σ min(2 × 5, 12)
    assert model["measured_peak"] == 24
    codes = {f["code"] for f in model["flags"]}
    assert "below_ceiling" in codes and "idle_matches" in codes
    assert [e["predicted_ceiling"] for e in model["engines"]] == [30, 30]


def test_model_flags_mismatches_in_words(tmp_path):
    engines = [
        # holds 25 when idle, above pool_size 20: 5 sessions left "idle in transaction"
        EngineSpec("m:a", load=[(1.0, 20)], idle=[(1.0, 25)], pool_size=20),
        EngineSpec("m:health", load=[(1.0, 2)], idle=[(1.0, 0)], listed=False),
    ]
    m = variant(analyse(write_run(tmp_path, [VariantSpec(name="m", engines=engines)])).summary, "m")
    flags = {f["code"]: f["message"] for f in m["model"]["flags"]}
    assert m["model"]["predicted_ceiling"] == 20
    assert m["connections"]["load_peak"] == 22
    assert "above_ceiling" in flags and "m:health 2" in flags["above_ceiling"]
    assert "idle_mismatch" in flags and "25" in flags["idle_mismatch"]
    assert m["model"]["unlisted"] == {"m:health": {"run_peak": 2.0, "idle": 0.0}}


def test_model_falls_back_to_observed_application_names(tmp_path):
    engines = [EngineSpec(f"o:{m}", load=[(1.0, 7)], listed=False) for m in "abc"]
    spec = VariantSpec(name="o", engines=engines, app_settings={"pool_size": 10, "max_overflow": 5})
    m = variant(analyse(write_run(tmp_path, [spec])).summary, "o")
    assert m["model"]["source"] == "observed"
    assert m["model"]["predicted_ceiling"] == 45
    assert m["model"]["predicted_idle"] == 21  # Σ min(10, 7)
    assert "engines_observed" in {f["code"] for f in m["model"]["flags"]}


# --- right-sizing ---------------------------------------------------------------------------


def test_right_sizing_uses_active_percentiles_and_littles_law(tmp_path):
    # 500 req/s exactly; active 4 for 60 samples then 8 for 40 → p50 4, mean 5.6, p99 8
    engine = EngineSpec("r:a", load=[(0.6, 4), (0.4, 20)], active=8)
    spec = VariantSpec(name="r", engines=[engine], rps=500.0, rps_sd=0.0)
    rs = analyse(write_run(tmp_path, [spec])).summary["experiments"][0]["right_sizing"]
    row = rs["per_variant"][0]
    assert row["requests_per_s"] == pytest.approx(500.0)
    assert row["active_p50"] == 4 and row["active_p99"] == 8
    assert row["hold_time_ms"] == pytest.approx(11.2)  # mean 5.6 / 500 s
    assert row["littles_law_connections"] == pytest.approx(5.6)
    assert row["needed"] == 8  # p99 active beats Little's 5.6
    assert rs["recommended_total"] == 10  # ceil(8 × 1.25)
    saving = rs["savings"][0]
    assert saving["connections_saved_at_peak"] == 10  # peak 20 → 10
    assert saving["connections_saved_idle"] == 10
    assert saving["postgres_pss_saved_idle_bytes"] == pytest.approx(10 * MiB)


def test_right_sizing_when_littles_law_dominates(tmp_path):
    # active constant at 10 → hold 10/400 s; p95 of per-second rps above the mean → L > 10
    engine = EngineSpec("r:a", load=[(1.0, 20)], active=10)
    spec = VariantSpec(name="r", engines=[engine], rps=400.0, rps_sd=40.0, load_s=60.0)
    summary = analyse(write_run(tmp_path, [spec])).summary
    rs = summary["experiments"][0]["right_sizing"]
    row = rs["per_variant"][0]
    assert row["littles_law_connections"] > 10
    assert row["needed"] == pytest.approx(row["littles_law_connections"])
    assert rs["recommended_total"] == math.ceil(row["needed"] * 1.25)


# --- churn, memory, CPU ---------------------------------------------------------------------


def test_churn_memory_and_cpu(seed_run):
    before, after = variant(seed_run, "before"), variant(seed_run, "after")
    # backends 100 × 1 MiB + postmaster 10 MiB + other 6 MiB
    assert before["memory"]["postgres_pss_bytes"]["idle"] == 116 * MiB
    assert after["memory"]["postgres_pss_bytes"]["idle"] == 36 * MiB
    assert before["memory"]["postgres_uss_bytes"]["idle"] == (50 + 16) * MiB
    assert before["memory"]["pss_per_backend_idle_bytes"] == MiB
    assert before["memory"]["postgres_backends_idle"] == 100
    assert before["memory"]["app_uss_bytes"]["load_peak"] == 60 * MiB
    assert before["cpu_percent"]["app"] == pytest.approx(80.0)
    assert before["cpu_percent"]["postgres"] == pytest.approx(53.0)


def test_sessions_per_second(tmp_path):
    spec = VariantSpec(name="c", engines=[EngineSpec("c:a")], sessions_new_per_s=7.0)
    m = variant(analyse(write_run(tmp_path, [spec])).summary, "c")
    assert m["churn"]["sessions_new_total"] == pytest.approx(70.0)
    assert m["churn"]["sessions_new_per_s_load"] == pytest.approx(7.0)
    assert m["churn"]["sessions_new_per_s_idle"] == pytest.approx(0.0)


def test_memory_growth_separates_a_leak_from_a_fixed_multiplier(tmp_path):
    before, after = seed_claim_specs()
    before.pg_leak_bytes_per_s = 5 * MiB  # grows 25 MiB over the 5 s steady window (> 5 %)
    summary = analyse(write_run(tmp_path, [before, after])).summary
    growth = variant(summary, "before")["memory"]["growth"]["postgres_pss"]
    assert growth["bytes_per_min"] == pytest.approx(300 * MiB, rel=1e-6)
    assert growth["grows"] is True
    assert variant(summary, "after")["memory"]["growth"]["postgres_pss"]["grows"] is False
    assert claim(summary, "memory_leak")["verdict"] == "holds"


def test_flat_memory_means_no_leak_to_eliminate(seed_run):
    item = claim(seed_run, "memory_leak")
    assert item["verdict"] == "does not hold"
    assert "fixed multiplier" in item["reason"]
    assert variant(seed_run, "before")["memory"]["growth"]["postgres_pss"]["grows"] is False


RAMP = [(0.2, 4), (0.2, 8), (0.2, 12), (0.2, 16), (0.2, 20)]  # 6 s per step over 30 s of load


def ramp_specs(engines_before: int = 5) -> list[VariantSpec]:
    """Connections step up five times; memory is 1 MiB PSS per connection, so it steps too."""
    return [
        VariantSpec(
            name=name,
            engines=[EngineSpec(f"{name}:m{i}", load=RAMP) for i in range(n)],
            load_s=30.0,
            idle_s=10.0,
            seed=n,
        )
        for name, n in (("before", engines_before), ("after", 1))
    ]


def test_memory_rising_in_steps_with_connections_is_not_a_leak(tmp_path):
    summary = analyse(write_run(tmp_path, ramp_specs())).summary
    before = variant(summary, "before")["memory"]
    # the old test: the second half of the load (12 → 20 connections per engine) "grows"
    assert before["growth"]["postgres_pss"]["grows"] is True
    leak = before["leak"]
    pg = leak["postgres_pss"]
    assert pg["load"]["windows"] == 5  # one per step
    assert pg["load"]["bytes_per_min"] == pytest.approx(0.0, abs=1)
    assert pg["load"]["grows"] is False and pg["idle"]["grows"] is False
    assert leak["app_uss"]["grows"] is False and leak["grows"] is False
    change = leak["load_change"]
    assert (change["backends_start"], change["backends_end"]) == (20, 100)
    assert change["postgres_pss_start_bytes"] == (20 + 16) * MiB
    assert change["pss_per_backend_end_bytes"] == MiB
    item = claim(summary, "memory_leak")
    assert item["verdict"] == "does not hold"
    assert "no leak to eliminate" in item["reason"]
    assert "backends went 20 → 100" in item["reason"]
    assert "fixed multiplier" in item["reason"]


def test_memory_rising_at_constant_connections_is_a_leak(tmp_path):
    before, after = ramp_specs()
    before.pg_leak_bytes_per_s = 1 * MiB  # grows inside every step, not only between them
    summary = analyse(write_run(tmp_path, [before, after])).summary
    pg = variant(summary, "before")["memory"]["leak"]["postgres_pss"]
    assert pg["load"]["bytes_per_min"] == pytest.approx(60 * MiB, rel=1e-6)
    assert pg["load"]["pct_over_window"] > 5
    assert pg["load"]["grows"] is True
    assert pg["idle"]["grows"] is False  # the leak grows with the work, not in the idle phase
    assert variant(summary, "after")["memory"]["leak"]["grows"] is False
    assert claim(summary, "memory_leak")["verdict"] == "holds"


def test_app_memory_rising_at_constant_load_is_a_leak(tmp_path):
    before, after = ramp_specs()
    before.app_leak_bytes_per_s = after.app_leak_bytes_per_s = MiB // 2
    summary = analyse(write_run(tmp_path, [before, after])).summary
    for name in ("before", "after"):
        leak = variant(summary, name)["memory"]["leak"]
        assert leak["app_uss"]["load"]["bytes_per_min"] == pytest.approx(30 * MiB, rel=1e-6)
        assert leak["app_uss"]["grows"] is True and leak["postgres_pss"]["grows"] is False
    item = claim(summary, "memory_leak")
    assert item["verdict"] == "does not hold"
    assert "after the change too" in item["reason"]


def test_too_little_time_at_constant_counts_is_not_measured(tmp_path):
    # a new connection every second (one memory sample each), then 2 s idle: nothing to judge
    steps = [(1.0, level) for level in range(1, 11)]
    specs = [
        VariantSpec(name=name, engines=[EngineSpec(f"{name}:a", load=steps)], idle_s=2.0)
        for name in ("before", "after")
    ]
    summary = analyse(write_run(tmp_path, specs)).summary
    assert variant(summary, "before")["memory"]["leak"]["grows"] is None
    assert claim(summary, "memory_leak")["verdict"] == "not measured"


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
    m = variant(analyse(run_dir).summary, "u")
    assert m["memory"]["app_uss_bytes"]["load_peak"] is None
    assert m["memory"]["postgres_pss_bytes"]["idle"] == (20 + 16) * MiB


# --- Locust ---------------------------------------------------------------------------------

FAILURES = [
    ("GET", "/items", 'CatchResponseError("500: asyncpg.exceptions.TooManyConnectionsError: sorry, too many clients already")', 7),
    ("GET", "/orders", "HTTPError('500 Server Error: FATAL: remaining connection slots are reserved for roles with the SUPERUSER attribute')", 3),
    ("POST", "/orders", "CatchResponseError('500: QueuePool limit of size 5 overflow 10 reached, connection timed out, timeout 30.00')", 4),
    ("GET", "/users", "ConnectionRefusedError(111, 'Connection refused')", 2),
    ("GET", "/health", "HTTPError('503 Server Error: Service Unavailable for url: /health')", 1),
    ("GET", "/items/{id}", "something odd", 1),
]  # fmt: skip


def test_failures_grouped_by_kind_and_53300_detected(tmp_path):
    spec = VariantSpec(
        name="f",
        engines=[EngineSpec("f:a")],
        failures=FAILURES,
        app_log="ERROR sqlstate 53300\nINFO fine\nFATAL: sorry, too many clients already\n",
    )
    m = variant(analyse(write_run(tmp_path, [spec])).summary, "f")
    kinds = m["locust"]["failures_by_kind"]
    assert kinds == {
        "too_many_connections": 10,
        "pool_timeout": 4,
        "timeout": 0,
        "connection_error": 2,
        "http_5xx": 1,
        "http_4xx": 0,
        "other": 1,
    }
    assert m["locust"]["failures"] == 18
    assert m["locust"]["too_many_clients_in_app_log"] == 2


def test_locust_totals_and_latency(seed_run):
    locust = variant(seed_run, "before")["locust"]
    assert locust["latency_ms"] == {"p50": 20, "p95": 60, "p99": 90, "mean": 22, "max": 180}
    assert locust["requests"] > 5000
    assert locust["requests_per_s"] == pytest.approx(locust["requests"] / 10, rel=1e-3)


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("psycopg.OperationalError: connection failed: FATAL: sorry, too many clients already", "too_many_connections"),
        ("asyncpg ... SQLSTATE 53300", "too_many_connections"),
        ("sqlalchemy.exc.TimeoutError: QueuePool limit of size 20 overflow 0 reached", "pool_timeout"),
        ("ReadTimeout('timed out')", "timeout"),
        ("HTTPError('404 Client Error')", "http_4xx"),
        ("", "other"),
    ],
)  # fmt: skip
def test_classify_failure(message, kind):
    assert classify_failure(message) == kind


# --- statistics and comparisons --------------------------------------------------------------


def test_bootstrap_says_no_significant_difference_for_one_distribution():
    rng = np.random.default_rng(7)
    a, b = rng.normal(600, 20, 300), rng.normal(600, 20, 300)
    test = bootstrap_difference(a, b, block=10)
    assert not test["significant"]
    assert test["ci95_pct"][0] < 0 < test["ci95_pct"][1]
    assert bootstrap_difference(a, b, block=10) == test  # seeded: the same answer every time


def test_bootstrap_detects_a_real_shift():
    rng = np.random.default_rng(7)
    a, b = rng.normal(600, 20, 300), rng.normal(720, 20, 300)
    test = bootstrap_difference(a, b, block=10)
    assert test["significant"]
    assert test["delta_pct"] == pytest.approx(20, abs=1.5)
    assert test["ci95_pct"][0] > 15
    assert bootstrap_difference([], b) is None


def test_throughput_comparison_and_performance_claim(tmp_path, seed_run):
    same = seed_run["experiments"][0]["comparisons"][0]["requests_per_s"]
    assert same["test"]["significant"] is False
    assert claim(seed_run, "performance")["verdict"] == "does not hold"
    assert "no significant difference" in claim(seed_run, "performance")["reason"].lower()

    before, after = seed_claim_specs(load_s=40.0)
    after.rps = 720.0
    summary = analyse(write_run(tmp_path, [before, after])).summary
    faster = summary["experiments"][0]["comparisons"][0]["requests_per_s"]
    assert faster["test"]["significant"] is True and faster["test"]["delta_pct"] > 15
    assert claim(summary, "performance")["verdict"] == "holds"


def test_repeats_are_summarised_by_their_median(tmp_path):
    specs = []
    for repeat, level in ((1, 20), (2, 18), (3, 16)):
        for name, n in (("before", 5), ("after", 1)):
            engines = [EngineSpec(f"{name}:m{i}", load=[(1.0, level)]) for i in range(n)]
            specs.append(
                VariantSpec(name=name, engines=engines, repeat=repeat, seed=repeat * 10 + n)
            )
    summary = analyse(write_run(tmp_path, specs)).summary
    experiment = summary["experiments"][0]
    before = experiment["variants"][0]
    assert before["repeats"] == [1, 2, 3]
    assert [r["connections"]["load_peak"] for r in before["per_repeat"]] == [100, 90, 80]
    assert before["metrics"]["connections"]["load_peak"] == 90
    test = experiment["comparisons"][0]["requests_per_s"]["test"]
    assert test["n"] == [3, 3] and "per-repeat" in test["method"]


def test_median_tree():
    assert median_tree(
        [{"a": 1, "b": {"c": 2.0}}, {"a": 3, "b": {"c": 4.0}}, {"a": 8, "b": {"c": None}}]
    ) == {
        "a": 3,
        "b": {"c": 3.0},
    }
    assert median_tree([{"s": "x", "g": False}, {"s": "y", "g": True}]) == {"s": None, "g": True}


# --- claims and generic baselines -------------------------------------------------------------


def test_seed_claims_judged(seed_run):
    verdicts = {i["id"]: i["verdict"] for i in seed_run["claims"]["items"]}
    assert verdicts == {
        "connections": "holds",
        "connections_pct": "holds",
        "pools": "holds",
        "engines": "partly",  # 5 → 1 long-lived engines, not 9 → 4
        "memory_leak": "does not hold",
        "memory_reduction": "partly",  # PostgreSQL −69 %, the app ±0 %
        "performance": "does not hold",
    }
    assert claim(seed_run, "connections")["measured"] == "100 → 20"


def test_engines_claim_uses_the_census_when_present(tmp_path):
    def sites(n):
        return {
            "sites": [
                {"module": f"app.m{i}", "line": i, "kind": "async", "scope": "import"}
                for i in range(n)
            ]
        }

    before, after = seed_claim_specs()
    before.census, after.census = sites(9), sites(4)
    summary = analyse(write_run(tmp_path, [before, after])).summary
    item = claim(summary, "engines")
    assert item["verdict"] == "holds" and item["measured"] == "9 → 4"
    assert "census" in item["reason"]

    before.census = sites(10)
    summary = analyse(write_run(tmp_path / "b", [before, after])).summary
    assert claim(summary, "engines")["verdict"] == "partly"


def test_baseline_is_the_first_variant_whatever_its_name(tmp_path):
    new = VariantSpec(
        name="consolidated", engines=[EngineSpec("c:a", load=[(1.0, 10)], pool_size=10)]
    )
    old = VariantSpec(
        name="sprawl",
        engines=[EngineSpec(f"s:{i}", load=[(1.0, 10)], pool_size=10) for i in range(3)],
    )
    summary = analyse(write_run(tmp_path, [new, old])).summary
    comparison = summary["experiments"][0]["comparisons"][0]
    assert (comparison["baseline"], comparison["variant"]) == ("consolidated", "sprawl")
    assert summary["headline"] == "Peak connections 10 → 30 (+200 %)"
    assert claim(summary, "connections")["verdict"] == "does not hold"
    assert claim(summary, "connections_pct")["verdict"] == "does not hold"


def test_single_variant_has_a_headline_and_unmeasured_claims(tmp_path):
    summary = analyse(write_run(tmp_path, seed_claim_specs()[:1])).summary
    assert summary["headline"] == "Peak connections 100 (before)"
    assert {i["verdict"] for i in summary["claims"]["items"]} == {"not measured"}


# --- the directory ---------------------------------------------------------------------------


def test_missing_or_malformed_directories_raise_one_line_errors(tmp_path):
    with pytest.raises(PoolbenchError, match="no such results directory"):
        analyse(tmp_path / "nope")
    with pytest.raises(PoolbenchError, match=r"no run\.json"):
        analyse(tmp_path)
    (tmp_path / "run.json").write_text("{ not json")
    with pytest.raises(PoolbenchError, match="invalid JSON") as info:
        analyse(tmp_path)
    assert "\n" not in str(info.value)


def test_variants_without_samples_are_left_out_with_a_warning(tmp_path):
    run_dir = write_run(tmp_path, seed_claim_specs())
    (run_dir / "seed-claim/after-1/samples.csv").unlink()
    summary = analyse(run_dir).summary
    assert [v["variant"] for v in summary["experiments"][0]["variants"]] == ["before"]
    assert any("after-1" in w and "no samples.csv" in w for w in summary["warnings"])
    (run_dir / "seed-claim/before-1/samples.csv").unlink()
    with pytest.raises(PoolbenchError, match=r"no variant with a samples\.csv"):
        analyse(run_dir)


def test_a_malformed_samples_file_is_an_error(tmp_path):
    run_dir = write_run(tmp_path, seed_claim_specs()[:1])
    (run_dir / "seed-claim/before-1/samples.csv").write_text("when,what\n1,2\n")
    with pytest.raises(PoolbenchError):
        analyse(run_dir)


def test_variant_dirs_cannot_escape_the_run(tmp_path):
    run_dir = write_run(tmp_path, seed_claim_specs())
    run = json.loads((run_dir / "run.json").read_text())
    run["experiments"][0]["variants"][1]["dir"] = "../../etc"
    (run_dir / "run.json").write_text(json.dumps(run))
    summary = analyse(run_dir).summary
    assert len(summary["experiments"][0]["variants"]) == 1
    assert any("outside the run" in w for w in summary["warnings"])


def test_partial_run_is_flagged(tmp_path):
    summary = analyse(write_run(tmp_path, seed_claim_specs(), status="partial")).summary
    assert summary["run"]["status"] == "partial"
    assert "partial" in summary["warnings"][0]


def test_synthetic_generator_writes_the_contract(tmp_path):
    run_dir = write_run(tmp_path, seed_claim_specs())
    header = (run_dir / "seed-claim/before-1/samples.csv").read_text().splitlines()[0]
    assert header == "ts,metric,application_name,state,wait_event_type,component,value"
    assert (
        json.loads((run_dir / "run.json").read_text())["experiments"][0]["variants"][0]["dir"]
        == "seed-claim/before-1"
    )
    assert Path(run_dir / "seed-claim/before-1/locust_stats_history.csv").is_file()


def test_a_saturated_pool_is_flagged_and_caps_the_right_sizing(tmp_path):
    # one pool of 4 with every connection active: requests queue for a connection
    engine = EngineSpec("s:a", pool_size=4, load=[(1.0, 4)], active=4)
    spec = VariantSpec(name="s", engines=[engine], pool_metrics=True)
    summary = analyse(write_run(tmp_path, [spec])).summary
    m = variant(summary, "s")
    row = m["model"]["engines"][0]
    assert row["saturated"] is True and row["active_max"] == 4 and row["checked_out_max"] == 4
    flags = {f["code"]: f["message"] for f in m["model"]["flags"]}
    assert "engine_saturated" in flags and "s:a" in flags["engine_saturated"]
    assert summary["experiments"][0]["right_sizing"]["saturated"] is True


def test_checked_out_connections_count_in_the_right_sizing(tmp_path):
    # 2 active, 6 more idle in transaction: checked out of the pool = 8 while only 2 run queries
    engine = EngineSpec("c:a", pool_size=20, load=[(1.0, 20)], active=2, idle_in_transaction=6)
    spec = VariantSpec(name="c", engines=[engine], pool_metrics=True)
    summary = analyse(write_run(tmp_path, [spec])).summary
    assert variant(summary, "c")["checked_out"]["p99"] == 8
    rs = summary["experiments"][0]["right_sizing"]
    assert rs["per_variant"][0]["checked_out_p99"] == 8
    assert rs["needed"] == 8 and rs["recommended_total"] == 10
    assert rs["saturated"] is False


def test_throughput_comes_from_locust_running_totals(tmp_path):
    run_dir = write_run(
        tmp_path, [VariantSpec(name="t", engines=[EngineSpec("t:a")], rps=500.0, rps_sd=0.0)]
    )
    path = run_dir / "seed-claim/t-1/locust_stats_history.csv"
    history = pd.read_csv(path, keep_default_na=False)
    history["Requests/s"] = 1.0  # Locust's rolling average, deliberately wrong here
    history.to_csv(path, index=False)
    m = variant(analyse(run_dir).summary, "t")
    assert m["locust"]["steady_requests_per_s"] == pytest.approx(500.0)


def test_refused_requests_are_counted_once_per_log_record(tmp_path: Path) -> None:
    """A chained traceback names 'too many clients' several times for one request."""
    from poolbench.analysis import _count_too_many_clients

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
    assert _count_too_many_clients(log) == 3
    log.write_text("no prefixes: too many clients\nagain: too many clients\nfine\n")
    assert _count_too_many_clients(log) == 2
