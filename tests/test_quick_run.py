"""One real `poolbench run --quick` (both variants), read by every test here.

The run takes about a minute; its readers live in this one file so that it happens once,
also under `pytest -n N --dist loadfile` (make test), where a session fixture would run once
per worker that needs it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import poolbench_cli
from recompute import compare

from poolbench.analysis import timeline
from poolbench.report import build_report
from poolbench.results.run_folder import VariantResult, load_run
from poolbench.results.samples import connections_wide

pytestmark = pytest.mark.e2e

FIVE_MODULES = {
    "app.db.session",
    "app.core.database",
    "app.api.dependencies",
    "app.core.db",
    "app.db",
}
UNMASKED_PASSWORD = re.compile(r"postgres(?:ql)?://[^:/@\s]+:(?!\*\*\*@)[^@\s]+@")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run every test in this file reads."""
    out = tmp_path_factory.mktemp("results")
    proc = poolbench_cli("run", "--quick", "--no-report", "--out", str(out), timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return (out / "latest").resolve()


def _window(variant: VariantResult, phase: str) -> tuple[float, float]:
    [found] = [p for p in variant.meta["phases"] if p["name"] == phase]
    return found["start"], found["end"]


def _async_connections(variant: VariantResult, phase: str) -> pd.DataFrame:
    """Connections per sample and application name, async pools only, within a phase.

    The health probe's per-call engines (`:app.api.health`, no pool) are left out: a sample
    catches one now and then, and they are churn, not pools.
    """
    s = variant.samples
    rows = s[(s.metric == "connections") & s.ts.between(*_window(variant, phase))]
    rows = rows[~rows.application_name.str.endswith(":sync")]
    rows = rows[~rows.application_name.str.contains(":app.api.health", regex=False)]
    return rows.groupby(["ts", "application_name"]).value.sum().unstack(fill_value=0)


def test_quick_run_before_holds_five_pools_after_holds_one(quick_run: Path) -> None:
    run = load_run(quick_run)
    assert run.meta["status"] == "complete"
    by_name = {v.meta["variant"]: v for v in run.experiment("seed-claim")}
    assert set(by_name) == {"before", "after"}

    before = _async_connections(by_name["before"], "load")
    assert set(before.columns) == {f"before:{m}" for m in FIVE_MODULES}
    assert before.max().tolist() == [4] * 5  # pool_size=4, max_overflow=0, per engine
    assert before.sum(axis=1).max() == 20  # 5 x 4

    after = _async_connections(by_name["after"], "load")
    assert list(after.columns) == ["after:app.db.session"]
    assert after.sum(axis=1).max() == 4


def test_quick_run_idle_phase_shows_the_pools_keep_their_connections(quick_run: Path) -> None:
    run = load_run(quick_run)
    by_name = {v.meta["variant"]: v for v in run.experiment("seed-claim")}
    idle_before = _async_connections(by_name["before"], "idle").sum(axis=1)
    idle_after = _async_connections(by_name["after"], "idle").sum(axis=1)
    assert idle_before.min() == 20  # nothing reaps idle pool connections
    assert idle_after.min() == 4


def test_quick_run_records_phases_engines_and_locust_output(quick_run: Path) -> None:
    run = load_run(quick_run)
    for variant in run.variants:
        names = [p["name"] for p in variant.meta["phases"]]
        assert names == ["warmup", "load", "idle"]
        starts = [p["start"] for p in variant.meta["phases"]]
        assert starts == sorted(starts)
        stats = variant.locust["stats"]
        aggregated = stats[stats["Name"] == "Aggregated"].iloc[0]
        assert aggregated["Request Count"] > 100
        assert (variant.path / "locust.json").exists()
        assert (variant.path / "app.log").stat().st_size > 0
        # the event log holds the same phases, in order, and the variant's end
        kinds = [(e["event"], e.get("phase")) for e in variant.events]
        assert kinds[0] == ("variant_started", None)
        assert [k for k in kinds if k[0].startswith("phase_")] == [
            ("phase_started", "warmup"),
            ("phase_ended", "warmup"),
            ("phase_started", "load"),
            ("phase_ended", "load"),
            ("phase_started", "idle"),
            ("phase_ended", "idle"),
        ]
        assert kinds[-1] == ("variant_ended", None)
        assert variant.events[-1]["status"] == "complete"
        load = next(p for p in variant.meta["phases"] if p["name"] == "load")
        started = next(e for e in variant.events if e.get("phase") == "load")
        assert started["ts"] == load["start"]
        assert variant.meta["pids"]["load"] > 0
    before = next(v for v in run.variants if v.meta["variant"] == "before")
    modules = {e["module"] for e in before.meta["engines"] if e["kind"] == "async"}
    assert modules == FIVE_MODULES


def test_quick_run_load_starts_with_locusts_test_and_records_every_request(
    quick_run: Path,
) -> None:
    run = load_run(quick_run)
    for variant in run.variants:
        load = next(p for p in variant.meta["phases"] if p["name"] == "load")
        status = json.loads((variant.path / "load.json").read_text())
        assert load["start"] == status["test_start"] == variant.meta["locust"]["test_start"]
        assert status["launched"] < status["test_start"]  # Locust's start-up is not load
        start, end = variant.meta["locust"]["full_load"]
        assert load["start"] < start < end <= load["end"]
        log = variant.requests()
        totals = json.loads((variant.path / "locust.json").read_text())
        assert len(log) == sum(e["num_requests"] for e in totals) == status["requests"]
        assert log.start.min() >= load["start"] - 0.001  # no warm-up request among them
        assert sorted(p.name for p in variant.path.glob("requests*")) == [
            "requests.bin",
            "requests.names.json",
        ]
        # the health probe, like a load balancer's: one user, each call a second after the
        # last one ended (how long a call takes is the app's business: seconds when busy)
        probe = np.array(log.names)[log.name] == "/health"
        starts, took_s = log.start[probe], log.response_ms[probe] / 1000.0
        assert probe.sum() >= 3 and len(set(log.user_keys()[probe])) == 1
        waits = starts[1:] - (starts[:-1] + took_s[:-1])
        assert ((waits >= 0.998) & (waits < 2.0)).all(), waits  # starts are kept to the ms


def test_quick_run_writes_no_password(quick_run: Path) -> None:
    texts = [p.read_text() for p in [quick_run / "run.json", *quick_run.rglob("variant.json")]]
    for text in texts:
        assert not UNMASKED_PASSWORD.search(text)
    meta = json.loads((quick_run / "run.json").read_text())
    assert meta["environment"]["postgres"]["app_url"].count(":***@") == 1


def test_quick_run_keeps_a_log_whose_exact_peaks_bound_the_sampled_ones(quick_run: Path) -> None:
    run = load_run(quick_run)
    for variant in run.variants:
        assert variant.postgres_log == variant.path / "postgres.log"
        assert variant.meta["postgres_log"] == {"file": "postgres.log", "reason": None}
        log = variant.server_log()
        assert log.sessions and not log.cut and log.unparsed_lines == 0
        exact = timeline.timelines(log, variant.meta["database"]["dbname"])
        wide = connections_wide(variant.samples)
        found = timeline.compare_by_application(exact, list(wide.index), wide)
        assert found.sampled_only == [] and set(found.by_application) >= set(wide.columns)
        pools = {e["name"] for e in variant.meta["engines"]}  # long-lived: always sampled
        for name, check in [("total", found.total), *found.by_application.items()]:
            # the sampler can never see more connections than exist; a per-call engine's
            # connections (the health check's, ~10 ms) may all fall between two samples
            assert check.exact.count >= check.sampled.count, (variant.key, name)
            assert check.exact.count > 0, (variant.key, name)
            if name == "total" or name in pools:
                assert check.sampled.count > 0, (variant.key, name)


def test_every_glance_figure_of_a_real_run_agrees_with_an_independent_recomputation(
    quick_run: Path,
) -> None:
    build_report(quick_run, charts=False)
    assert compare(quick_run) == []
