"""The memory charts: PostgreSQL's and the app's memory over time, and what one more
connection costs PostgreSQL (PSS against its backends, with the fitted slope).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes

from poolbench import format as fmt
from poolbench.analysis.run_analysis import Analysis, VariantRun
from poolbench.format import MiB
from poolbench.report.charts.canvas import _figure, _legend, _no_data, _save, _variant_color
from poolbench.report.charts.decimation import decimate
from poolbench.report.charts.time_axis import _Clock, _first_repeats, _phase_handles, _shade_phases


def _lines(
    ax: Axes,
    pairs: list[tuple[str, VariantRun]],
    key: str,
    clock: _Clock,
    scale: float = 1.0,
    style: str = "-",
    label_suffix: str = "",
    shade: bool = False,
) -> bool:
    drawn = False
    for i, (name, run) in enumerate(pairs):
        series = run.series.memory.get(key)
        if shade and i == 0:
            _shade_phases(ax, run, clock)
        if series is None or series.dropna().empty:
            continue
        series = decimate(series.dropna())
        ax.plot(
            clock.x(run, series.index),
            series.to_numpy() / scale,
            style,
            color=_variant_color(i),
            lw=1.6,
            label=f"{name}{label_suffix}",
        )
        drawn = True
    return drawn


def chart_memory(analysis: Analysis, experiment: str, path: Path, clock: _Clock) -> None:
    pairs = _first_repeats(analysis, experiment)
    fig = _figure(2, 2.6, f"Memory over time — {experiment}")
    top, bottom = fig.subplots(2, 1, sharex=True)
    if not _lines(top, pairs, "postgres_pss", clock, MiB, shade=True):
        _no_data(top)
    top.set_title("PostgreSQL backends + postmaster + other, PSS (shared pages counted once)")
    top.set_ylabel("PSS (MiB)")
    top.set_ylim(bottom=0)
    _legend(top, _phase_handles([r for _, r in pairs]))
    drawn = _lines(bottom, pairs, "app_uss", clock, MiB, label_suffix=" USS", shade=True)
    drawn |= _lines(bottom, pairs, "app_rss", clock, MiB, style=":", label_suffix=" RSS")
    if not drawn:
        _no_data(bottom)
    bottom.set_title("The app's processes (all alive at each sweep): USS (solid) and RSS (dotted)")
    bottom.set_ylabel("memory (MiB)")
    bottom.set_ylim(bottom=0)
    bottom.set_xlabel(clock.label)
    _legend(bottom)
    fig.subplots_adjust(left=0.07, right=0.83, top=0.9, bottom=0.09, hspace=0.35)
    _save(fig, path)


def chart_marginal(analysis: Analysis, experiment: str, path: Path, clock: _Clock) -> None:
    """PostgreSQL PSS against its backend count: the slope is what one more connection costs."""
    pairs = _first_repeats(analysis, experiment)
    fig = _figure(1, 3.4, f"What one more connection costs PostgreSQL — {experiment}")
    ax = fig.subplots()
    drawn = False
    for i, (name, run) in enumerate(pairs):
        pss = run.series.memory["postgres_pss"].dropna()
        if pss.empty or run.series.backends.empty:
            continue
        count = run.series.backends.reindex(pss.index, method="nearest", tolerance=0.05)
        keep = count.notna().to_numpy()
        ax.scatter(
            count.to_numpy()[keep],
            pss.to_numpy()[keep] / MiB,
            s=9,
            alpha=0.5,
            color=_variant_color(i),
            label=f"{name} (sweeps)",
        )
        slope = run.figures.memory.pss_per_backend
        if slope is not None:
            xs = np.array([count[keep].min(), count[keep].max()])
            y0 = float(np.median(pss.to_numpy()[keep] - slope.value * count.to_numpy()[keep]))
            ax.plot(
                xs,
                (y0 + slope.value * xs) / MiB,
                color=_variant_color(i),
                lw=2,
                label=f"{name}: {fmt.mib(slope.value)} per backend "
                + (
                    f"(95 % CI {fmt.mib(slope.low)} … {fmt.mib(slope.high)})"
                    if slope.low is not None
                    else "(no interval)"
                ),
            )
        drawn = True
    if not drawn:
        _no_data(ax)
    ax.set_xlabel("PostgreSQL client backends")
    ax.set_ylabel("PostgreSQL PSS (MiB)")
    ax.set_ylim(bottom=0)
    entries = len(ax.get_legend_handles_labels()[1])
    if entries:  # below the axes, two columns of the figure's width: nothing clipped
        ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.16), ncol=2)
    rows = math.ceil(entries / 2)
    fig.set_figheight(fig.get_figheight() + 0.25 * rows)
    fig.subplots_adjust(
        left=0.07, right=0.98, top=0.86, bottom=(0.6 + 0.25 * rows) / fig.get_figheight()
    )
    _save(fig, path)
