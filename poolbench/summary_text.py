"""The few lines a terminal shows after a run: per variant, what it held and what it served."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from poolbench.results import VariantResult, load_run


def _phase_window(variant: VariantResult, name: str) -> tuple[float, float] | None:
    for phase in variant.meta.get("phases", []):
        if phase["name"] == name and phase.get("end"):
            return phase["start"], phase["end"]
    return None


def _totals(variant: VariantResult, window: tuple[float, float] | None) -> pd.Series:
    s = variant.samples
    if window is None or s.empty:
        return pd.Series(dtype=float)
    rows = s[(s.metric == "connections_total") & s.ts.between(*window)]
    return rows.set_index("ts")["value"]


def variant_line(variant: VariantResult) -> str:
    load = _totals(variant, _phase_window(variant, "load"))
    idle_window = _phase_window(variant, "idle")
    if idle_window:  # the second half: after overflow connections have been returned
        idle_window = ((idle_window[0] + idle_window[1]) / 2, idle_window[1])
    idle = _totals(variant, idle_window)
    stats = variant.locust["stats"]
    agg = stats[stats["Name"] == "Aggregated"].iloc[0] if "Name" in stats else None
    fmt = lambda v: "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.0f}"  # noqa: E731
    return (
        f"  {variant.meta['variant']:<12} {variant.meta['status']:<9} "
        f"peak {fmt(load.max() if len(load) else None):>4}  "
        f"idle {fmt(idle.median() if len(idle) else None):>4}  "
        f"requests {fmt(agg['Request Count'] if agg is not None else None):>7}  "
        f"failures {fmt(agg['Failure Count'] if agg is not None else None):>6}  "
        f"p95 {fmt(agg['95%'] if agg is not None else None):>5} ms"
    )


def text_summary(run_dir: Path) -> str:
    run = load_run(run_dir)
    lines = [f"run {run.meta['run_id']}: {run.meta['status']}"]
    for experiment in run.meta["experiments"]:
        lines.append(f"{experiment['name']}: connections (peak during load, held when idle)")
        lines.extend(variant_line(v) for v in run.experiment(experiment["name"]))
    return "\n".join(lines)
