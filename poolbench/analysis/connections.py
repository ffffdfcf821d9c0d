"""Connections: how many the variant held, per engine and state, and how often it opened new ones.

Counts are read from pg_stat_activity at 10 Hz: a peak is the largest sampled count (the server's
log, where readable, gives the exact one), an idle count is the median over the settled idle
window. Churn separates the sessions opened while the pools filled (a one-off cost) from the
sessions opened after they stopped growing (a per-second cost that lasts as long as the load).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from poolbench.analysis.series import VariantSeries, process_pid
from poolbench.analysis.typed import Json, Window, stat
from poolbench.analysis.windows import Windows, within
from poolbench.results.record import PreflightEntry

MIN_CHURN_WINDOW_S = 5.0
FILL_SMOOTHING = 10  # samples (1 s at 10 Hz): a one-sample spike is not the pools' level


@dataclass(frozen=True)
class Spread(Json):
    mean: float | None = None
    p50: float | None = None
    p99: float | None = None
    max: float | None = None

    @classmethod
    def of(cls, values: pd.Series) -> Spread:
        return cls(
            stat(values, "mean"), stat(values, "p50"), stat(values, "p99"), stat(values, "max")
        )


@dataclass(frozen=True)
class EngineFigures(Json):
    """One application_name (an engine, or an untagged client process)."""

    name: str
    peak: float | None  # load phase
    peak_before_idle: float | None  # warm-up and load: what the pool opened
    idle: float | None  # idle, 2nd half (median)
    active_max: float | None
    checked_out_max: float | None  # the app's own view, one worker


@dataclass(frozen=True)
class ProcessFigures(Json):
    """One client process holding untagged connections (detail of the `untagged` engine)."""

    label: str  # as the collector wrote it: untagged:<executable>:<pid>
    pid: int
    peak: float | None  # load phase
    idle: float | None  # idle, settled (median)


@dataclass(frozen=True)
class ConnectionFigures(Json):
    peak: float | None
    p95: float | None
    mean_full_load: float | None
    idle: float | None
    run_peak: float | None
    samples_in_load: int
    max_connections: float | None
    slots_left_min: float | None
    usable_slots: float | None  # what a non-superuser app can hold: free slots + its own
    engines: list[EngineFigures]
    states_full_load: dict[str, float]  # mean per state
    states_idle: dict[str, float]
    active: Spread
    checked_out: Spread
    pools_holding_idle: int | None  # engines still holding a connection when idle
    # sessions in state "idle in transaction" at full load: a transaction left open holds its
    # connection (and its locks, and vacuum's horizon) while the app does something else
    idle_in_transaction: Spread = field(default_factory=Spread)
    processes: list[ProcessFigures] = field(default_factory=list)  # untagged, per client process

    def engine(self, name: str) -> EngineFigures | None:
        return next((e for e in self.engines if e.name == name), None)


@dataclass(frozen=True)
class ChurnFigures(Json):
    """Sessions opened (pg_stat_database `sessions`, so every application name together)."""

    filled_at: float | None  # when the pools stopped growing (epoch s)
    fill_window: Window | None
    churn_window: Window | None
    opened_while_filling: float | None
    churn_per_s: float | None  # after the pools stopped growing, to the end of the load
    idle_per_s: float | None
    total_new: float | None
    abandoned: float | None
    fatal: float | None
    notes: list[str] = field(default_factory=list)


def _col(frame: pd.DataFrame, name: str) -> pd.Series | None:
    return frame[name] if name in frame.columns else None


def _engine(name: str, s: VariantSeries, w: Windows) -> EngineFigures:
    col = s.by_engine[name]
    before_idle = (
        Window("before idle", w.t0, w.phases["idle"].start) if "idle" in w.phases else w.load
    )
    active = _col(s.active_by_engine, name)
    out = _col(s.checked_out_by_engine, name)
    return EngineFigures(
        name=str(name),
        peak=stat(within(col, w.load), "max"),
        peak_before_idle=stat(within(col, before_idle), "max"),
        idle=stat(within(col, w.idle_settled), "median"),
        active_max=stat(within(active, w.load), "max") if active is not None else 0.0,
        checked_out_max=stat(within(out, w.load), "max") if out is not None else None,
    )


def connection_figures(s: VariantSeries, w: Windows) -> ConnectionFigures:
    load_total = within(s.total, w.load)
    engines = [_engine(name, s, w) for name in s.by_engine.columns]
    holding = [e for e in engines if (e.idle or 0) >= 1]
    return ConnectionFigures(
        peak=stat(load_total, "max"),
        p95=stat(load_total, "p95"),
        mean_full_load=stat(within(s.total, w.full_load), "mean"),
        idle=stat(within(s.total, w.idle_settled), "median"),
        run_peak=stat(s.total, "max"),
        samples_in_load=len(load_total),
        max_connections=stat(s.max_connections, "max"),
        slots_left_min=stat(within(s.slots_left, w.load), "min"),
        usable_slots=_usable(s, w),
        engines=engines,
        states_full_load={
            str(k) or "(none)": stat(within(s.by_state[k], w.full_load), "mean") or 0.0
            for k in s.by_state.columns
        },
        states_idle={
            str(k) or "(none)": stat(within(s.by_state[k], w.idle_settled), "median") or 0.0
            for k in s.by_state.columns
        },
        active=Spread.of(within(s.active, w.full_load)),
        checked_out=Spread.of(within(s.checked_out, w.full_load)),
        pools_holding_idle=len(holding) if w.idle_settled is not None else None,
        idle_in_transaction=_state_spread(s, "idle in transaction", w),
        processes=[
            ProcessFigures(
                label=str(name),
                pid=process_pid(str(name)) or 0,
                peak=stat(within(s.by_process[name], w.load), "max"),
                idle=stat(within(s.by_process[name], w.idle_settled), "median"),
            )
            for name in s.by_process.columns
        ],
    )


def _state_spread(s: VariantSeries, state: str, w: Windows) -> Spread:
    """Mean, p50, p99 and max of one state's count at full load (0 where none was sampled)."""
    if w.full_load is None or s.total.empty:
        return Spread()
    column = s.by_state[state] if state in s.by_state.columns else None
    count = (column if column is not None else pd.Series(0.0, index=s.total.index)).reindex(
        s.total.index, fill_value=0.0
    )
    return Spread.of(within(count.fillna(0.0), w.full_load))


def _usable(s: VariantSeries, w: Windows) -> float | None:
    """max_connections − reserved slots − other clients' connections (the collector's too)."""
    if s.slots_left.empty or s.total.empty:
        return None
    total = s.total.reindex(s.slots_left.index, method="nearest", tolerance=0.05)
    return stat(within(s.slots_left + total, w.load), "median")


def filled_at(total: pd.Series, load: Window) -> float | None:
    """When the pools stopped growing: the first time the smoothed count reaches its top."""
    inside = within(total, load).dropna()
    if inside.empty:
        return None
    smooth = inside.rolling(FILL_SMOOTHING, min_periods=1, center=True).median()
    reached = smooth.index[smooth.to_numpy() >= smooth.max()]
    return float(reached[0]) if len(reached) else None


def _sum(series: pd.Series, window: Window | None) -> float | None:
    if window is None or series.empty:
        return None
    return float(within(series, window).sum())


def churn_figures(s: VariantSeries, w: Windows) -> ChurnFigures:
    new = s.churn.get("sessions_new", pd.Series(dtype=float)).dropna()
    notes: list[str] = []
    if new.empty or w.load is None:
        return ChurnFigures(None, None, None, None, None, None, None, None, None, ["not sampled"])
    at = filled_at(s.total, w.load)
    fill = Window("pools filling", w.load.start, at) if at and at > w.load.start else None
    churn = Window("after the pools stopped growing", at, w.load.end) if at else None
    if churn is not None and churn.seconds < MIN_CHURN_WINDOW_S:
        notes.append(
            f"the pools grew until {churn.seconds:.0f} s before the end of the load: "
            "too short a window to measure churn"
        )
        churn = None
    idle = w.phases.get("idle")
    return ChurnFigures(
        filled_at=at,
        fill_window=fill,
        churn_window=churn,
        # the counters land up to ~1 s late: a fill's sessions are counted a second beyond it
        opened_while_filling=_sum(new, Window("fill", w.load.start, at + 1.0)) if at else None,
        churn_per_s=_rate(new, Window("churn", churn.start + 1.0, churn.end)) if churn else None,
        idle_per_s=_rate(new, idle) if idle else None,
        total_new=float(new.sum()),
        abandoned=_total(s.churn.get("sessions_abandoned")),
        fatal=_total(s.churn.get("sessions_fatal")),
        notes=notes,
    )


def _rate(deltas: pd.Series, window: Window) -> float | None:
    """Counter deltas per second over the ticks in a window: each delta covers the time since
    the tick before it, so the rate divides by those intervals, not by the window's length."""
    ts = deltas.index.to_numpy(dtype=float)
    covered = np.diff(ts, prepend=np.nan)
    inside = window.contains(ts) & np.isfinite(covered)
    seconds = float(covered[inside].sum())
    return float(deltas.to_numpy(dtype=float)[inside].sum()) / seconds if seconds > 0 else None


def _total(series: pd.Series | None) -> float | None:
    if series is None or series.dropna().empty:
        return None
    return float(np.nansum(series.to_numpy(dtype=float)))


def other_clients(s: VariantSeries, w: Windows, preflight: PreflightEntry | None) -> float | None:
    """Connections clients outside the variant's database held: max_connections − reserved −
    slots left − the variant's connections − poolbench's own (the collector), read where the
    app opens none — before it started (the preflight) and over the idle phase (median) — since
    under load a backend still authenticating has no database yet and shows there for an
    instant, which a churning app does all the time. None when the reserved count is unknown."""
    reserved = preflight.reserved if preflight is not None else None
    if preflight is None or reserved is None or s.slots_left.empty or s.total.empty:
        return None
    own = float(preflight.poolbench_clients or 1)
    total = s.total.reindex(s.slots_left.index, method="nearest", tolerance=0.05)
    limit = s.max_connections.reindex(s.slots_left.index, method="nearest", tolerance=0.05)
    others = limit - reserved - s.slots_left - total - own
    idle = stat(within(others, w.phases.get("idle")), "median")
    values = [v for v in (idle, preflight.other_clients) if v is not None]
    return max(0.0, float(np.floor(max(values)))) if values else None
