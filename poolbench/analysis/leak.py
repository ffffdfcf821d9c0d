"""Does memory grow at a constant load? A slope with a confidence interval, in MiB per hour.

A leak is growth while nothing else changes, so the slope is fitted only over a window at a
constant user count after the pools have filled (a soak phase when the run has one, else the
full-load window after the pools stopped growing). Pools still open a connection now and then
at a constant load (when a rare burst finds every one of theirs busy), and each brings a fixed
cost; memory is therefore fitted against time *and* the connection count, and only the growth
the connections do not explain is the trend. Samples a second apart are autocorrelated:
the interval uses the effective sample size n·(1−ρ)/(1+ρ) from the residuals' lag-1
autocorrelation ρ, not n.

What is judged, and against what:

- Private memory only: the app's USS and PostgreSQL's USS. PostgreSQL's PSS also grows as its
  backends fault in shared_buffers pages (shared, bounded by shared_buffers): it is shown, not
  judged.
- Warm-up is excluded: a process's memory climbs while its allocator arenas and caches fill,
  then levels off. Detected as decelerating growth: the window's first quarter (then its
  second) is dropped while its slope is more than WARMUP_RATIO × the slope of everything after
  it and it grew by at least half of RESOLUTION_MIB; the trend says how much it dropped.
- A practical threshold: growth that would double the process within a day (its mean level ÷
  24 h), and at least FLOOR_MIB_PER_H. Smaller growth does not matter on the time scale a
  benchmark can see.
- A window long enough for that threshold: the threshold's growth over the window must reach
  RESOLUTION_MIB (the jitter of a process's memory), and the window must last MIN_WINDOW_S;
  else "not measured", with the length it would need.

The verdict is one of

- growing: the whole interval is above zero and the slope is at least the threshold;
- no growth: the interval's upper bound is below the threshold;
- not measured: the window is too short, or its interval too wide to rule out the threshold;
- not judged: PostgreSQL PSS (shared pages), or a connection count below the pools' ceiling —
  pools filling are never a leak.

The connection count over the same window is the other half of a leak test: a connection leak
grows it past the ceiling the configuration allows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from poolbench.analysis.stats import t_quantile
from poolbench.analysis.typed import Json, Window
from poolbench.analysis.windows import within
from poolbench.format import MiB

HOUR = 3600.0
DAY = 24 * HOUR
MIN_WINDOW_S = 60.0
FLOOR_MIB_PER_H = 3.0  # the threshold never goes below this
RESOLUTION_MIB = 0.25  # memory jitter: the threshold's growth over the window must reach it
WARMUP_RATIO = 3.0
CONNECTIONS_PER_H = 2.0  # the threshold for a connection count (a ceiling decides, not this)
GROWING, FLAT, NOT_MEASURED = "growing", "no growth", "not measured"
NOT_JUDGED = "not judged"


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
    threshold_per_h: float | None = None  # growth that would matter (units per hour)
    warmup_s: float = 0.0  # excluded from the start of the window as warm-up
    judged: bool = True  # False: shown for context (PostgreSQL PSS: shared pages)


def fit_trend(
    values: pd.Series, connections: pd.Series | None = None
) -> tuple[float, float, float, int] | None:
    """(slope, low, high) per second with a 95 % interval corrected for autocorrelation, and n.

    With `connections` (their count at each sample), the slope is the growth over time that
    the number of connections does not explain: y = a + b·connections + c·t, c reported. A pool
    still opening connections now and then adds their fixed cost (a backend's memory, a
    connection object); that is not a leak, and the regression keeps it out of c.
    """
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
        with np.errstate(invalid="ignore", divide="ignore"):  # a constant half: NaN, then 0
            rho = float(np.corrcoef(residuals[:-1], residuals[1:])[0, 1])
        rho = min(max(rho if np.isfinite(rho) else 0.0, 0.0), 0.99)
    n_eff = max(float(x.shape[1] + 1), len(y) * (1 - rho) / (1 + rho))
    dof = max(1, len(y) - x.shape[1])
    variance = float(residuals @ residuals) / dof * np.linalg.pinv(x.T @ x)[-1, -1]
    stderr = np.sqrt(max(variance, 0.0) * len(y) / n_eff)
    half = t_quantile(0.975, max(1.0, n_eff - x.shape[1])) * stderr
    slope = float(coef[-1])
    return slope, slope - half, slope + half, len(y)


def _slope(values: pd.Series) -> float:
    t = values.index.to_numpy(dtype=float)
    if values.size < 3 or np.ptp(t) <= 0:
        return 0.0
    return float(np.polyfit(t, values.to_numpy(dtype=float), 1)[0])


def warmup_end(values: pd.Series, window: Window, resolution: float) -> float:
    """Where warm-up ends in the window: its start, or the end of its first or second quarter
    when that quarter grew WARMUP_RATIO × faster than everything after it (decelerating)."""
    start, quarter = window.start, window.seconds / 4
    for k in (1, 2):
        cut = window.start + k * quarter
        early = values[(values.index >= start) & (values.index < cut)]
        later = values[values.index >= cut]
        rate, rest = _slope(early), _slope(later)
        if rate * quarter < resolution / 2 or rate <= WARMUP_RATIO * max(rest, 0.0):
            break
        start = cut
    return start


def _threshold(unit: str, level: float) -> float:
    """Growth per hour that would matter: doubling within a day, at least the floor."""
    if unit != "bytes":
        return CONNECTIONS_PER_H
    return max(FLOOR_MIB_PER_H * MiB, level / DAY * HOUR)


def trend(
    what: str,
    unit: str,
    values: pd.Series,
    window: Window | None,
    connections: pd.Series | None = None,
    *,
    judged: bool = True,
) -> Trend:
    if window is None:
        return Trend(what, unit, None, NOT_MEASURED, reason="no window at a constant load")
    inside = within(values, window).dropna()
    if inside.empty:
        return Trend(what, unit, window, NOT_MEASURED, reason="not sampled")
    level = float(inside.mean())
    threshold = _threshold(unit, level)
    resolution = RESOLUTION_MIB * MiB if unit == "bytes" else 1.0
    start = warmup_end(inside, window, resolution) if unit == "bytes" else window.start
    fit_window = Window(window.name, start, window.end)
    needed = max(MIN_WINDOW_S, resolution / threshold * HOUR) if unit == "bytes" else MIN_WINDOW_S
    warmup = start - window.start
    if fit_window.seconds < needed:
        return Trend(
            what,
            unit,
            fit_window,
            NOT_MEASURED,
            samples=len(inside),
            level=level,
            reason=_short(fit_window, window, needed, threshold, unit),
            threshold_per_h=threshold,
            warmup_s=warmup,
            judged=judged,
        )
    fitted = fit_trend(
        within(inside, fit_window),
        within(connections, fit_window) if connections is not None else None,
    )
    if fitted is None:
        return Trend(
            what,
            unit,
            fit_window,
            NOT_MEASURED,
            reason="too few samples",
            threshold_per_h=threshold,
            warmup_s=warmup,
            judged=judged,
        )
    slope, low, high = (v * HOUR for v in fitted[:3])
    verdict, reason = _verdict(slope, low, high, threshold, unit, judged)
    if verdict == GROWING and unit == "bytes":  # the size of it, for whoever judges a leak
        grown = slope * fit_window.seconds / HOUR
        reason += (
            f" ({grown / MiB:.2f} MiB over the {fit_window.seconds:.0f} s window: a longer soak "
            "tells a leak from caches still warming)"
        )
    return Trend(
        what,
        unit,
        fit_window,
        verdict,
        slope,
        low,
        high,
        level,
        fitted[3],
        reason,
        threshold_per_h=threshold,
        warmup_s=warmup,
        judged=judged,
    )


def _short(fit: Window, window: Window, needed: float, threshold: float, unit: str) -> str:
    warm = (
        f" after {window.seconds - fit.seconds:.0f} s of warm-up"
        if fit.seconds < window.seconds
        else ""
    )
    return (
        f"{fit.seconds:.0f} s at a constant load{warm} is too short: telling growth of "
        f"{_per_h(threshold, unit)} (the threshold) from jitter takes at least {needed:.0f} s "
        "(run a soak phase)"
    )


def _per_h(value: float, unit: str) -> str:
    return f"{value / MiB:.1f} MiB/h" if unit == "bytes" else f"{value:.0f}/h"


def _verdict(
    slope: float, low: float, high: float, threshold: float, unit: str, judged: bool
) -> tuple[str, str]:
    matters = (
        f"growth that would matter, {_per_h(threshold, unit)} "
        f"(doubling within a day, at least {FLOOR_MIB_PER_H:.0f} MiB/h)"
    )
    if not judged:
        return NOT_JUDGED, (
            "shared pages (shared_buffers faulted in by backends) move PSS: PostgreSQL's "
            "private memory (USS) is what is judged"
        )
    if low > 0 and slope >= threshold:
        return GROWING, f"the whole 95 % interval is above zero and past the {matters}"
    if high <= threshold:
        return FLAT, f"the 95 % interval's upper bound is below the {matters}"
    return NOT_MEASURED, f"the interval is too wide to rule out the {matters}"
