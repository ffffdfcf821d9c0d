"""Thresholds that gate CI, through the real command line on synthetic runs with known figures."""

from __future__ import annotations

import contextlib
import io
import subprocess
from pathlib import Path

import pytest
from synthetic import seed_claim_specs, write_run

from poolbench.analysis.thresholds import EXIT_THRESHOLD
from poolbench.cli import main


def _poolbench(*args: str) -> subprocess.CompletedProcess:
    """The real command line, in this process (a subprocess would import pandas each time)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """before peaks at 100 connections, after at 20 (one repeat each)."""
    return write_run(tmp_path_factory.mktemp("gates"), seed_claim_specs())


def test_a_passing_threshold_exits_0_and_is_reported(run_dir: Path) -> None:
    proc = _poolbench(
        "report", str(run_dir), "--no-charts", "--fail-if", "after.peak_connections > 25"
    )
    assert proc.returncode == 0, proc.stderr
    assert "threshold passed" in proc.stdout
    md = (run_dir / "report.md").read_text()
    assert "## Thresholds" in md and "✅ **passed**" in md


def test_a_breach_exits_with_the_documented_code_and_says_which(run_dir: Path) -> None:
    proc = _poolbench(
        "report",
        str(run_dir),
        "--no-charts",
        "--fail-if",
        "after.peak_connections > 10",
        "--fail-if",
        "after.idle_connections > 0.1 * before.idle_connections",
    )
    assert proc.returncode == EXIT_THRESHOLD == 3
    assert proc.stdout.count("threshold breached") == 2
    assert "Threshold breached" in (run_dir / "report.md").read_text()


def test_an_untested_difference_is_inconclusive_not_a_breach_unless_strict(run_dir: Path) -> None:
    args = ("report", str(run_dir), "--no-charts", "--fail-if", "after.goodput < before.goodput")
    proc = _poolbench(*args)
    assert proc.returncode == 0 and "threshold inconclusive" in proc.stdout
    assert _poolbench(*args, "--strict-thresholds").returncode == EXIT_THRESHOLD


def test_an_exact_difference_decides_the_significance_form(run_dir: Path) -> None:
    proc = _poolbench(
        "report",
        str(run_dir),
        "--no-charts",
        "--fail-if",
        "after.peak_connections < before.peak_connections",
    )
    assert proc.returncode == EXIT_THRESHOLD and "threshold breached" in proc.stdout


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("after.peak_connections >", "not a valid expression"),
        ("after.nonsense > 3", "unknown metric 'nonsense'"),
        ("later.peak_connections > 3", "no experiment has the variant(s) later"),
        ("after.goodput <= before.goodput", "use < or >"),
    ],
)
def test_a_malformed_threshold_is_one_line_and_exit_2(
    run_dir: Path, expression: str, says: str
) -> None:
    proc = _poolbench("report", str(run_dir), "--no-charts", "--fail-if", expression)
    assert proc.returncode == 2
    assert says in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr


def test_thresholds_in_the_bench_file_are_checked_when_the_run_is_reported(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, seed_claim_specs())
    import json

    meta = json.loads((run_dir / "run.json").read_text())
    meta["experiments"][0]["fail_if"] = ["after.peak_connections > 5"]
    (run_dir / "run.json").write_text(json.dumps(meta))
    proc = _poolbench("report", str(run_dir), "--no-charts")
    assert proc.returncode == EXIT_THRESHOLD and "after.peak_connections > 5" in proc.stdout


@pytest.mark.slow
def test_compare_checks_thresholds_across_runs(tmp_path: Path) -> None:
    a = write_run(tmp_path, seed_claim_specs(), run_id="a")
    b = write_run(tmp_path, seed_claim_specs(), run_id="b")
    ok = _poolbench(
        "compare",
        str(a),
        str(b),
        "--fail-if",
        "B_after.peak_connections > A_after.peak_connections * 1.1",
    )
    assert ok.returncode == 0, ok.stderr
    bad = _poolbench(
        "compare",
        str(a),
        str(b),
        "--fail-if",
        "B_before.peak_connections >= 1 * A_after.peak_connections",
    )
    assert bad.returncode == EXIT_THRESHOLD


def test_a_bad_threshold_in_the_bench_file_is_refused_at_load(tmp_path: Path) -> None:
    bench = tmp_path / "bench.toml"
    bench.write_text(
        '[variants.a]\napp_dir = "apps_after"\n[defaults]\nfail_if = ["a.p95_ms >"]\n'
        "[experiments.e]\n"
    )
    proc = _poolbench("run", "--config", str(bench))
    assert proc.returncode == 2 and "experiments.e.fail_if" in proc.stderr
    assert "not a valid expression" in proc.stderr
