"""Does memory grow at a constant load? A slope with a confidence interval, in MiB per hour.

A leak is growth while nothing else changes, so the slope is fitted only over a window at a
constant user count after the pools have filled (a soak phase when the run has one, else the
full-load window after the pools stopped growing). Pools still open a connection now and then
at a constant load (when a rare burst finds every one of theirs busy), and each brings a fixed
cost; memory is therefore fitted against time *and* the connection count, and only the growth
the connections do not explain is the trend. Samples a second apart are autocorrelated:
the interval uses the effective sample size n·(1−ρ)/(1+ρ) from the residuals' lag-1
autocorrelation ρ, not n. The verdict is one of

- growing: the whole interval is above zero and the slope is worth reporting (≥ MEANINGFUL);
- no growth: the interval's upper bound is below a useful bound (the report says "no growth
  above U MiB/h");
- not measured: the window is too short, or its interval too wide to rule out a useful growth.

The connection count over the same window is the other half of a leak test: a connection leak
grows it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from poolbench.analysis.typed import Json, Window
from poolbench.analysis.windows import within
from poolbench.format import MiB

HOUR = 3600.0
MIN_WINDOW_S = 60.0
MEANINGFUL_MIB_PER_H = 1.0  # and 1 % of the level per hour, whichever is larger
USEFUL_BOUND_MIB_PER_H = 10.0  # and 5 % of the level per hour, whichever is larger
GROWING, FLAT, NOT_MEASURED = "growing", "no growth", "not measured"


@dataclass(frozen=True)
class Trend(Json):
    """One series' slope over the leak window (units per hour), and what it means."""

    what: str  # e.g. "app USS", "PostgreSQL PSS", "connections"
    unit: str  # "bytes" or "connections"
    window: Window | None
    verdict: str
    slope_per_h: float | None = None
    low_per_h: float | None = None
    high_per_h: float | None = None
    level: float | None = None
    samples: int = 0
    reason: str = ""


def fit_trend(
    values: pd.Series, connections: pd.Series | None = None
) -> tuple[float, float, float, int] | None:
    """(slope, low, high) per second with a 95 % interval corrected for autocorrelation, and n.

    With `connections` (their count at each sample), the slope is the growth over time that
    the number of connections does not explain: y = a + b·connections + c·t, c reported. A pool
    still opening connections now and then adds their fixed cost (a backend's memory, a
    connection object); that is not a leak, and the regression keeps it out of c.
    """
    from scipy import stats as sps

    clean = values.dropna()
    if len(clean) < 5:
        return None
    t = clean.index.to_numpy(dtype=float)
    y = clean.to_numpy(dtype=float)
    if np.ptp(t) <= 0:
        return None
    if np.ptp(y) == 0:  # constant (a pool held full): the slope is exactly 0
        return 0.0, 0.0, 0.0, len(y)
    columns = [np.ones_like(t), t - t[0]]
    if connections is not None:
        count = connections.reindex(clean.index, method="nearest", tolerance=0.5).to_numpy(float)
        if np.isfinite(count).all() and np.ptp(count) > 0:
            columns.insert(1, count)
    x = np.column_stack(columns)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    residuals = y - x @ coef
    rho = 0.0
    if residuals.std() > 0:
        rho = float(np.corrcoef(residuals[:-1], residuals[1:])[0, 1])
        rho = min(max(rho if np.isfinite(rho) else 0.0, 0.0), 0.99)
    n_eff = max(float(x.shape[1] + 1), len(y) * (1 - rho) / (1 + rho))
    dof = max(1, len(y) - x.shape[1])
    variance = float(residuals @ residuals) / dof * np.linalg.pinv(x.T @ x)[-1, -1]
    stderr = np.sqrt(max(variance, 0.0) * len(y) / n_eff)
    half = sps.t.ppf(0.975, max(1.0, n_eff - x.shape[1])) * stderr
    slope = float(coef[-1])
    return slope, slope - half, slope + half, len(y)


def trend(
    what: str,
    unit: str,
    values: pd.Series,
    window: Window | None,
    connections: pd.Series | None = None,
) -> Trend:
    if window is None:
        return Trend(what, unit, None, NOT_MEASURED, reason="no window at a constant load")
    inside = within(values, window).dropna()
    if window.seconds < MIN_WINDOW_S:
        return Trend(
            what, unit, window, NOT_MEASURED, samples=len(inside),
            reason=f"{window.seconds:.0f} s at a constant load is too short to bound a slope "
            f"(at least {MIN_WINDOW_S:.0f} s; run a soak phase)",
        )  # fmt: skip
    fitted = fit_trend(inside, within(connections, window) if connections is not None else None)
    if fitted is None:
        return Trend(what, unit, window, NOT_MEASURED, reason="too few samples in the window")
    slope, low, high = (v * HOUR for v in fitted[:3])
    n = fitted[3]
    level = float(inside.mean())
    scale = MiB if unit == "bytes" else 1.0
    meaningful = max(MEANINGFUL_MIB_PER_H * scale if unit == "bytes" else 1.0, 0.01 * level)
    useful = max(USEFUL_BOUND_MIB_PER_H * scale if unit == "bytes" else 2.0, 0.05 * level)
    if low > 0 and slope >= meaningful:
        verdict, reason = GROWING, "the whole 95 % interval is above zero"
    elif high <= useful:
        verdict, reason = FLAT, "the 95 % interval's upper bound is the most it can be growing"
    else:
        verdict, reason = NOT_MEASURED, "the interval is too wide to rule out a useful growth"
    return Trend(what, unit, window, verdict, slope, low, high, level, n, reason)
