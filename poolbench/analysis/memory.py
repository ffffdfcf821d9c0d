"""Memory of PostgreSQL and of the app: PSS/USS per process group, and what a connection costs.

Summed RSS counts every shared page (shared_buffers, libraries) once per process, so it is kept
only to say by how much it would overstate (its ratio to PSS, measured per variant). What one
more connection costs is the marginal figure — the slope of PostgreSQL's PSS against its number
of backends over the run — not the average PSS per backend, which falls as shared pages spread
over more processes.

Samples a second apart are not independent (the backend count holds a level for many seconds,
and PSS drifts as backends fault pages in), so the slope's interval is not fitted over every
sample: each stretch at one backend count is one observation (its mean PSS), and the 95 %
interval is Student's t over those stretches, with n shrunk to the effective sample size
n·(1−ρ)/(1+ρ) by the lag-1 autocorrelation ρ of the stretches' residuals. With enough
stretches, PSS drifting with time whatever the backend count (backends faulting in shared
buffers) is fitted as its own term, so a drift that happens to coincide with the pools filling
is not counted as a cost per backend. With only two levels there is a slope but no interval. A
slope at or below zero is not a cost that could be saved: it is reported as not measured, with
the reason (`pss_per_backend_note`).

On a server other clients use (`--database-url`), PostgreSQL's memory as a whole moves with
their connections. When other clients held connections during the variant (from the slots the
server had left: max_connections − reserved − slots left − this variant's connections − the
collector's own: poolbench.analysis.connections.other_clients), every PostgreSQL figure is
measured over the variant's own backends (client backends of its database, known by pid from
pg_stat_activity) plus the postmaster; when they cannot be told apart the figures are withheld
(`scope` says which).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pandas as pd

from poolbench.analysis.series import VariantSeries
from poolbench.analysis.stats import t_quantile
from poolbench.analysis.typed import Json, stat
from poolbench.analysis.windows import Windows, within

MIN_BACKEND_SPREAD = 3  # backends: fewer distinct levels than this apart and no slope is fitted
MIN_STRETCHES_FOR_TIME = 5  # stretches at one backend count: enough to fit a drift with time too


class Scope(StrEnum):
    """What PostgreSQL's memory figures cover."""

    SERVER = "the whole server (no other clients)"
    OWN = "the variant's own backends + the postmaster (other clients present)"
    WITHHELD = "withheld: other clients held connections and their backends cannot be told apart"


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
    low: float | None  # None: too few independent levels for an interval
    high: float | None
    n: int  # independent observations (stretches at one backend count)
    samples: int = 0


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
    pss_per_backend_note: str = ""  # why there is no slope, when there is none
    scope: Scope = Scope.SERVER
    other_clients: float | None = None  # most connections other clients held during the variant


def _level(series: pd.Series, w: Windows) -> Level:
    return Level(
        idle=stat(within(series, w.idle_settled), "median"),
        full_load=stat(within(series, w.full_load), "mean"),
        peak=stat(within(series, w.load), "max"),
    )


def _stretches(
    t: np.ndarray, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(level, mid-time, mean PSS) per stretch of consecutive samples at one backend count."""
    edges = np.flatnonzero(np.diff(x) != 0) + 1
    starts = np.concatenate([[0], edges])
    sizes = np.diff(np.concatenate([starts, [x.size]]))
    return x[starts], np.add.reduceat(t, starts) / sizes, np.add.reduceat(y, starts) / sizes


def _fit(levels: np.ndarray, times: np.ndarray, means: np.ndarray) -> tuple[float, float] | None:
    """(slope per backend, half-width of its 95 % interval) over the stretches; with at least
    MIN_STRETCHES_FOR_TIME of them, PSS drifting with time (pages faulted in) is fitted apart:
    PSS = a + b·backends + c·t, b reported. None: too few stretches for an interval."""
    columns = [np.ones_like(levels), levels]
    if levels.size >= MIN_STRETCHES_FOR_TIME:
        columns.append(times - times[0])
    x = np.column_stack(columns)
    dof = levels.size - x.shape[1]
    if dof < 1:
        return None
    coef, *_ = np.linalg.lstsq(x, means, rcond=None)
    residuals = means - x @ coef
    rho = 0.0
    if levels.size > 3 and residuals.std() > 0:
        with np.errstate(invalid="ignore", divide="ignore"):  # a constant half: NaN, then 0
            rho = float(np.corrcoef(residuals[:-1], residuals[1:])[0, 1])
        rho = min(max(rho if np.isfinite(rho) else 0.0, 0.0), 0.99)
    n_eff = max(float(x.shape[1] + 1), levels.size * (1 - rho) / (1 + rho))
    variance = float(residuals @ residuals) / dof * np.linalg.pinv(x.T @ x)[1, 1]
    stderr = np.sqrt(max(variance, 0.0) * levels.size / n_eff)
    return float(coef[1]), t_quantile(0.975, max(1.0, n_eff - x.shape[1])) * float(stderr)


def marginal_pss(pss: pd.Series, backends: pd.Series) -> tuple[Slope | None, str]:
    """Slope of PostgreSQL PSS against its backend count (bytes per backend), and a note when
    there is none. One observation per stretch at one count (autocorrelation, above)."""
    pss = pss.dropna()
    if pss.empty or backends.empty:
        return None, "not sampled"
    count = backends.reindex(pss.index, method="nearest", tolerance=0.05)
    keep = count.notna().to_numpy()
    x, y = count.to_numpy(dtype=float)[keep], pss.to_numpy(dtype=float)[keep]
    t = pss.index.to_numpy(dtype=float)[keep]
    if x.size < 4 or x.max() - x.min() < MIN_BACKEND_SPREAD:
        return None, f"the backend count varied by less than {MIN_BACKEND_SPREAD}"
    levels, times, means = _stretches(t, x, y)
    fitted = _fit(levels, times, means)
    if fitted is None:  # two stretches: a slope, no interval
        value = float((means[-1] - means[0]) / (levels[-1] - levels[0]))
    else:
        value = fitted[0]
    if value <= 0:
        return None, (
            f"PSS fell as backends were added ({value / 2**20:+.2f} MiB per backend): "
            "something else moved the server's memory, so no cost per backend is measured"
        )
    if fitted is None:
        return Slope(value, None, None, int(levels.size), int(x.size)), ""
    half = fitted[1]
    return Slope(value, value - half, value + half, int(levels.size), int(x.size)), ""


def _own(s: VariantSeries, key: str) -> pd.Series:
    """PostgreSQL memory of the variant's own backends plus the postmaster."""
    frame = s.backend_memory.get(key, pd.DataFrame())
    backends = frame.sum(axis=1) if not frame.empty else pd.Series(0.0, index=frame.index)
    postmaster = s.memory.get(f"postmaster_{key}", pd.Series(dtype=float))
    return backends.add(postmaster.reindex(backends.index), fill_value=0.0).dropna()


def _scoped(
    s: VariantSeries, others: float | None
) -> tuple[pd.Series, pd.Series, pd.Series, pd.Series, Scope]:
    """(PSS, USS, RSS series, backend counts, scope) for the memory figures."""
    m = s.memory
    if not others:
        parts = (m["postgres_pss"], m["postgres_uss"], m["postgres_rss"])
        return (*parts, s.backends, Scope.SERVER)
    if s.backend_memory.get("pss") is None or s.backend_memory["pss"].empty:
        empty = pd.Series(dtype=float)
        return empty, empty, empty, s.backends, Scope.WITHHELD
    counts = s.backends_by_app
    own_count = counts.sum(axis=1) if not counts.empty else pd.Series(0.0, index=counts.index)
    return _own(s, "pss"), _own(s, "uss"), _own(s, "rss"), own_count, Scope.OWN


def memory_figures(s: VariantSeries, w: Windows, others: float | None = None) -> MemoryFigures:
    """`others`: connections other clients held (None: unknown, taken as none)."""
    m = s.memory
    pss, uss, rss, backends, scope = _scoped(s, others)
    pss_idle = stat(within(pss, w.idle_settled), "median")
    rss_idle = stat(within(rss, w.idle_settled), "median")
    slope, note = marginal_pss(pss, backends)
    return MemoryFigures(
        postgres_pss=_level(pss, w),
        postgres_uss=_level(uss, w),
        postgres_rss=_level(rss, w),
        app_pss=_level(m["app_pss"], w),
        app_uss=_level(m["app_uss"], w),
        app_rss=_level(m["app_rss"], w),
        backends_idle=stat(within(backends, w.idle_settled), "median"),
        rss_overstatement=rss_idle / pss_idle if rss_idle and pss_idle else None,
        pss_per_backend=slope,
        pss_per_backend_note=note,
        scope=scope,
        other_clients=others,
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
