"""The report a DBA signs (issue 22, defects 1–4, 12–14): synthetic runs with known answers.

The run: experiment seed-claim (no refusals) and experiment stock-postgres, whose `before` ran
out of server slots: 5 pools of 30 (ceiling 150) stopped at 100 by a server with
max_connections 103 (3 reserved), which logged 30 refusals "remaining connection slots are
reserved" and 12 "too many clients already", and 5 short sessions, all after the pools filled;
its app logged 3 refusals and Locust counted 40 failed requests naming one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from synthetic import (
    SEED_MODULES,
    EngineSpec,
    ServerLogSpec,
    VariantSpec,
    seed_claim_specs,
    write_run,
)

from poolbench import format as fmt
from poolbench.analysis.run_analysis import analyse
from poolbench.report import build_report

REFUSED = ("GET", "/items", "500: asyncpg TooManyConnectionsError: sorry, too many clients", 40)
APP_LOG = "INFO started\n" + "ERROR: Exception in ASGI application\n  asyncpg 53300\n" * 3


def stock_specs() -> list[VariantSpec]:
    ramp = [(0.1, 10), (0.9, 20)]
    before = VariantSpec(
        name="before",
        experiment="stock-postgres",
        engines=[
            EngineSpec(
                name=f"before:{m}", load=ramp, active=4, pool_size=30, idle_in_transaction=10
            )
            for m in SEED_MODULES
        ],
        max_connections=103,
        server_log=ServerLogSpec(reserved=30, no_slot=12, short_sessions=5),
        sessions_new_per_s=0.0301,
        failures=[REFUSED],
        app_log=APP_LOG,
        server_settings={"max_connections": "103", "shared_buffers": "16384"},
    )
    after = VariantSpec(
        name="after",
        experiment="stock-postgres",
        seed=2,
        engines=[
            EngineSpec(name="after:app.db.session", load=ramp, active=5, idle_in_transaction=3)
        ],
        server_log=ServerLogSpec(),
        sessions_new_per_s=1.1533,
        server_settings={"max_connections": "103", "shared_buffers": "16384"},
    )
    return [before, after]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    seed = seed_claim_specs()
    seed[0].engines.append(EngineSpec(name="before:app.extra", load=[(1.0, 1)], pool_size=1))
    run_dir = write_run(tmp_path_factory.mktemp("dba"), [*seed, *stock_specs()])
    meta = json.loads((run_dir / "run.json").read_text())
    meta["experiments"][0]["description"] = "Five pools or one: is it 101 -> 20? `pool_size`"
    (run_dir / "run.json").write_text(json.dumps(meta))
    build_report(run_dir, charts=False)
    return run_dir


@pytest.fixture(scope="module")
def analysis(run):
    return analyse(run)


def _table(analysis, experiment: str):
    return next(e for e in analysis.summary.experiments if e.name == experiment).comparisons[0]


def _glance_line(md: str, experiment: str, label: str) -> str:
    part = md[md.index(f"At a glance — {experiment}") :]
    return next(line for line in part.splitlines() if line.startswith(f"| {label}"))


def test_1_each_experiment_has_its_own_headline_line(analysis, run):
    # old: one line, "Peak connections 101 → 20 (−80 %); requests refused by PostgreSQL:
    # before 40" — seed-claim's peaks beside stock-postgres's refusals, −80.2 % rounded to −80
    assert analysis.summary.headline.splitlines() == [
        "seed-claim: Peak connections 101 → 20 (−80.2 %)",
        "stock-postgres: Peak connections 100 → 20 (−80 %); connection attempts refused by "
        "PostgreSQL (its log): before 42",
    ]
    md = (run / "report.md").read_text()
    # one rounding rule: the headline's change is the glance table's
    assert "−80.2 % (exact)" in _glance_line(md, "seed-claim", "Peak connections |")


def test_2_the_sizing_advice_counts_refusals_as_the_server_did(analysis, run):
    """The advice of a variant the server's slots bound names the refused connection attempts
    from the server's log (42), not the failed requests from the app's side (40): a fresh
    make bench read "(1 020 requests refused)" beside 1 014 refused attempts elsewhere."""
    md = (run / "report.md").read_text()
    part = md[md.index("Right-sizing from measured demand — stock-postgres") :]
    line = next(x for x in part.splitlines() if x.startswith("**before:"))
    assert (
        "The server's slots bound this variant (PostgreSQL refused 42 connection attempts" in line
    )
    assert "requests refused" not in line


def test_2_refused_attempts_come_from_the_server_log_split_by_reason(analysis, run):
    row = _table(analysis, "stock-postgres").row("refusals")
    # old: "Requests refused by PostgreSQL (SQLSTATE 53300)" 40, the larger of app.log (3)
    # and Locust (40) — the server's name on the client's count
    assert (row.baseline, row.variant) == (42, 0)
    assert "server log" in row.label and "attempts" in row.label
    before = analysis.runs[[r.figures.dir for r in analysis.runs].index("stock-postgres/before-1")]
    a = before.figures.exact.attempts
    assert (a.refused, a.refused_reserved, a.refused_no_slot) == (42, 30, 12)
    failed = _table(analysis, "stock-postgres").row("refused_requests")
    assert failed.baseline == 40 and "app log" in failed.label
    md = (run / "report.md").read_text()
    assert "12 attempts were refused with “too many clients already”: even the superuser " in md
    assert "Locust counted" in md and "the app's log names a refusal in 3 records" in md


def test_3_churn_counts_every_backend_the_server_started(analysis, run):
    before = analysis.runs[[r.figures.dir for r in analysis.runs].index("stock-postgres/before-1")]
    after_fill = before.figures.exact.attempts_after_fill
    # 30 reserved (authenticated, refused) + 12 too many clients + 5 short sessions
    assert (after_fill.started, after_fill.authenticated, after_fill.refused) == (47, 35, 42)
    row = _table(analysis, "stock-postgres").row("backends_per_s")
    assert row.baseline == pytest.approx(47 / after_fill.window.seconds)
    md = (run / "report.md").read_text()
    assert "Backends PostgreSQL started per second after the pools filled" in md


def test_3_a_change_is_computed_from_the_values_shown(analysis, run):
    # 0.0301 → 1.1533 /s is shown 0.03 → 1.15: +3 733 %, said 38×. old: "+3731.6 %"
    md = (run / "report.md").read_text()
    line = _glance_line(md, "stock-postgres", "New sessions/s after the pools filled")
    assert "| 0.03 /s | 1.15 /s | 38×, untested" in line
    assert fmt.change(0.0301, 1.1533, "per_s") == "38×"
    assert fmt.change(675, 1391, "ms") == "+106 %"
    assert fmt.change(120, 33, "count") == "−72.5 %"
    assert fmt.change(0.034, 0.036, "per_s") == "+33.3 %"  # shown 0.03 → 0.04, not +5.9 %
    assert fmt.shown(0.034, "per_s") == 0.03


def test_4_each_variant_says_which_limit_bound_it(analysis, run):
    bound = {r.figures.dir: str(r.figures.limit.bound) for r in analysis.runs}
    assert bound["stock-postgres/before-1"] == "server slots"
    assert bound["stock-postgres/after-1"] == "pool ceiling"
    assert bound["seed-claim/before-1"] == "pool ceiling"
    md = (run / "report.md").read_text()
    stock = md[md.index("## Experiment: stock-postgres") :]
    # old: "The load reached 100 of a possible 150: a heavier burst would open more." and five
    # "before:… never filled its pools"
    assert "heavier burst would open more" not in stock and "never filled" not in stock
    assert "a heavier burst would only be refused more" in stock
    assert "What limited the connections — stock-postgres" in stock


def test_4_demand_bound_when_slots_remain_below_the_ceiling(tmp_path):
    spec = VariantSpec(name="solo", engines=[EngineSpec("solo:a", pool_size=30)])
    figures = analyse(write_run(tmp_path, [spec])).runs[0].figures
    assert str(figures.limit.bound) == "demand"
    assert any("heavier burst would open more" in f.message for f in figures.model.flags)


def test_4_the_usable_slot_line_is_drawn_when_within_reach():
    from poolbench.report.charts import within_reach

    assert within_reach(96, 96) and within_reach(140, 96) and not within_reach(177, 20)
    assert not within_reach(None, 96)


def test_12_idle_in_transaction_is_in_the_glance_table(analysis, run):
    row = _table(analysis, "stock-postgres").row("idle_in_transaction_mean")
    # 5 engines × 10 idle in transaction, 3 after (full load); old: no such row
    assert (row.baseline, row.variant) == (50, 3)
    assert _table(analysis, "stock-postgres").row("idle_in_transaction_max").baseline == 50
    md = (run / "report.md").read_text()
    assert "| “idle in transaction” connections, mean | full load" in md


def test_13_untested_is_not_not_measured_and_the_lead_names_latency(run):
    summary = json.loads((run / "summary.json").read_text())
    md = (run / "report.md").read_text()
    lead = next(
        line for line in md.splitlines() if line.startswith("**seed-claim: before → after.")
    )
    assert "latency p" in lead  # old: goodput only
    assert "How big an untested change must be to mean anything" in md
    assert "untested, within this run's noise" in md
    assert summary["schema"] == 4


def test_13_a_one_repeat_claim_is_untested(tmp_path):
    from test_report import SEED_CLAIMS

    analysis = analyse(write_run(tmp_path, seed_claim_specs(), claims=SEED_CLAIMS))
    items = {i.claim.id: i.verdict for i in analysis.summary.experiments[0].claims.items}
    assert items["performance"] == "untested"  # old: "not measured"
    assert items["engines"] == "not measured"  # no census: nothing measured


def test_14_markdown_has_no_entities_and_html_no_literal_backticks(run):
    md = (run / "report.md").read_text()
    page = (run / "report.html").read_text()
    # old: "is it 101 -&gt; 20? \`pool\_size\`" in report.md, "`pool_size`" in report.html
    assert "is it 101 -> 20? `pool_size`" in md
    assert "is it 101 -&gt; 20? <code>pool_size</code>" in page
    assert "`" not in page.split("<body>", 1)[1].split("<pre>", 1)[0]


def test_14_server_settings_per_variant_with_units(run):
    md = (run / "report.md").read_text()
    env = md[md.index("## Environment") :]
    # old: one row from run.json, "max\_connections=200" for every experiment, shared_buffers
    # in 8 kB pages
    assert (
        "| PostgreSQL settings (stock-postgres / before, stock-postgres / after) | "
        "max\\_connections 103, shared\\_buffers 128 MiB |" in env
    )
    assert "| PostgreSQL settings | max\\_connections 200 |" not in env


def test_14_no_good_or_bad_mark_where_the_bench_file_declares_no_direction(run):
    md = (run / "report.md").read_text()
    # stock-postgres has no claims and no thresholds: a change has no "good" side there.
    # old: "✅ **−80 % (exact)**" on its peak row
    stock = md[
        md.index("At a glance — stock-postgres") : md.index(
            "Little's law, a self-check of the instrument — stock"
        )
    ]
    rows = "\n".join(line for line in stock.splitlines() if line.startswith("|"))
    assert "✅" not in rows and "❌" not in rows
    assert "declares (its claims and thresholds); none here." in stock
    assert "| Peak connections | load, 10 s | 100 | 20 | −80 % (exact) |" in stock


def test_14_reproduce_names_the_folder_the_run_was_written_to(run):
    md = (run / "report.md").read_text()
    # old: "poolbench report results/20261129-051500-synthetic", wherever --out put the run
    assert f"poolbench report {run.resolve().as_posix()}   # re-analyse" in md


def test_14_a_command_variant_with_a_cwd_gets_its_census(tmp_path):
    from poolbench.config.bench import load_config
    from poolbench.config.variants import Variant
    from poolbench.results.record import Engine
    from poolbench.run.stack import add_census, new_entry

    app = tmp_path / "svc"
    app.mkdir()
    (app / "db.py").write_text(
        "from sqlalchemy.ext.asyncio import create_async_engine\n"
        "engine = create_async_engine('postgresql+asyncpg://x/y')\n"
    )
    experiment = load_config(Path(__file__).parent.parent / "scenarios" / "bench.toml")
    variant = Variant(name="svc", command=("uvicorn", "db:app"), cwd=str(app))
    declared = [Engine("declared", None, None)]
    entry = new_entry(experiment.experiments["seed-claim"], variant, 1)
    entry.label, entry.engines = "svc", list(declared)
    add_census(entry, experiment.experiments["seed-claim"], variant, tmp_path)
    # old: no census.json for a command variant, so the census section and claims lacked it
    census = json.loads((tmp_path / "census.json").read_text())
    assert [s["module"] for s in census["sites"]] == ["db"]
    assert entry.engines == declared  # the declaration stands


def test_14_the_psql_line_reaches_the_embedded_server(pg):
    import shlex

    import psycopg

    from poolbench.run.stack import psql_line

    line = psql_line(pg)
    # old: no such line; 127.0.0.1 needs the random (masked) password
    argv = shlex.split(line)
    assert argv[0] == "psql" and "password" not in line and pg.admin_password not in line
    with psycopg.connect(argv[1]) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == pg.admin_user


ASYNC_BENCH = Path(__file__).parent / "fixtures" / "asyncapp" / "bench.toml"


@pytest.mark.e2e
def test_14_an_async_app_takes_the_driver_form_of_the_url(tmp_path):
    import os
    import subprocess
    import sys

    from poolbench.results.run_folder import load_run

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "poolbench",
            "run",
            "--config",
            str(ASYNC_BENCH),
            "--out",
            str(tmp_path),
            "--no-report",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "FIXTURE_PYTHON": sys.executable},
    )
    # old: "variants.service.env.DATABASE_URL uses unknown placeholder {database_url}…"
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '[asyncapp] service: the server, while it runs: psql "host=' in proc.stderr
    [variant] = load_run((tmp_path / "latest").resolve()).variants
    assert variant.meta["env"]["DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert "***" in variant.meta["env"]["DATABASE_URL"]  # the password stays masked
    stats = variant.locust["stats"]
    agg = stats[stats["Name"] == "Aggregated"].iloc[-1]
    assert agg["Request Count"] > 0 and agg["Failure Count"] == 0


def test_14_one_block_is_singular():
    from poolbench.analysis.block_test import BlockLength, compare_blocks

    result = compare_blocks(
        [1.0], [1.0, 2.0, 3.0, 4.0, 5.0], BlockLength(3, (1.0, 1.0)), names=("before", "after")
    )
    # old: "before: 1 blocks of 3 s, fewer than 5 (window too short)"
    assert "before: 1 block of 3 s, fewer than 5 (window too short)" in result.footnotes


def test_14_an_exact_count_varying_over_too_few_repeats_is_not_called_tested():
    from poolbench.analysis.stats import compare_exact

    result = compare_exact([8, 7, 7], [8, 7, 7], names=("before", "after"))
    # old: "before varies across repeats (8, 7, 7): not exact, tested" beside
    # "n too small for a test at α = 0.05"
    assert result.status == "untested"
    assert "before varies across repeats (8, 7, 7): not exact, and untested" in result.footnotes
    assert not any(note.endswith(": not exact, tested") for note in result.footnotes)
