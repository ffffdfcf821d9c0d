"""The time axis of the time series charts: the clock, the phases shaded, the events marked.

Shared by the charts of connections, memory, traffic and pools, which all draw the first
repeat of each variant against the seconds (or minutes) since it started, over the same
shaded phases and with the same marks for a process event or a stall.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from poolbench.analysis.run_analysis import Analysis, VariantRun
from poolbench.report.charts.canvas import PHASE_COLORS
from poolbench.results.events import EventKind


class _Clock:
    """Seconds since a variant started, shown in s or min."""

    def __init__(self, runs: list[VariantRun]):
        spans = []
        for run in runs:
            phases = run.figures.windows.phases
            if phases:
                spans.append(max(w.end for w in phases.values()) - run.figures.windows.t0)
        self.minutes = bool(spans) and max(spans) > 600
        self.unit = "min" if self.minutes else "s"
        self.label = f"time since the variant started ({self.unit})"

    def x(self, run: VariantRun, index: pd.Index | np.ndarray | list[float]) -> np.ndarray:
        seconds = np.asarray(index, dtype=float) - run.figures.windows.t0
        return seconds / 60 if self.minutes else seconds


def _shade_phases(ax: Axes, run: VariantRun, clock: _Clock) -> None:
    for name, window in run.figures.windows.phases.items():
        x0, x1 = clock.x(run, [window.start, window.end])
        ax.axvspan(x0, x1, color=PHASE_COLORS.get(name, "#f7f7f7"), zorder=0, lw=0)


def _phase_handles(runs: list[VariantRun]) -> list[Patch]:
    names: list[str] = []
    for run in runs:
        for name in run.figures.windows.phases:
            if name not in names:
                names.append(name)
    return [Patch(color=PHASE_COLORS.get(n, "#f7f7f7"), label=f"{n} phase") for n in names]


def _first_repeats(analysis: Analysis, experiment: str) -> list[tuple[str, VariantRun]]:
    return [(name, runs[0]) for name, runs in analysis.experiment_runs(experiment).items()]


def _mark_events(ax: Axes, run: VariantRun, clock: _Clock) -> list[Line2D]:
    """Vertical lines at the process events of the run (worker exits, restarts), a shaded span
    over each stall."""
    handles = []
    for event in run.figures.events:
        ts = event.get("ts")
        if ts is None:
            continue
        if event["event"] == EventKind.STALLED:  # a span, not a moment
            continue
        line = ax.axvline(
            clock.x(run, [float(ts)])[0],
            color="#222222",
            lw=1,
            ls=":",
            zorder=4,
            label=f"{event['event']}" + (f" (pid {event['pid']})" if event.get("pid") else ""),
        )
        handles.append(line)
    return handles


def _shade_stalls(
    ax: Axes, run: VariantRun, clock: _Clock, color: str = "#d62728"
) -> list[Rectangle]:
    """A shaded span over each stall of the run (the watchdog's `stalled` events)."""
    handles = []
    for event in run.figures.events:
        if event.get("event") != EventKind.STALLED or event.get("end") is None:
            continue
        start, end = clock.x(run, [float(event["ts"]), float(event["end"])])
        handles.append(
            ax.axvspan(
                start,
                end,
                color=color,
                alpha=0.18,
                lw=0,
                zorder=3,
                label=f"{run.figures.variant} stalled ({end - start:.1f} s)",
            )
        )
    return handles
