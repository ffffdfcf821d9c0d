"""The traffic chart: goodput, failures and latency percentiles per second, from every
request, with the full-load window the comparison uses marked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.axes import Axes

from poolbench.analysis.block_test import block_edges, per_block
from poolbench.analysis.run_analysis import Analysis, VariantRun
from poolbench.report.charts.canvas import _figure, _legend, _no_data, _save, _variant_color
from poolbench.report.charts.decimation import decimate
from poolbench.report.charts.time_axis import (
    _Clock,
    _first_repeats,
    _phase_handles,
    _shade_phases,
    _shade_stalls,
)


def _per_second_latency(run: VariantRun) -> pd.DataFrame | None:
    log, load = run.series.requests, run.figures.windows.load
    if log is None or load is None:
        return None
    edges = block_edges(load.start, load.end, 1.0)
    blocks = per_block(log.start, log.response_ms, log.ok, edges)
    return pd.DataFrame(
        {
            "goodput": blocks.goodput,
            "failures": blocks.failures,
            "p50": blocks.p50_ms,
            "p95": blocks.p95_ms,
            "p99": blocks.p99_ms,
        },
        index=edges[:-1] + 0.5,
    )


def _line(ax: Axes, run: VariantRun, clock: _Clock, series: pd.Series, **style: Any) -> None:
    """One per-second series, decimated on its own (each line keeps its own peaks)."""
    series = decimate(series)
    ax.plot(clock.x(run, series.index), series.to_numpy(), **style)


def chart_throughput(analysis: Analysis, experiment: str, path: Path, clock: _Clock) -> None:
    pairs = _first_repeats(analysis, experiment)
    fig = _figure(2, 2.8, f"Goodput and latency per second, every request — {experiment}")
    top, bottom = fig.subplots(2, 1, sharex=True)
    drawn = False
    for i, (name, run) in enumerate(pairs):
        frame = _per_second_latency(run)
        if i == 0:
            _shade_phases(top, run, clock)
            _shade_phases(bottom, run, clock)
        if frame is None:
            continue
        color = _variant_color(i)
        _shade_stalls(top, run, clock, color)
        _line(top, run, clock, frame["goodput"], color=color, lw=1.6, label=f"{name} successful/s")
        if frame["failures"].any():
            _line(
                top,
                run,
                clock,
                frame["failures"],
                color=color,
                lw=1.2,
                ls=":",
                label=f"{name} failed/s",
            )
        for key, style in (("p50", "-"), ("p95", "--"), ("p99", ":")):
            _line(
                bottom, run, clock, frame[key], color=color, lw=1.4, ls=style, label=f"{name} {key}"
            )
        window = run.figures.traffic.window
        if window is not None:
            for edge in (window.start, window.end):
                top.axvline(clock.x(run, [edge])[0], color=color, lw=1, ls="--", alpha=0.6)
        drawn = True
    if not drawn:
        _no_data(top, "no per-request records")
        _no_data(bottom, "no per-request records")
    top.set_title("Requests served per second (dashed lines: the full-load window compared)")
    top.set_ylabel("requests/s")
    top.set_ylim(bottom=0)
    _legend(top, _phase_handles([r for _, r in pairs]))
    bottom.set_title("Response time percentiles of the successful requests served each second")
    bottom.set_ylabel("response time (ms)")
    bottom.set_ylim(bottom=0)
    bottom.set_xlabel(clock.label)
    _legend(bottom)
    fig.subplots_adjust(left=0.07, right=0.8, top=0.9, bottom=0.09, hspace=0.3)
    _save(fig, path)
