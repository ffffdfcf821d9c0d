"""Charts of a run, one PNG per question, one style for all (matplotlib, Agg, no pyplot state).

Per experiment:
1. connections over time per variant, stacked by engine, user count on a second axis, and the
   process events (an app worker that exited, a restart) as marked lines;
2. peak and idle connections per variant, with the model's prediction (configuration only);
3. PostgreSQL memory (PSS) and the app's memory over time;
4. what one more connection costs: PostgreSQL PSS against its number of backends, with the
   fitted slope (the marginal cost);
5. goodput, failures and latency percentiles per second, from every request, with the
   full-load window the comparison uses marked;
6. connection states (active / idle in transaction / idle) over time.

Time series show the first repeat of each variant, as seconds (or minutes, for long runs)
since the variant started; a series longer than two points per pixel column keeps only the
lowest and highest sample of each column (`decimate`: every peak and trough drawn), so a
one-hour run at 10 Hz draws as fast as a short one.

Which charts there are (keys, titles, alt texts, report order) is poolbench.report.chart_kinds,
read by the document too; here each kind gets the function that draws it (`_drawers`).

The package is split by responsibility: `canvas` (style, figure, PNG), `decimation` (min/max
per pixel column), `time_axis` (clock, phases, events), and one module per chart family
(`connections`, `memory`, `traffic`, `pools`); this module maps each kind to its drawer and
draws them all. The names other modules and tests import from `poolbench.report.charts`
stay importable from here (`__all__`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from pathlib import Path

from matplotlib import rc_context

from poolbench.analysis.collector_pause import fewer_collections
from poolbench.analysis.pool_sweep import Sweep
from poolbench.analysis.run_analysis import Analysis
from poolbench.analysis.summary import ExperimentSummary
from poolbench.report import chart_kinds as kinds
from poolbench.report.chart_kinds import Chart, ChartSpec
from poolbench.report.charts.canvas import DPI, STYLE, _figure, _legend, _save
from poolbench.report.charts.connections import (
    chart_connections,
    chart_peak_idle,
    chart_states,
    within_reach,
)
from poolbench.report.charts.decimation import PIXEL_COLUMNS, decimate
from poolbench.report.charts.memory import chart_marginal, chart_memory
from poolbench.report.charts.pools import chart_fan_in, chart_pool_probe, chart_sweep
from poolbench.report.charts.time_axis import _Clock, _first_repeats
from poolbench.report.charts.traffic import chart_throughput
from poolbench.report.charts.two_cores import Task, draw_all

__all__ = [
    "DPI",
    "PIXEL_COLUMNS",
    "STYLE",
    "_drawers",
    "_figure",
    "_legend",
    "_save",
    "decimate",
    "rc_context",
    "render_charts",
    "slug",
    "within_reach",
]


def slug(text: str) -> str:
    """A file-name-safe form of an experiment name (data, so never trusted as a path)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip(".-")
    return cleaned[:60] or "experiment"


Drawer = Callable[[Analysis, ExperimentSummary, Path, _Clock], bool]


def _always(draw: Callable[[Analysis, str, Path, _Clock], None]) -> Drawer:
    """A chart drawn for every experiment, from its name."""

    def drawn(analysis: Analysis, experiment: ExperimentSummary, path: Path, clock: _Clock) -> bool:
        draw(analysis, experiment.name, path, clock)
        return True

    return drawn


def _draw_peak_idle(
    analysis: Analysis, experiment: ExperimentSummary, path: Path, clock: _Clock
) -> bool:
    chart_peak_idle(analysis, experiment, path)
    return True


def _draw_fan_in(
    analysis: Analysis, experiment: ExperimentSummary, path: Path, clock: _Clock
) -> bool:
    runs = _first_repeats(analysis, experiment.name)
    if not any(r.figures.pgbouncer is not None for _, r in runs):
        return False
    chart_fan_in(runs, path, kinds.FAN_IN.title)
    return True


def _draw_pool_probe(
    analysis: Analysis, experiment: ExperimentSummary, path: Path, clock: _Clock
) -> bool:
    return chart_pool_probe(analysis, experiment.name, path, clock)


def _drawers() -> dict[ChartSpec, Drawer]:
    """The function that draws each experiment's chart kind (poolbench.report.chart_kinds)."""
    return {
        kinds.CONNECTIONS: _always(chart_connections),
        kinds.PEAK_IDLE: _draw_peak_idle,
        kinds.MEMORY: _always(chart_memory),
        kinds.MARGINAL: _always(chart_marginal),
        kinds.THROUGHPUT: _always(chart_throughput),
        kinds.STATES: _always(chart_states),
        kinds.FAN_IN: _draw_fan_in,
        kinds.POOL_PROBE: _draw_pool_probe,
    }


def render_charts(analysis: Analysis, out_dir: Path) -> list[Chart]:
    """Draw every chart of every experiment into out_dir/charts (on two cores where it can:
    `two_cores`); return those drawn, in report order."""
    planned: list[tuple[Chart, Task]] = []
    used: set[str] = set()
    drawers = _drawers()
    for experiment in analysis.summary.experiments:
        name = experiment.name
        base = slug(name)
        while base in used:
            base += "_"
        used.add(base)
        clock = _Clock([r for _, r in _first_repeats(analysis, name)])
        for kind in kinds.EXPERIMENT_KINDS:
            path = out_dir / "charts" / f"{base}-{kind.key}.png"
            draw = partial(drawers[kind], analysis, experiment, path, clock)
            planned.append((Chart(kind.key, kind.title, path, kind.alt, name), draw))
    for sweep in analysis.summary.sweeps:
        path = out_dir / "charts" / f"sweep-{slug(sweep.group)}-{slug(sweep.variant)}.png"
        title = f"{kinds.SWEEP.title} of {sweep.variant}"
        where = f"sweep:{sweep.group}:{sweep.variant}"
        chart = Chart(kinds.SWEEP.key, title, path, kinds.SWEEP.alt, where)
        planned.append((chart, partial(_draw_sweep, sweep, path)))
    with rc_context(STYLE), fewer_collections():
        drawn = draw_all([draw for _, draw in planned])
    return [chart for (chart, _), shown in zip(planned, drawn, strict=True) if shown]


def _draw_sweep(sweep: Sweep, path: Path) -> bool:
    chart_sweep(sweep, path)
    return True
