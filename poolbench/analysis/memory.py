"""Memory of PostgreSQL and of the app: PSS/USS per process group, and what a connection costs.

Summed RSS counts every shared page (shared_buffers, libraries) once per process, so it is kept
only to say by how much it would overstate (its ratio to PSS, measured per variant). What one
more connection costs is the marginal figure — the slope of PostgreSQL's PSS against its number
of backends over the run — not the average PSS per backend, which falls as shared pages spread
over more processes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from poolbench.analysis.series import VariantSeries
from poolbench.analysis.typed import Json, stat
from poolbench.analysis.windows import Windows, within

MIN_BACKEND_SPREAD = 3  # backends: fewer distinct levels than this apart and no slope is fitted


@dataclass(frozen=True)
class Level(Json):
    """One memory series (bytes): idle (median, settled), full load (mean), peak (load)."""

    idle: float | None
    full_load: float | None
    peak: float | None


@dataclass(frozen=True)
class Slope(Json):
    """A fitted slope with its 95 % confidence interval."""

    value: float
    low: float
    high: float
    n: int


@dataclass(frozen=True)
class MemoryFigures(Json):
    postgres_pss: Level
    postgres_uss: Level
    postgres_rss: Level
    app_pss: Level
    app_uss: Level
    app_rss: Level
    backends_idle: float | None
    rss_overstatement: float | None  # summed RSS ÷ PSS of PostgreSQL, idle
    pss_per_backend: Slope | None  # marginal bytes per backend (PSS vs backends)


def _level(series: pd.Series, w: Windows) -> Level:
    return Level(
        idle=stat(within(series, w.idle_settled), "median"),
        full_load=stat(within(series, w.full_load), "mean"),
        peak=stat(within(series, w.load), "max"),
    )


def marginal_pss(pss: pd.Series, backends: pd.Series) -> Slope | None:
    """Slope of PostgreSQL PSS against its backend count (bytes per backend), all samples."""
    from scipy import stats as sps

    pss = pss.dropna()
    if pss.empty or backends.empty:
        return None
    count = backends.reindex(pss.index, method="nearest", tolerance=0.05)
    keep = count.notna().to_numpy()
    x, y = count.to_numpy(dtype=float)[keep], pss.to_numpy(dtype=float)[keep]
    if x.size < 4 or x.max() - x.min() < MIN_BACKEND_SPREAD:
        return None
    fit = sps.linregress(x, y)
    half = sps.t.ppf(0.975, x.size - 2) * fit.stderr
    return Slope(float(fit.slope), float(fit.slope - half), float(fit.slope + half), int(x.size))


def memory_figures(s: VariantSeries, w: Windows) -> MemoryFigures:
    m = s.memory
    pss_idle = stat(within(m["postgres_pss"], w.idle_settled), "median")
    rss_idle = stat(within(m["postgres_rss"], w.idle_settled), "median")
    return MemoryFigures(
        postgres_pss=_level(m["postgres_pss"], w),
        postgres_uss=_level(m["postgres_uss"], w),
        postgres_rss=_level(m["postgres_rss"], w),
        app_pss=_level(m["app_pss"], w),
        app_uss=_level(m["app_uss"], w),
        app_rss=_level(m["app_rss"], w),
        backends_idle=stat(within(s.backends, w.idle_settled), "median"),
        rss_overstatement=rss_idle / pss_idle if rss_idle and pss_idle else None,
        pss_per_backend=marginal_pss(m["postgres_pss"], s.backends),
    )


@dataclass(frozen=True)
class CpuFigures(Json):
    """Mean % of one core per component over the full-load window (the collector's own too)."""

    full_load: dict[str, float]


def cpu_figures(s: VariantSeries, w: Windows) -> CpuFigures:
    if s.cpu.empty:
        return CpuFigures({})
    window = within(s.cpu, w.full_load)
    out = {str(c) or "(none)": stat(window[c], "mean") for c in window.columns}
    return CpuFigures({k: v for k, v in out.items() if v is not None and np.isfinite(v)})
