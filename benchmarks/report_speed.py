"""What `poolbench report` costs, phase by phase, so a regression shows in a number.

Each repeat runs in a fresh interpreter (imports are part of what a person waits for) and
measures CPU seconds of that process (`time.process_time`), not the wall clock: the machine
is shared, and the wall clock says more about the neighbours than about the report. Phases:

- import: poolbench's CLI and the report's modules, as `poolbench report` imports them;
- load: reading the results directory (`results.load_run`);
- analysis: every figure of summary.json (`analysis.run_analysis.analyse`; scipy is imported
  here when a test needs it);
- charts: every PNG (`report.charts.render_charts`, matplotlib imported here);
- render: summary.json, the document, report.md and report.html.

Without a directory it writes the one-hour synthetic run (tests/synthetic.py --hour: two
variants, 20 series of 36,000 samples at 10 Hz and 360,000 requests each) into a temporary
directory and reports on it. The budget is issue 26's: 3 s on a machine whose `make test`
costs ≥ 250 s of CPU, 1.8 s (× 0.6) on one under 200 s. Issue 26 also asks 1 s for the
default bench's run (what `make bench` writes under results/: two experiments, 14 charts;
no synthetic run stands for it): `report_speed.py results/<run-id> --budget 1`.

Usage: .venv/bin/python benchmarks/report_speed.py [RUN_DIR] [--repeats 3] [--source DIR]
       [--cold-bytecode] [--budget SECONDS]

Bytecode: the venv comes from `uv pip install`, which (unlike pip) writes no .pyc files, so the
first import of every module compiles it; Python then caches the bytecode, unless
PYTHONDONTWRITEBYTECODE is set, and then *every* report compiles pandas, scipy and matplotlib
again (~2.4 s of import and ~1 s more when scipy.stats is first used, measured here). A person
runs `poolbench report` with the cache written, so one warm-up process, with
PYTHONDONTWRITEBYTECODE removed, writes it before the measured ones; `--cold-bytecode` keeps
the environment as it is and measures what that costs.

--source measures the poolbench of another checkout (e.g. `git archive main | tar -x -C DIR`)
with this venv: before and after a change, on the same machine at the same time.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PHASES = ("import", "load", "analysis", "charts", "render")
BUDGET_CPU_S = {"slow machine (make test ≥ 250 CPU s)": 3.0, "fast machine (< 200 CPU s)": 1.8}


def use_source(source: str) -> None:
    """Import poolbench from `source` rather than from the venv's editable install."""
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__]
    sys.path.insert(0, source)


def _cpu() -> float:
    """CPU seconds of this process and of its children that have ended (the charts' fork)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def child(run_dir: Path) -> dict[str, float]:
    """One report, timed per phase in this (fresh) process: CPU and wall seconds."""
    cpu: dict[str, float] = {}
    wall: dict[str, float] = {}
    clock = {"cpu": _cpu(), "wall": time.perf_counter()}

    def lap(phase: str) -> None:
        now = {"cpu": _cpu(), "wall": time.perf_counter()}
        cpu[phase] = now["cpu"] - clock["cpu"]
        wall[phase] = now["wall"] - clock["wall"]
        clock.update(now)

    import poolbench.cli  # what `poolbench report` imports before it runs

    # as its parser does, before numpy is imported (absent from a --source older than it)
    getattr(poolbench.cli, "single_threaded_blas", lambda command: None)("report")
    from poolbench.analysis.run_analysis import analyse
    from poolbench.analysis.summary import write_summary
    from poolbench.report import apply_thresholds
    from poolbench.report.document import build_document
    from poolbench.report.html import render_html
    from poolbench.report.markdown import render_markdown
    from poolbench.results.run_folder import load_run

    lap("import")
    loaded = load_run(run_dir)
    lap("load")
    analysis = analyse(loaded)
    apply_thresholds(analysis, None)
    lap("analysis")
    from poolbench.report.charts import render_charts

    drawn = render_charts(analysis, run_dir)
    lap("charts")
    write_summary(analysis.summary, run_dir)
    document = build_document(analysis.summary, drawn, run_dir)
    (run_dir / "report.md").write_text(render_markdown(document), encoding="utf-8")
    (run_dir / "report.html").write_text(render_html(document), encoding="utf-8")
    lap("render")
    import poolbench

    walls = {f"wall_{phase}": seconds for phase, seconds in wall.items()}
    return {**cpu, **walls, "source": str(Path(poolbench.__file__).parent.parent)}


def _child(run_dir: Path, source: str | None, env: dict[str, str] | None) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", str(run_dir)]
    done = subprocess.run(
        [*command, *(["--source", source] if source else [])],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure(
    run_dir: Path, repeats: int, source: str | None, cold: bool = False
) -> list[dict[str, float]]:
    """`repeats` fresh processes, after one that writes the bytecode cache (unless `cold`)."""
    if not cold:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        _child(run_dir, source, env)
    return [_child(run_dir, source, None) for _ in range(repeats)]


def bytecode_state() -> str:
    """Whether the venv holds the bytecode of what a report imports (pandas, scipy.stats)."""
    spec = importlib.util.find_spec("scipy")
    package = Path(spec.origin).parent if spec and spec.origin else None
    cached = package is not None and all(
        Path(importlib.util.cache_from_source(str(package / f))).exists()
        for f in ("__init__.py", "stats/__init__.py", "stats/_stats_py.py")
    )
    if cached:
        return "cached in the venv"
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        return "not cached and PYTHONDONTWRITEBYTECODE is set: compiled in every process"
    return "not cached: the first process compiles it"


def show(
    results: list[dict[str, float]],
    run_dir: Path,
    cold: bool = False,
    budgets: dict[str, float] = BUDGET_CPU_S,
) -> None:
    print(f"poolbench report {run_dir}: seconds, median of {len(results)} fresh processes")
    print(f"  (bytecode: {bytecode_state() if cold else 'cached by a warm-up process'})")
    print(f"  (poolbench from {results[0].get('source', '?')})")
    print(f"  {'':9} {'CPU':>16} {'wall':>16}")
    for phase in PHASES:
        cells = [_cell([float(r[key]) for r in results]) for key in (phase, f"wall_{phase}")]
        print(f"  {phase:9} {cells[0]:>16} {cells[1]:>16}")
    totals = {
        kind: statistics.median(sum(float(r[prefix + phase]) for phase in PHASES) for r in results)
        for kind, prefix in (("CPU", ""), ("wall", "wall_"))
    }
    print(f"  {'total':9} {totals['CPU']:>9.2f} s{'':5} {totals['wall']:>9.2f} s")
    for machine, budget in budgets.items():
        verdicts = ", ".join(
            f"{kind} {'within' if total <= budget else 'OVER'}" for kind, total in totals.items()
        )
        print(f"  budget {budget:.1f} s ({machine}): {verdicts}")


def _cell(values: list[float]) -> str:
    spread = f" ({min(values):.2f}-{max(values):.2f})" if len(values) > 1 else ""
    return f"{statistics.median(values):.2f} s{spread}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", help="a results run directory (default: the hour)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--source", help="measure the poolbench of this checkout instead")
    parser.add_argument(
        "--cold-bytecode",
        action="store_true",
        help="no warm-up process: measure with the bytecode cache as the environment leaves it",
    )
    parser.add_argument(
        "--budget", type=float, help="this budget (CPU s, this machine) instead of the hour's"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.source:
            use_source(args.source)
        print(json.dumps(child(Path(args.run_dir))))
        return 0
    if args.run_dir:
        run_dir = Path(args.run_dir)
        cold = args.cold_bytecode
        budgets = {"--budget, on this machine": args.budget} if args.budget else BUDGET_CPU_S
        show(measure(run_dir, args.repeats, args.source, cold), run_dir, cold, budgets)
        return 0
    sys.path.insert(0, str(REPO / "tests"))
    from synthetic import hour_specs, write_run

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = write_run(Path(tmp), hour_specs(), run_id="hour")
        show(
            measure(run_dir, args.repeats, args.source, args.cold_bytecode),
            run_dir,
            args.cold_bytecode,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
