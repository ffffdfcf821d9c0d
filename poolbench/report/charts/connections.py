"""The connection charts: connections per engine over time, peak and idle against the model,
connection states over time.

One module because the three answer one question (how many connections, doing what) and
share the server's usable-slot line and the engine grouping.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeGuard

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.patches import Patch

from poolbench.analysis.connections import ConnectionFigures
from poolbench.analysis.run_analysis import Analysis, VariantRun
from poolbench.analysis.summary import ExperimentSummary
from poolbench.report.charts.canvas import (
    ENGINE_COLORS,
    MODEL_COLOR,
    STATE_COLORS,
    _figure,
    _fmt,
    _legend,
    _save,
)
from poolbench.report.charts.decimation import decimate
from poolbench.report.charts.time_axis import (
    _Clock,
    _first_repeats,
    _mark_events,
    _phase_handles,
    _shade_phases,
    _shade_stalls,
)

MAX_ENGINES = 12  # more engines than this: the smallest are drawn together as "other"


def engine_key(name: str) -> str:
    """`before:app.db:sync` → `app.db:sync`: the same module keeps its colour across variants."""
    return name.split(":", 1)[1] if ":" in name else name


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
