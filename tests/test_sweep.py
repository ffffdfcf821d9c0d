"""The pool-size sweep: the knee of goodput against pool size, from synthetic runs with a known
one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from synthetic import EngineSpec, VariantSpec, write_run

from poolbench.analysis.run_analysis import analyse
from poolbench.report import build_report
from poolbench.run.size_sweep import sweep_experiments

SIZES = (1, 2, 4, 8, 16, 32)


def _sweep_run(tmp_path: Path, knee: int) -> Path:
    """Goodput grows with the pool up to `knee`, then stays flat (noise ±1 %); p95 likewise."""
    specs, marks = [], {}
    for i, size in enumerate(SIZES):
        name = f"steady-pool-{size}"
        marks[name] = {"group": "steady", "variant": "after", "pool_size": size}
        served = min(size, knee)
        specs.append(
            VariantSpec(
                name="after",
                experiment=name,
                seed=10 + i,
                load_s=40.0,
                ramp_s=0.0,
                rps=100.0 * served,
                rps_sd=1.0 * served,
                latency_cycle=tuple(float(v) for v in range(10, 10 + 400 // served)),
                engines=[EngineSpec("after:app.db.session", pool_size=size, load=[(1.0, size)])],
            )
        )
    return write_run(tmp_path, specs, sweeps=marks)


@pytest.mark.slow
def test_a_sweep_that_saturates_at_4_recommends_4_not_the_largest(tmp_path: Path) -> None:
    run_dir = _sweep_run(tmp_path, knee=4)
    sweep = analyse(run_dir).summary.sweeps[0]
    assert [p.pool_size for p in sweep.points] == list(SIZES)
    assert sweep.recommended == 4
    assert sweep.best in (4, 8, 16, 32)
    by_size = {p.pool_size: p for p in sweep.points}
    assert not by_size[1].as_good and not by_size[2].as_good
    assert all(by_size[s].as_good for s in (4, 8, 16, 32))
    assert sweep.hikari == 5  # synthetic runs record 2 cores


@pytest.mark.slow
def test_a_sweep_still_growing_at_its_largest_size_says_so(tmp_path: Path) -> None:
    run_dir = _sweep_run(tmp_path, knee=64)
    sweep = analyse(run_dir).summary.sweeps[0]
    assert sweep.recommended == 32
    assert any("sweep further" in n for n in sweep.notes)


@pytest.mark.slow
def test_the_report_has_the_sweep_table_and_chart(tmp_path: Path) -> None:
    run_dir = _sweep_run(tmp_path, knee=4)
    build_report(run_dir)
    md = (run_dir / "report.md").read_text()
    assert "Pool-size sweep" in md and "Recommended: pool\\_size 4 per worker" in md
    assert (run_dir / "charts" / "sweep-steady-after.png").stat().st_size > 10_000


def test_sweep_experiments_set_the_pool_and_mark_the_points() -> None:
    from poolbench.config.bench import load_config, select
    from poolbench.options import Overrides

    base = select(load_config(), Overrides(("seed-claim",), ("after",)))[0]
    points = sweep_experiments(base, "after", [2, 8])
    assert [(e.name, e.app.pool_size, e.app.max_overflow, e.variants) for e in points] == [
        ("seed-claim-pool-2", 2, 0, ("after",)),
        ("seed-claim-pool-8", 8, 0, ("after",)),
    ]
    assert points[0].sweep == {"group": "seed-claim", "variant": "after", "pool_size": 2}
    assert points[0].claims == {}


def test_bad_sizes_are_one_line_errors() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "poolbench", "size", "--sizes", "0,x"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "pool sizes of at least 1" in proc.stderr
    assert "Traceback" not in proc.stderr
