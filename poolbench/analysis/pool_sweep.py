"""A pool-size sweep: the knee of goodput and latency against pool size, measured.

`poolbench size` runs one variant under the same steady load at a series of pool sizes (one
experiment per size, each a fresh start; run.json marks them `sweep: {group, variant,
pool_size}`). Here they are put side by side. The recommendation is the smallest size whose
goodput is within the noise of the best size's and whose p95 latency is not worse: "within the
noise" is decided by the same comparison as everywhere (Mann-Whitney across repeats, or the
within-run block test with one run per size — in a sweep every size is measured the same way,
so the within-run test is the decision rule, said so in the report); where no test is possible,
a tolerance of TOLERANCE_GOODPUT_PCT / TOLERANCE_P95_PCT decides instead, and the reason says so.
HikariCP's rule of thumb (2 × cores + 1) is printed beside it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from poolbench.analysis.compare import Row, compare_variants
from poolbench.analysis.figures import VariantFigures, VariantRun
from poolbench.analysis.typed import Json
from poolbench.results.record import ExperimentEntry

TOLERANCE_GOODPUT_PCT = 5.0
TOLERANCE_P95_PCT = 10.0


@dataclass(frozen=True)
class SweepPoint(Json):
    pool_size: int
    experiment: str
    n: int
    goodput: float | None
    failures_per_s: float | None
    p50: float | None
    p95: float | None
    p99: float | None
    refusals: float | None
    goodput_change_pct: float | None = None  # against the best size
    p95_change_pct: float | None = None
    as_good: bool | None = None  # goodput within the noise of the best, p95 not worse
    why: str = ""


@dataclass(frozen=True)
class Sweep(Json):
    group: str
    variant: str
    workers: int
    points: list[SweepPoint]
    best: int | None
    recommended: int | None
    reason: str
    cores: int | None = None
    hikari: int | None = None
    notes: list[str] = field(default_factory=list)


def _worse(row: Row | None, tolerance: float) -> tuple[bool, str]:
    """Is this size worse than the best beyond the noise? And how that was decided."""
    if row is not None and row.spoiled:  # a failed (or capped) run is never recommended
        return True, f"not measured: {row.spoiled}"
    if row is None or row.change_pct is None or row.baseline is None or row.variant is None:
        return False, "no figure"
    status = row.result.status
    if status == "significant":
        return row.verdict == "worse", f"{row.result.test}, p = {row.result.p_value:.2g}"
    if status == "not significant":
        return False, f"no significant difference (p = {row.result.p_value:.2g})"
    worse = row.change_pct < -tolerance if row.better == "higher" else row.change_pct > tolerance
    return worse, f"untested: a {tolerance:.0f} % tolerance decides"


def _point(size: int, experiment: str, runs: list[VariantRun]) -> SweepPoint:
    def median(get: Callable[[VariantFigures], float | None]) -> float | None:
        values = sorted(v for r in runs if (v := get(r.figures)) is not None)
        return values[len(values) // 2] if values else None

    return SweepPoint(
        pool_size=size,
        experiment=experiment,
        n=len(runs),
        goodput=median(lambda f: f.traffic.goodput),
        failures_per_s=median(lambda f: f.traffic.failures_per_s),
        p50=median(lambda f: f.traffic.latency.p50),
        p95=median(lambda f: f.traffic.latency.p95),
        p99=median(lambda f: f.traffic.latency.p99),
        refusals=median(lambda f: f.traffic.refusals),
    )


def sweep(
    group: str, variant: str, points: list[tuple[int, str, list[VariantRun]]], cores: int | None
) -> Sweep:
    """Compare every size with the best one; recommend the smallest that is as good."""
    measured = [(size, name, runs) for size, name, runs in sorted(points) if runs]
    base = [_point(size, name, runs) for size, name, runs in measured]
    workers = measured[0][2][0].figures.workers if measured else 1
    hikari = 2 * cores + 1 if cores else None
    with_goodput = [p for p in base if p.goodput is not None]
    if not with_goodput:
        return Sweep(
            group, variant, workers, base, None, None, "no traffic was measured", cores, hikari
        )
    best = max(with_goodput, key=lambda p: p.goodput if p.goodput is not None else -math.inf)
    best_runs = next(runs for size, _, runs in measured if size == best.pool_size)
    out = []
    for point, (size, _, runs) in zip(base, measured, strict=True):
        if size == best.pool_size:
            out.append(SweepPoint(**{**point.__dict__, "as_good": True, "why": "the best goodput"}))
            continue
        table = compare_variants(best_runs, runs, (f"pool {best.pool_size}", f"pool {size}"))
        goodput, p95 = table.row("goodput"), table.row("p95_ms")
        g_worse, g_how = _worse(goodput, TOLERANCE_GOODPUT_PCT)
        p_worse, p_how = _worse(p95, TOLERANCE_P95_PCT)
        why = (
            f"goodput {'lower' if g_worse else 'as good'} ({g_how}); "
            f"p95 {'worse' if p_worse else 'no worse'} ({p_how})"
        )
        out.append(
            SweepPoint(
                **{
                    **point.__dict__,
                    "as_good": not (g_worse or p_worse),
                    "why": why,
                    "goodput_change_pct": goodput.change_pct if goodput is not None else None,
                    "p95_change_pct": p95.change_pct if p95 is not None else None,
                }
            )
        )
    chosen = next((p for p in out if p.as_good), None)
    reason = (
        f"the smallest pool whose goodput is within the noise of the best (pool {best.pool_size}: "
        f"{best.goodput:.0f}/s) and whose p95 is no worse"
    )
    notes = []
    if chosen is not None and chosen.pool_size == max(p.pool_size for p in out):
        notes.append(
            "The largest size tried is the recommendation: "
            "the knee may lie beyond it; sweep further."
        )
    if any(p.n == 1 for p in out):
        notes.append(
            "One run per size: sizes are compared with the within-run block test where the "
            "full-load window holds enough independent blocks, else with the tolerance shown; "
            "run-to-run variation is not included (use --repeats, and a longer load phase)."
        )
    return Sweep(
        group,
        variant,
        workers,
        out,
        best.pool_size,
        chosen.pool_size if chosen else None,
        reason,
        cores,
        hikari,
        notes,
    )


def sweeps(
    experiments: Sequence[ExperimentEntry], runs: list[VariantRun], cores: int | None
) -> list[Sweep]:
    """Every sweep group recorded in run.json, from the runs of its experiments."""
    groups: dict[tuple[str, str], list[tuple[int, str, list[VariantRun]]]] = {}
    for entry in experiments:
        mark = entry.sweep
        if mark is None:
            continue
        mine = [r for r in runs if r.figures.experiment == entry.name]
        groups.setdefault((mark.group, mark.variant), []).append((mark.pool_size, entry.name, mine))
    return [sweep(group, variant, points, cores) for (group, variant), points in groups.items()]
