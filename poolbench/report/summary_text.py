"""The few lines a terminal shows after a run: per variant, what it held and what it served.

Every figure is the one analysis computes for summary.json; this module only formats them. A
variant that left no samples (a failed start) still gets its line, with dashes.
"""

from __future__ import annotations

from pathlib import Path

from poolbench import format as fmt
from poolbench.analysis.figures import VariantFigures
from poolbench.analysis.run_analysis import Analysis, analyse_variant
from poolbench.results.run_folder import RunResult, VariantResult, load_run


def variant_line(result: VariantResult, figures: VariantFigures | None = None) -> str:
    """One variant's line; `figures` as analysis computed them, else computed here."""
    if figures is None and result.has_samples:
        figures = analyse_variant(result).figures
    status = result.entry.status or "?"
    if figures is None:
        return f"  {result.variant:<12} {status:<9} (no samples)"
    c, t, b = figures.connections, figures.traffic, figures.pgbouncer
    pooler = (  # behind PgBouncer: its clients and their wait beside PostgreSQL's backends
        f"  pooler clients {fmt.count(b.peak_clients)}, wait p95 {fmt.ms(b.wait_p95_ms)}"
        if b is not None
        else ""
    )
    return (
        f"  {result.variant:<12} {status:<9} "
        f"peak {fmt.count(c.peak):>4}  idle {fmt.count(c.idle):>4}  "
        f"goodput {fmt.rate(t.goodput):>9}  failed {fmt.count(t.failures):>6}  "
        f"p95 {fmt.ms(t.latency.p95):>8}{pooler}"
    )


def text_summary(source: Path | RunResult, analysis: Analysis | None = None) -> str:
    """Pass the run's Analysis when there is one, so no figure is computed twice."""
    run = source if isinstance(source, RunResult) else load_run(source)
    computed = {r.result.key: r.figures for r in analysis.runs} if analysis else {}
    lines = [f"run {run.run.run_id}: {run.run.status}"]
    for name in run.experiment_names:
        lines.append(f"{name}: connections (peak during load, held when idle), full-load traffic")
        lines.extend(variant_line(v, computed.get(v.key)) for v in run.experiment(name))
    return "\n".join(lines)
