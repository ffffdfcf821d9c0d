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

Why one module: the charts share one style (rc params, colours, clock,
legends, downsampling); split per chart they would each import the same dozen helpers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeGuard, TypeVar

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot; this module itself never does

import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.typing import RcKeyType

from poolbench import format as fmt
from poolbench.analysis.block_test import block_edges, per_block
from poolbench.analysis.connections import ConnectionFigures
from poolbench.analysis.pgbouncer import SAMPLES_FILE as PGBOUNCER_FILE
from poolbench.analysis.pgbouncer import read_samples as read_pgbouncer
from poolbench.analysis.pool_probe import probe_timeline
from poolbench.analysis.pool_sweep import Sweep
from poolbench.analysis.run_analysis import Analysis, VariantRun
from poolbench.analysis.summary import ExperimentSummary
from poolbench.files import atomic_file
from poolbench.format import MiB
from poolbench.report import chart_kinds as kinds
from poolbench.report.chart_kinds import Chart, ChartSpec
from poolbench.results.events import EventKind

# Pixel columns of the widest axes (a figure is WIDTH × DPI = 1210 px, its axes ~0.7 of that):
# a series is decimated to two samples per column before it is drawn.
PIXEL_COLUMNS = 850
DPI = 110
WIDTH = 11.0  # inches

STYLE: dict[RcKeyType, Any] = {
    "font.family": "DejaVu Sans",
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.labelsize": 10,
    "axes.labelcolor": "#333333",
    "axes.edgecolor": "#999999",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e5e5e5",
    "grid.linewidth": 0.8,
    "xtick.color": "#555555",
    "ytick.color": "#555555",
    "legend.frameon": False,
    "legend.fontsize": 9,
    "figure.facecolor": "white",
    "figure.titlesize": 13,
    "figure.titleweight": "bold",
    "savefig.facecolor": "white",
}
VARIANT_COLORS = ["#c44e52", "#4c72b0", "#55a868", "#8172b2", "#ccb974", "#64b5cd", "#937860"]
ENGINE_COLORS = [
    "#4c72b0",
    "#dd8452",
    "#55a868",
    "#c44e52",
    "#8172b2",
    "#937860",
    "#da8bc3",
    "#8c8c8c",
    "#ccb974",
    "#64b5cd",
    "#a1c9f4",
    "#ffb482",
    "#8de5a1",
    "#ff9f9b",
    "#d0bbff",
    "#debb9b",
]
STATE_COLORS = {
    "active": "#dd8452",
    "idle in transaction": "#c44e52",
    "idle": "#4c72b0",
    "other": "#8c8c8c",
}
PHASE_COLORS = {"warmup": "#f2f2f2", "load": "#fff4e0", "idle": "#e8f1fa"}
MODEL_COLOR = "#d55e00"
MAX_ENGINES = 12  # more engines than this: the smallest are drawn together as "other"


def slug(text: str) -> str:
    """A file-name-safe form of an experiment name (data, so never trusted as a path)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip(".-")
    return cleaned[:60] or "experiment"


def engine_key(name: str) -> str:
    """`before:app.db:sync` → `app.db:sync`: the same module keeps its colour across variants."""
    return name.split(":", 1)[1] if ":" in name else name


_Data = TypeVar("_Data", pd.Series, pd.DataFrame)


def decimate(data: _Data, columns: int = PIXEL_COLUMNS) -> _Data:
    """At most two samples per pixel column, every peak and trough kept (min/max decimation).

    The time axis is cut into `columns` equal spans; in each span the samples where the value
    (a frame's row total: a stack's top) is lowest and highest are kept, in time order, plus
    the span's first missing value (NaN) so that a gap still breaks the line. The points drawn
    are actual samples, never averages, so a one-second spike of an hour-long run still shows
    at its height, and a chart costs what its pixels cost, not what the run's length costs.
    """
    n = len(data)
    if n <= 2 * columns:
        return data
    x = data.index.to_numpy(dtype=float)
    span = float(x.max() - x.min()) or 1.0
    bins = np.minimum(((x - x.min()) / span * columns).astype(np.int64), columns - 1)
    values = (
        data.sum(axis=1, min_count=1).to_numpy(float)
        if isinstance(data, pd.DataFrame)
        else data.to_numpy(float)
    )
    valid = np.flatnonzero(np.isfinite(values))
    order = valid[np.lexsort((values[valid], bins[valid]))]
    first = np.flatnonzero(np.r_[True, bins[order][1:] != bins[order][:-1]])
    last = np.r_[first[1:] - 1, order.size - 1]
    missing = np.flatnonzero(~np.isfinite(values))
    gaps = missing[np.unique(bins[missing], return_index=True)[1]]
    return data.iloc[np.unique(np.concatenate([order[first], order[last], gaps]))]


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


def _legend(ax: Axes, extra: Sequence[Artist] | None = None, **kwargs: Any) -> None:
    """Legend right of the axes: the axes' own entries, then extra handles (e.g. phases)."""
    handles, labels = ax.get_legend_handles_labels()
    for handle in extra or []:
        handles.append(handle)
        labels.append(handle.get_label())
    x = kwargs.pop("x", 1.01)
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(x, 1.0), **kwargs)


def _figure(rows: int, height_per_row: float, title: str) -> Figure:
    fig = Figure(figsize=(WIDTH, 0.9 + rows * height_per_row), dpi=DPI)
    FigureCanvasAgg(fig)
    fig.suptitle(title, x=0.01, ha="left")
    return fig


def _save(fig: Figure, path: Path) -> None:
    """The figure as a PNG: RGB when every pixel is opaque (always, on the white facecolor),
    deflated at level 3: the pixels matplotlib's savefig writes, in a smaller file, encoded in
    two thirds of the CPU time (its RGBA at level 6 was a third of the charts' time)."""
    from PIL import Image, PngImagePlugin

    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())  # type: ignore[attr-defined]
    image = Image.fromarray(rgba[..., :3] if (rgba[..., 3] == 255).all() else rgba)
    info = PngImagePlugin.PngInfo()
    info.add_text(
        "Software", f"Matplotlib version{matplotlib.__version__}, https://matplotlib.org/"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, "wb") as out:
        image.save(out, format="png", pnginfo=info, dpi=(DPI, DPI), compress_level=3)


def _first_repeats(analysis: Analysis, experiment: str) -> list[tuple[str, VariantRun]]:
    return [(name, runs[0]) for name, runs in analysis.experiment_runs(experiment).items()]


def _variant_color(i: int) -> str:
    return VARIANT_COLORS[i % len(VARIANT_COLORS)]


def _fmt(value: float | None) -> str:
    return fmt.count(value)


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


def _engine_frame(run: VariantRun) -> pd.DataFrame:
    frame: pd.DataFrame = run.series.by_engine
    if frame.shape[1] > MAX_ENGINES:
        order = frame.max().sort_values(ascending=False).index
        keep, rest = list(order[: MAX_ENGINES - 1]), list(order[MAX_ENGINES - 1 :])
        frame = frame[keep].assign(**{f"other ({len(rest)} names)": frame[rest].sum(axis=1)})
    return frame


def chart_connections(analysis: Analysis, experiment: str, path: Path, clock: _Clock) -> None:
    pairs = _first_repeats(analysis, experiment)
    keys = sorted({engine_key(str(c)) for _, r in pairs for c in _engine_frame(r).columns})
    colors = {k: ENGINE_COLORS[i % len(ENGINE_COLORS)] for i, k in enumerate(keys)}
    fig = _figure(len(pairs), 2.9, f"Connections per engine over time — {experiment}")
    axes = fig.subplots(len(pairs), 1, sharex=True, sharey=True, squeeze=False)[:, 0]
    top = max((r.figures.connections.run_peak or 0 for _, r in pairs), default=0)
    twins = []
    for ax, (name, run) in zip(axes, pairs, strict=True):
        _shade_phases(ax, run, clock)
        frame = decimate(_engine_frame(run))
        m = run.figures.connections
        if not frame.empty and frame.shape[1]:
            x = clock.x(run, frame.index)
            columns = sorted(frame.columns, key=lambda c: engine_key(str(c)))
            ax.stackplot(
                x,
                *(frame[c].to_numpy() for c in columns),
                labels=[str(c) or "(no name)" for c in columns],
                colors=[colors[engine_key(str(c))] for c in columns],
                linewidth=0,
                alpha=0.9,
                zorder=2,
            )
        ax.set_title(
            f"{name}: peak {_fmt(m.peak)}, held when idle {_fmt(m.idle)}"
            + (
                f"  (repeat {run.figures.repeat})"
                if len(analysis.experiment_runs(experiment)[name]) > 1
                else ""
            )
        )
        ax.set_ylabel("connections")
        _usable_line(ax, m, top)  # the axes are shared: within reach of any panel's data
        users = run.series.users
        _mark_events(ax, run, clock)  # labelled: the legend lists them
        _shade_stalls(ax, run, clock)
        extra = []
        if not users.empty:
            twin = ax.twinx()
            (line,) = twin.step(
                clock.x(run, users.index),
                users.to_numpy(),
                where="post",
                color="#222222",
                lw=1.2,
                ls="--",
                label="Locust users (right axis)",
            )
            twin.set_ylabel("users")
            twin.grid(False)
            twin.spines["right"].set_visible(True)
            twin.set_ylim(bottom=0)
            twins.append(twin)
            extra.append(line)
        if ax is axes[0]:
            extra += _phase_handles([r for _, r in pairs])
        _legend(ax, extra, x=1.08, fontsize=8)
    if twins:
        top = max(t.get_ylim()[1] for t in twins)
        for t in twins:
            t.set_ylim(0, top)
    axes[0].set_ylim(bottom=0)
    axes[-1].set_xlabel(clock.label)
    fig.subplots_adjust(
        left=0.07,
        right=0.72,
        top=1 - 0.55 / fig.get_figheight(),
        hspace=0.35,
        bottom=0.5 / fig.get_figheight(),
    )
    _save(fig, path)


USABLE_COLOR = "#8b0000"
REACH = 1.5  # the server's usable-slot line is drawn when it is at most this × the data's top


def within_reach(usable: float | None, top: float | None) -> TypeGuard[float]:
    """The server's usable slots are close enough to the plotted data to matter to it."""
    return usable is not None and top is not None and top > 0 and usable <= REACH * top


def _usable_line(ax: Axes, m: ConnectionFigures, top: float | None) -> None:
    """A dashed line at the slots the server could give the app, when within reach."""
    if within_reach(m.usable_slots, top):
        ax.axhline(
            m.usable_slots,
            color=USABLE_COLOR,
            lw=1.4,
            ls="--",
            zorder=5,
            label=f"server's usable slots ({_fmt(m.usable_slots)})",
        )


def chart_peak_idle(analysis: Analysis, experiment: ExperimentSummary, path: Path) -> None:
    variants = experiment.variants
    fig = _figure(1, 3.6, f"Peak and idle connections, measured vs model — {experiment.name}")
    ax = fig.subplots()
    width = 0.36
    x = np.arange(len(variants))
    for j, (attr, model_attr, label) in enumerate(
        (("peak", "ceiling", "peak during load"), ("idle", "idle", "held when idle"))
    ):
        repeats = [[getattr(f.connections, attr) for f in v.repeats] for v in variants]
        values = [_median([r for r in reps if r is not None]) for reps in repeats]
        xs = x + (j - 0.5) * width
        bars = ax.bar(
            xs,
            [0 if v is None else v for v in values],
            width * 0.92,
            label=label,
            zorder=2,
            color=["#4c72b0", "#a1c9f4"][j],
            edgecolor="white",
        )
        for bar, value in zip(bars, values, strict=True):
            ax.annotate(
                _fmt(value),
                (bar.get_x() + bar.get_width() / 2, bar.get_height() / 2),
                ha="center",
                va="center",
                fontsize=10,
                fontweight="bold",
                color="white" if j == 0 else "#1f2328",
                zorder=5,
            )
        for xi, reps in zip(xs, repeats, strict=True):
            reps = [r for r in reps if r is not None]
            if len(reps) > 1:
                ax.vlines(xi, min(reps), max(reps), color="#333333", lw=1.2, zorder=3)
        for xi, v in zip(xs, variants, strict=True):
            model = v.first.model
            p = getattr(model, model_attr) if model else None
            if p is not None:
                ax.hlines(
                    p, xi - width * 0.56, xi + width * 0.56, color=MODEL_COLOR, lw=3, zorder=4
                )
                _note_above(ax, f"model {_fmt(p)}", (xi, p), MODEL_COLOR)
    top = max((v.first.connections.peak or 0 for v in variants), default=0)
    for xi, v in zip(x, variants, strict=True):
        usable = v.first.connections.usable_slots
        if within_reach(usable, top):
            ax.hlines(
                usable,
                xi - width * 1.1,
                xi + width * 1.1,
                color=USABLE_COLOR,
                lw=1.6,
                ls="--",
                zorder=4,
            )
            _note_above(
                ax, f"server's usable slots {_fmt(usable)}", (float(xi), usable), USABLE_COLOR
            )
    ax.plot([], [], color=MODEL_COLOR, lw=3, label="configuration: ceiling / full pools idle")
    if any(within_reach(v.first.connections.usable_slots, top) for v in variants):
        ax.plot([], [], color=USABLE_COLOR, lw=1.6, ls="--", label="server's usable slots")
    ax.set_xticks(x, [v.name for v in variants])
    ax.set_ylabel("connections")
    ax.set_xlabel(
        "variant (medians over repeats; whiskers: min–max)"
        if any(len(v.repeats) > 1 for v in variants)
        else "variant"
    )
    ax.set_ylim(0, ax.get_ylim()[1] * 1.12)
    ax.grid(axis="x", visible=False)
    # below the axes, across the figure's width: a legend at the side clipped its longest entry
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=4)
    fig.subplots_adjust(left=0.07, right=0.98, top=0.86, bottom=0.27)
    _save(fig, path)


def _note_above(ax: Axes, text: str, xy: tuple[float, float], color: str) -> None:
    """A label just above a mark, centred on it."""
    ax.annotate(
        text,
        xy,
        xytext=(0, 4),
        textcoords="offset points",
        ha="center",
        va="bottom",
        fontsize=8.5,
        color=color,
    )


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


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


def _no_data(ax: Axes, text: str = "not sampled") -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="#999999")


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


def _state_frame(run: VariantRun) -> pd.DataFrame:
    frame: pd.DataFrame = run.series.by_state
    out = pd.DataFrame(index=frame.index)
    known = ("active", "idle in transaction", "idle")
    for state in known:
        out[state] = frame[state] if state in frame.columns else 0.0
    rest = [c for c in frame.columns if c not in known]
    out["other"] = frame[rest].sum(axis=1) if rest else 0.0
    return out


def chart_states(analysis: Analysis, experiment: str, path: Path, clock: _Clock) -> None:
    """Per variant: the states stacked, then the active connections alone on their own scale
    (under a large idle band, a band of 1–10 active connections is invisible)."""
    pairs = _first_repeats(analysis, experiment)
    fig = _figure(len(pairs), 3.6, f"Connection states over time — {experiment}")
    grid = fig.add_gridspec(2 * len(pairs), 1, height_ratios=[2.4, 1.2] * len(pairs))
    first = None
    shown: set[str] = set()
    for i, (name, run) in enumerate(pairs):
        ax = fig.add_subplot(grid[2 * i], sharex=first)
        low = fig.add_subplot(grid[2 * i + 1], sharex=ax)
        first = first or ax
        frame = decimate(_state_frame(run))
        frame = frame[[c for c in frame.columns if c != "other" or frame[c].abs().sum() > 0]]
        shown.update(frame.columns)
        for a in (ax, low):
            _shade_phases(a, run, clock)
        if not frame.empty:
            x = clock.x(run, frame.index)
            ax.stackplot(
                x,
                *(frame[c].to_numpy() for c in frame.columns),
                colors=[STATE_COLORS[c] for c in frame.columns],
                linewidth=0,
                alpha=0.9,
                zorder=2,
            )
            low.fill_between(
                x,
                frame["active"].to_numpy(),
                color=STATE_COLORS["active"],
                step="mid",
                lw=0,
                zorder=2,
            )
        c = run.figures.connections
        ax.set_title(
            f"{name}: active at full load p50 {_fmt(c.active.p50)}, p99 {_fmt(c.active.p99)}, "
            f"max {_fmt(c.active.max)}; idle in transaction mean "
            f"{_fmt(c.idle_in_transaction.mean)}, max {_fmt(c.idle_in_transaction.max)}"
        )
        ax.set_ylabel("connections")
        low.set_ylabel("active")
        ax.set_ylim(bottom=0)
        low.set_ylim(bottom=0)
        ax.tick_params(labelbottom=False)
        if i < len(pairs) - 1:
            low.tick_params(labelbottom=False)
        else:
            low.set_xlabel(clock.label)
    handles = [Patch(color=STATE_COLORS[s], label=s) for s in STATE_COLORS if s in shown]
    handles.append(Patch(color=STATE_COLORS["active"], label="active alone (lower panel)"))
    _legend(fig.axes[0], handles + _phase_handles([r for _, r in pairs]))
    fig.subplots_adjust(
        left=0.07,
        right=0.77,
        top=1 - 0.55 / fig.get_figheight(),
        hspace=0.45,
        bottom=0.5 / fig.get_figheight(),
    )
    _save(fig, path)


def chart_sweep(sweep: Sweep, path: Path) -> None:
    """Goodput and latency percentiles against pool size (log scale), the choice marked."""
    points = sweep.points
    fig = _figure(2, 2.6, f"Pool-size sweep — {sweep.variant}")
    top, bottom = fig.subplots(2, 1, sharex=True)
    sizes = [p.pool_size for p in points]
    top.plot(
        sizes,
        [p.goodput for p in points],
        "o-",
        color=VARIANT_COLORS[1],
        lw=1.8,
        label="goodput (successful/s)",
    )
    for key, style in (("p50", "o-"), ("p95", "s--"), ("p99", "^:")):
        bottom.plot(
            sizes,
            [getattr(p, key) for p in points],
            style,
            color=VARIANT_COLORS[0],
            lw=1.4,
            label=key,
        )
    for ax in (top, bottom):
        if sweep.recommended is not None:
            ax.axvline(
                sweep.recommended,
                color=MODEL_COLOR,
                lw=2,
                alpha=0.7,
                label=f"recommended: {sweep.recommended}",
            )
        if sweep.hikari:
            ax.axvline(
                sweep.hikari / max(sweep.workers, 1),
                color="#555555",
                lw=1,
                ls=":",
                label=f"HikariCP 2 × cores + 1 = {sweep.hikari}",
            )
        ax.set_xscale("log", base=2)
        ax.set_ylim(bottom=0)
        _legend(ax)
    top.set_title("Goodput at full load")
    top.set_ylabel("requests/s")
    bottom.set_title("Latency of the successful requests at full load")
    bottom.set_ylabel("ms")
    bottom.set_xlabel("pool_size per worker (max_overflow 0)")
    bottom.set_xticks(sizes, [str(s) for s in sizes])
    fig.subplots_adjust(left=0.07, right=0.75, top=0.9, bottom=0.1, hspace=0.3)
    _save(fig, path)


POOL_PROBE_ENGINES = 6  # per variant: the engines with the most checkouts


def _probed_sites(run: VariantRun) -> list[str]:
    """The bounded engines of a run's probe with checkouts, busiest first."""
    probe = run.figures.probe
    if probe is None or run.probe is None:
        return []
    busy = [e for e in probe.engines if e.ceiling is not None and e.checkouts]
    busy.sort(key=lambda e: -e.checkouts)
    return [e.site for e in busy[:POOL_PROBE_ENGINES]]


def chart_pool_probe(analysis: Analysis, experiment: str, path: Path, clock: _Clock) -> bool:
    """Per variant: connections checked out against the ceiling, and checkout wait p95."""
    pairs = [(n, r) for n, r in _first_repeats(analysis, experiment) if _probed_sites(r)]
    if not pairs:
        return False
    fig = _figure(2 * len(pairs), 2.3, f"Inside the pools (the app's pool probe) — {experiment}")
    axes = fig.subplots(2 * len(pairs), 1, sharex=True, squeeze=False)[:, 0]
    for i, (name, run) in enumerate(pairs):
        top, bottom = axes[2 * i], axes[2 * i + 1]
        _shade_phases(top, run, clock)
        _shade_phases(bottom, run, clock)
        for j, site in enumerate(_probed_sites(run)):
            assert run.probe is not None  # _probed_sites found the site in it
            frame = probe_timeline(run.probe, site)
            color = ENGINE_COLORS[j % len(ENGINE_COLORS)]
            gauges = frame.dropna(subset=["out"])
            x = clock.x(run, gauges.index)
            top.step(x, gauges["out"], where="post", color=color, lw=1.3, label=site)
            top.step(x, gauges["ceiling"], where="post", color=color, lw=1, ls="--", alpha=0.7)
            waits = frame["wait_p95_ms"].dropna()
            bottom.plot(
                clock.x(run, waits.index), waits, color=color, lw=1.3, marker=".", label=site
            )
        top.set_title(f"{name}: checked out, all workers (dashed: the pools' ceiling)")
        top.set_ylabel("connections")
        top.set_ylim(bottom=0)
        _legend(top, fontsize=7)
        bottom.set_title(f"{name}: checkout wait p95 per second (request → connection)")
        bottom.set_ylabel("wait p95 (ms)")
        bottom.set_ylim(bottom=0)
    axes[-1].set_xlabel(clock.label)
    fig.subplots_adjust(left=0.07, right=0.78, top=0.94, bottom=0.06, hspace=0.45)
    _save(fig, path)
    return True


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
    """Draw every chart of every experiment into out_dir/charts; return them in report order."""
    charts: list[Chart] = []
    used: set[str] = set()
    drawers = _drawers()
    with rc_context(STYLE):
        for experiment in analysis.summary.experiments:
            name = experiment.name
            base = slug(name)
            while base in used:
                base += "_"
            used.add(base)
            clock = _Clock([r for _, r in _first_repeats(analysis, name)])
            for kind in kinds.EXPERIMENT_KINDS:
                path = out_dir / "charts" / f"{base}-{kind.key}.png"
                if drawers[kind](analysis, experiment, path, clock):
                    charts.append(Chart(kind.key, kind.title, path, kind.alt, name))
        for sweep in analysis.summary.sweeps:
            path = out_dir / "charts" / f"sweep-{slug(sweep.group)}-{slug(sweep.variant)}.png"
            chart_sweep(sweep, path)
            title = f"{kinds.SWEEP.title} of {sweep.variant}"
            charts.append(
                Chart(
                    kinds.SWEEP.key,
                    title,
                    path,
                    kinds.SWEEP.alt,
                    f"sweep:{sweep.group}:{sweep.variant}",
                )
            )
    return charts


def chart_fan_in(runs: list[tuple[str, VariantRun]], path: Path, title: str) -> None:
    """One row per variant: the app's side of the pooler over PostgreSQL's."""
    clock = _Clock([r for _, r in runs])
    fig = _figure(len(runs), 2.2, title)
    axes = fig.subplots(len(runs), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (name, run) in zip(axes, runs, strict=True):
        _shade_phases(ax, run, clock)
        total = run.series.total
        ax.plot(
            clock.x(run, total.index),
            total.to_numpy(),
            color="#c44e52",
            lw=1.6,
            label="PostgreSQL backends",
        )
        b = run.figures.pgbouncer
        frame = read_pgbouncer(run.result.path / PGBOUNCER_FILE) if b else None
        if frame is not None and not frame.empty:
            x = clock.x(run, frame["ts"].to_numpy(dtype=float))
            ax.plot(
                x,
                frame["clients"],
                color="#4c72b0",
                lw=1.4,
                label="client connections to PgBouncer",
            )
            ax.plot(
                x,
                frame["servers"],
                color="#dd8452",
                lw=1.0,
                ls="--",
                label="PgBouncer's server connections",
            )
            ax.fill_between(
                x,
                0,
                frame["cl_waiting"],
                color="#8172b2",
                alpha=0.35,
                lw=0,
                label="clients waiting for a server",
            )
        if b is not None and b.server_ceiling is not None:
            ax.axhline(
                b.server_ceiling,
                color="#d55e00",
                lw=1,
                ls=":",
                label=f"default_pool_size (+ reserve) = {b.server_ceiling}",
            )
        ax.set_title(f"{name}" + (f" — PgBouncer {b.pool_mode}" if b else " — direct"))
        ax.set_ylabel("connections")
        ax.set_ylim(bottom=0)
        _legend(ax)
    axes[-1].set_xlabel(clock.label)
    height = fig.get_figheight()
    fig.subplots_adjust(
        left=0.07, right=0.72, top=1 - 0.75 / height, bottom=0.6 / height, hspace=0.5
    )
    _save(fig, path)
