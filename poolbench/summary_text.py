"""The few lines a terminal shows after a run: per variant, what it held and what it served.

Every figure is the one analysis computes for summary.json (peak = connections.load_peak,
idle = connections.idle, then Locust's requests, failures and p95); this module only formats
them. A variant that left no samples (a failed start) still gets its line, with dashes.
"""

from __future__ import annotations

import math
from pathlib import Path

from poolbench.analysis import Analysis, VariantRun, analyse_variant
from poolbench.results import RunResult, VariantResult, load_run


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.0f}"


def variant_line(result: VariantResult, metrics: dict | None = None) -> str:
    """One variant's line; `metrics` as analysis computed them, else computed here."""
    if metrics is None:
        metrics = analyse_variant(VariantRun(result)) if result.has_samples else {}
    connections = metrics.get("connections") or {}
    locust = metrics.get("locust") or {}
    return (
        f"  {result.variant:<12} {result.meta.get('status') or '?':<9} "
        f"peak {_fmt(connections.get('load_peak')):>4}  "
        f"idle {_fmt(connections.get('idle')):>4}  "
        f"requests {_fmt(locust.get('requests')):>7}  "
        f"failures {_fmt(locust.get('failures')):>6}  "
        f"p95 {_fmt((locust.get('latency_ms') or {}).get('p95')):>5} ms"
    )


def text_summary(source: Path | RunResult, analysis: Analysis | None = None) -> str:
    """Pass the run's Analysis when there is one, so no figure is computed twice."""
    run = source if isinstance(source, RunResult) else load_run(source)
    computed = {vr.result.key: vr.metrics for vr in analysis.runs} if analysis else {}
    lines = [f"run {run.meta['run_id']}: {run.meta['status']}"]
    for name in run.experiment_names:
        lines.append(f"{name}: connections (peak during load, held when idle)")
        lines.extend(variant_line(v, computed.get(v.key)) for v in run.experiment(name))
    return "\n".join(lines)
