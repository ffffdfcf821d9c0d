"""The pool charts: the pool-size sweep, inside the app's pools (its pool probe), and
PgBouncer's fan-in (the app's side of the pooler over PostgreSQL's).

Drawn only when the run has what they show (a sweep, probe files, a pooler), unlike the
charts every experiment gets.
"""

from __future__ import annotations

from pathlib import Path

from poolbench.analysis.pgbouncer import SAMPLES_FILE as PGBOUNCER_FILE
from poolbench.analysis.pgbouncer import read_samples as read_pgbouncer
from poolbench.analysis.pool_probe import probe_timeline
from poolbench.analysis.pool_sweep import Sweep
from poolbench.analysis.run_analysis import Analysis, VariantRun
from poolbench.report.charts.canvas import (
    ENGINE_COLORS,
    MODEL_COLOR,
    VARIANT_COLORS,
    _figure,
    _legend,
    _save,
)
from poolbench.report.charts.time_axis import _Clock, _first_repeats, _shade_phases


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
