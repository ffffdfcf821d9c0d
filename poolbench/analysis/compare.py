"""One variant against another, metric by metric, in the manner of benchstat.

The values shown are the medians over repeats and the change is computed from exactly those
values. Whether a change is real is decided by
- nothing, for an exact metric with identical values in every repeat (`exact`);
- Mann-Whitney U across repeats (the repeat is the unit of inference: poolbench.analysis.stats);
- with one repeat per side, for metrics with per-block values, the within-run test over
  independent blocks (poolbench.analysis.block_test): it shows the two windows differ beyond their
  own noise, not that another run would, so its verdict is marked `within_run` and never earns
  a badge, the word "significant", or a claim;
- else the difference is untested, and the row says so.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

import poolbench.analysis.block_test as within
from poolbench.analysis.figures import VariantRun
from poolbench.analysis.metrics import METRICS, Metric
from poolbench.analysis.stats import Comparison, compare, compare_exact
from poolbench.analysis.typed import Json, pct_change

BETTER, WORSE, SAME, NO_DIFFERENCE, UNTESTED, NOT_MEASURED = (
    "better",
    "worse",
    "same",
    "no difference",
    "untested",
    "not measured",  # a failed variant, or one capped by another client: no verdict
)


@dataclass(frozen=True)
class Row(Json):
    metric: str
    label: str
    window: str
    unit: str
    better: str  # "lower" or "higher"
    exact: bool
    baseline: float | None  # median over repeats: the value shown
    variant: float | None
    baseline_values: list[float | None]  # one per repeat
    variant_values: list[float | None]
    change_pct: float | None  # from the two values shown
    result: Comparison
    verdict: str  # better, worse, same, no difference, untested, not measured
    within_run: bool  # decided by the within-run block test (one repeat per side)
    spoiled: str | None = None  # why the values cannot carry a verdict (`not measured`)

    @property
    def established(self) -> bool:
        """A difference a badge, a claim or a threshold may rest on."""
        return self.verdict in (BETTER, WORSE) and not self.within_run


@dataclass(frozen=True)
class ComparisonTable(Json):
    baseline: str
    variant: str
    n_baseline: int
    n_variant: int
    rows: list[Row]

    def row(self, metric: str) -> Row | None:
        return next((r for r in self.rows if r.metric == metric), None)


def _median(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None]
    return float(np.median(finite)) if finite else None


def _verdict(metric: Metric, result: Comparison, change: float | None) -> str:
    if result.status == "untested":
        return UNTESTED
    if result.status == "not significant":
        return NO_DIFFERENCE
    if change is None or change == 0:
        return SAME
    return BETTER if (change > 0) == (metric.better == "higher") else WORSE


@dataclass
class _WithinRun:
    """One run per side: their block values, cut once for every metric of the pair."""

    length: within.BlockLength
    blocks: list[within.BlockMetrics]


def _cut(a: VariantRun, b: VariantRun) -> _WithinRun | None:
    """The full-load windows of one run per side in blocks of one common length, or None."""
    runs = (a, b)
    if any(r.series.requests is None or r.figures.traffic.source != "requests" for r in runs):
        return None
    pairs = [
        (log, w)
        for r in runs
        if (log := r.series.requests) is not None and (w := r.figures.traffic.window) is not None
    ]
    if len(pairs) < len(runs):  # a "requests" source always has its window
        return None
    seconds = [
        within.per_block(
            log.start, log.response_ms, log.ok, within.block_edges(w.start, w.end, 1.0)
        )
        for log, w in pairs
    ]
    length = within.choose_block_length(
        *(s.goodput for s in seconds), *(s.mean_ms for s in seconds)
    )
    size = length.length or 1
    blocks = [
        within.per_block(
            log.start, log.response_ms, log.ok, within.block_edges(w.start, w.end, size)
        )
        for log, w in pairs
    ]
    return _WithinRun(length, blocks)


def compare_row(
    metric: Metric,
    base: list[VariantRun],
    other: list[VariantRun],
    names: tuple[str, str],
    cut: _WithinRun | None,
) -> Row:
    a = [metric.get(r.figures) for r in base]
    b = [metric.get(r.figures) for r in other]
    shown_a, shown_b = _median(a), _median(b)
    within_run = False
    if metric.exact:
        result = compare_exact(_floats(a), _floats(b), names=names)
    elif cut is not None and metric.block is not None:
        values = [getattr(b, metric.block) for b in cut.blocks]
        result = within.compare_blocks(values[0], values[1], cut.length, names=names)
        within_run = True
    else:
        result = compare(_floats(a), _floats(b), names=names)
    change = pct_change(shown_a, shown_b, what=metric.name)
    windows = _windows([metric.window(r.figures) for r in (*base, *other)])
    spoiled = _spoiled(metric, [*base, *other])
    unsteady = _unsteady(metric, (*base, *other))
    if unsteady:
        result = replace(result, footnotes=(*result.footnotes, *unsteady))
    return Row(
        metric=metric.name,
        label=metric.label,
        window=windows,
        unit=metric.unit,
        better=metric.better,
        exact=metric.exact,
        baseline=shown_a,
        variant=shown_b,
        baseline_values=a,
        variant_values=b,
        change_pct=change,
        result=result,
        verdict=NOT_MEASURED if spoiled else _verdict(metric, result, change),
        within_run=within_run,
        spoiled=spoiled,
    )


def _spoiled(metric: Metric, runs: list[VariantRun]) -> str | None:
    """Why the runs' values of a measured metric carry no verdict: a variant failed (what it
    recorded stops at the fault), or another client capped what its pools could open."""
    if not metric.measured:
        return None
    reasons = [
        f"{f.variant}-{f.repeat} failed" + (f" ({f.fault})" if f.fault else "")
        for f in (r.figures for r in runs)
        if f.status == "failed"
    ] + [
        f"{f.variant}-{f.repeat} was capped by another client: {f.capped}"
        for f in (r.figures for r in runs)
        if f.capped
    ]
    return "; ".join(reasons) or None


def _unsteady(metric: Metric, runs: tuple[VariantRun, ...]) -> list[str]:
    """A trend inside a full-load window this row is computed over (poolbench.analysis.traffic),
    said beside the figure it affects."""
    out = []
    for r in runs:
        window = r.figures.traffic.window
        if metric.block is None or window is None or metric.window(r.figures) != window.label():
            continue
        for d in r.figures.traffic.unsteady:
            out.append(f"{r.figures.variant}: not steady, {d.describe()}")
    return out


def _windows(labels: list[str]) -> str:
    """One label for the repeats' windows: `full load (40 users), 16–17 s` when only the
    length differs, else every distinct label."""
    missing = sum(label == "n/a" for label in labels)
    labels = [label for label in labels if label != "n/a"] or ["n/a"]
    suffix = f" (none in {missing} run(s))" if missing and labels != ["n/a"] else ""
    return _merged(list(dict.fromkeys(labels))) + suffix


def _merged(distinct: list[str]) -> str:
    parts = [label.rsplit(", ", 1) for label in distinct]
    if len(distinct) > 1 and all(len(p) == 2 and p[1].endswith(" s") for p in parts):
        names = {p[0] for p in parts}
        if len(names) == 1:
            seconds = sorted(float(p[1][:-2]) for p in parts)
            return f"{names.pop()}, {seconds[0]:.0f}–{seconds[-1]:.0f} s"
    return "; ".join(distinct)


def _floats(values: list[float | None]) -> list[float]:
    return [np.nan if v is None else float(v) for v in values]


def compare_variants(
    base: list[VariantRun], other: list[VariantRun], names: tuple[str, str] | None = None
) -> ComparisonTable:
    """Every metric of `other` against `base` (each a list of repeats of one variant)."""
    names = names or (base[0].figures.variant, other[0].figures.variant)
    cut = _cut(base[0], other[0]) if len(base) == 1 and len(other) == 1 else None
    rows = [compare_row(m, base, other, names, cut) for m in METRICS]
    return ComparisonTable(names[0], names[1], len(base), len(other), rows)
