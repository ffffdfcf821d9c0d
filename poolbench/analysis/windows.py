"""The windows every figure is computed over, and the names its label gives them.

- `load`, `idle`: the phases as variant.json recorded them (half-open [start, end)).
- `full load`: the longest stretch of the load phase at the largest user count Locust reached,
  after `SETTLE_S` seconds for the pools and the queue to settle: where throughput and latency
  are compared (under a ramp, the hold at the top).
- `idle, 2nd half`: the second half of the idle phase, once the pools have settled: what they
  keep open. When the app was still serving a backlog after the load stopped (backends active
  or idle in transaction, requests still completing), idle starts only once it drained
  (`idle, after the backlog drained`); when it never drained, there is no idle window and
  `idle_note` says idle was not reached — the count then held is the backlog's, not the pools'.

Locust's stats history gives the user count once a second; without it the full-load window
is the second half of the load phase and is named so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import overload

import numpy as np
import pandas as pd

from poolbench.analysis.typed import Json, Window
from poolbench.results.record import Phase, VariantEntry

SETTLE_S = 2.0
MIN_FULL_LOAD_S = 5.0  # shorter than this after settling: fall back to the 2nd half of load
MIN_IDLE_S = 2.0  # of idle after a backlog drained, else idle was not reached
BUSY_SMOOTHING = 10  # samples (1 s at 10 Hz): a one-sample blip is not a backlog


@dataclass(frozen=True)
class Windows(Json):
    phases: dict[str, Window]
    load: Window | None
    full_load: Window | None
    idle_settled: Window | None
    t0: float  # the first phase's start: time zero of the charts
    idle_note: str = ""  # why there is no idle window although there is an idle phase


def recorded_phases(phases: Sequence[Phase]) -> dict[str, Window]:
    """The phases that ran to their end, by name (a later phase of a name wins)."""
    return {
        p.name: Window(p.name, p.start, p.end)
        for p in phases
        if p.end is not None and p.end > p.start
    }


def full_load_window(load: Window, users: pd.Series) -> Window:
    """The longest run of seconds at the top user count inside the load phase, settled."""
    inside = users[(users.index >= load.start) & (users.index <= load.end)].dropna()
    if not inside.empty and inside.max() > 0:
        at_top = (inside >= inside.max()).to_numpy()
        times = inside.index.to_numpy(dtype=float)
        best, run_start = (0.0, 0.0, 0.0), None
        for i, top in enumerate(at_top):
            if top and run_start is None:
                run_start = times[i]
            if run_start is not None and (not top or i == len(at_top) - 1):
                run_end = load.end if top else times[i]
                if run_end - run_start > best[0]:
                    best = (run_end - run_start, run_start, run_end)
                run_start = None
        _, start, end = best
        start = max(start, load.start) + SETTLE_S
        if end - start >= MIN_FULL_LOAD_S:
            return Window(f"full load ({inside.max():.0f} users)", start, min(end, load.end))
    half = load.start + load.seconds / 2
    return Window("load, 2nd half", half, load.end)


def windows_for(entry: VariantEntry, users: pd.Series, first_sample: float | None) -> Windows:
    phases = recorded_phases(entry.phases)
    load = phases.get("load")
    idle = phases.get("idle")
    starts = [w.start for w in phases.values()]
    t0 = min(starts) if starts else (first_sample or 0.0)
    return Windows(
        phases=phases,
        load=Window("load", load.start, load.end) if load else None,
        full_load=full_load_window(load, users) if load else None,
        idle_settled=Window("idle, 2nd half", idle.start + idle.seconds / 2, idle.end)
        if idle
        else None,
        t0=t0,
    )


@overload
def within(series: pd.Series, window: Window | None) -> pd.Series: ...
@overload
def within(series: pd.DataFrame, window: Window | None) -> pd.DataFrame: ...
def within(series: pd.Series | pd.DataFrame, window: Window | None) -> pd.Series | pd.DataFrame:
    """The part of a time-indexed series inside a window (empty when there is no window)."""
    if window is None:
        return series.iloc[0:0]
    index = series.index.to_numpy(dtype=float)
    return series[window.contains(index)]


def ticks_between(index: np.ndarray, window: Window) -> np.ndarray:
    inside: np.ndarray = index[window.contains(index)]
    return inside


def drained_at(idle: Window, busy: pd.Series, completions: np.ndarray | None) -> float | None:
    """When the backlog left by the load drained: after the last second with a backend busy
    (active or idle in transaction, 1 s rolling median) and the last request completed inside
    the idle phase. None when nothing was left to serve."""
    last = None
    inside = within(busy, Window("idle", idle.start, idle.end)).dropna()
    if not inside.empty:
        smooth = inside.rolling(BUSY_SMOOTHING, min_periods=1, center=True).median()
        busy_ts = smooth.index.to_numpy(dtype=float)[smooth.to_numpy() >= 1]
        if busy_ts.size:
            step = (
                float(np.median(np.diff(inside.index.to_numpy(dtype=float))))
                if len(inside) > 1
                else 0.0
            )
            last = float(busy_ts.max()) + step
    if completions is not None and completions.size:
        done = completions[(completions >= idle.start) & (completions < idle.end)]
        if done.size:
            last = max(last or 0.0, float(done.max()))
    return last


def after_backlog(w: Windows, busy: pd.Series, completions: np.ndarray | None) -> Windows:
    """The windows with idle measured only once the load's backlog drained (or not at all)."""
    idle = w.phases.get("idle")
    if idle is None or w.idle_settled is None:
        return w
    at = drained_at(idle, busy, completions)
    if at is None or at <= w.idle_settled.start:
        return w
    if idle.end - at >= MIN_IDLE_S:
        return replace(w, idle_settled=Window("idle, after the backlog drained", at, idle.end))
    until = (
        f"through the whole {idle.seconds:.0f} s idle phase"
        if idle.end - at < 1.0
        else f"until {at - idle.start:.0f} s into the {idle.seconds:.0f} s idle phase"
    )
    return replace(
        w,
        idle_settled=None,
        idle_note=(
            "idle was not reached: the app was still serving the load's backlog (backends "
            f"active or idle in transaction, or requests completing) {until}, so what it held "
            "then is the backlog's, not what its pools keep; lengthen the idle phase"
        ),
    )
