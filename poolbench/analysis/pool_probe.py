"""Inside the pools: per engine, how long checkouts waited and how often the pool was full.

From the pool probe's files (poolbench/results/pool_probe.py), over the full-load window: every
checkout requested in the window gives its wait (request → connection handed out) and use
(handed out → returned); percentiles are exact over those checkouts (inverted CDF, as the
request percentiles), never from samples. Gauges are read on a 0.1 s grid from the probe's
change-driven samples: the share of (process × tick) pairs at the pool's ceiling, the most
checked out in one process and over all of them at once. Counters (connects, closes,
invalidations, pre-ping failures, timeouts) are their increase over the window.

An engine is its creation site (module:line): the same site in several worker processes is
one engine, each process its own pool of that size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from poolbench import format as fmt
from poolbench.analysis.typed import Json, Window
from poolbench.results.pool_probe import ProbeData, ProbeEngine

GRID_S = 0.1
WAITED_MS = 1.0  # a checkout that took longer waited: for a free connection, or a new one
STALE_S = 1.5  # a process's gauges count until this long after its last sample (1 s heartbeat)
COUNTERS = ("connects", "closes", "invalidations", "pre_ping_failures", "timeouts", "errors")


@dataclass(frozen=True)
class Spread(Json):
    """Exact percentiles, in ms, of one duration over the checkouts of a window."""

    n: int
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None


@dataclass(frozen=True)
class ProbedEngine(Json):
    """One creation site: its measured settings, and what its pools did under full load."""

    site: str
    application_name: str | None
    name_source: str | None  # "app": its own name; "probe": named after its site
    database: str | None
    user: str | None
    pool_class: str
    pool_size: int | None
    max_overflow: int | None
    ceiling: int | None  # per process; None: unbounded
    pool_timeout: float | None
    pool_recycle: float | None
    pool_pre_ping: bool
    processes: int  # processes that created it
    wait: Spread  # every checkout (and timeout) requested in the window
    queued: Spread  # those that found no free connection and did not open one: queueing alone
    use: Spread
    create: Spread  # opening a new connection
    checkouts: int
    opened: int  # checkouts that opened a new connection (their wait includes it)
    counters: dict[str, int]  # COUNTERS, increase over the window
    peak_out: int  # most checked out in one process
    peak_out_total: int  # most checked out over all processes at one tick
    peak_waiting: int  # most checkouts in progress in one process (queued or connecting)
    at_ceiling_share: float | None  # of process × tick pairs; None: no ceiling or no ticks
    advice: str  # what the wait says about its size (sizing input)


@dataclass(frozen=True)
class ProbeFigures(Json):
    window: Window | None
    processes: int
    processes_cut: int  # ended without their final line (killed hard)
    engines: list[ProbedEngine]
    damaged: list[str] = field(default_factory=list)  # files left out, damaged lines skipped

    def engine(self, site: str) -> ProbedEngine | None:
        return next((e for e in self.engines if e.site == site), None)


def spread(seconds: np.ndarray) -> Spread:
    values = np.sort(seconds[~np.isnan(seconds)]) * 1000.0
    n = len(values)
    if n == 0:
        return Spread(0)

    def q(p: float) -> float:
        return float(values[max(math.ceil(p * n - 1e-9), 1) - 1])

    return Spread(n, q(0.50), q(0.95), q(0.99), float(values[-1]))


def probe_figures(data: ProbeData | None, window: Window | None) -> ProbeFigures | None:
    if data is None:
        return None
    checkouts, samples = _by_site(data.checkouts), _by_site(data.samples)
    engines = [
        _engine(
            [e for e in data.engines if e.site == site],
            window,
            checkouts.get(site, data.checkouts.iloc[0:0]),
            samples.get(site, data.samples.iloc[0:0]),
        )
        for site in data.sites()
    ]
    return ProbeFigures(
        window=window,
        processes=len(data.processes),
        processes_cut=sum(not p.ended for p in data.processes),
        engines=engines,
        damaged=[f"{name}: not read" for name in data.skipped]
        + [
            f"{p.pid}.jsonl: {p.damaged_lines} damaged lines skipped"
            for p in data.processes
            if p.damaged_lines
        ],
    )


def _in(frame: pd.DataFrame, window: Window | None) -> pd.DataFrame:
    if window is None:
        return frame
    return frame[(frame["t"] >= window.start) & (frame["t"] < window.end)]


def _by_site(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The rows of each site, in file order: one pass, not a comparison of every row per site."""
    return {str(site): rows for site, rows in frame.groupby("site", sort=False, observed=True)}


def _engine(
    members: list[ProbeEngine],
    window: Window | None,
    site_checkouts: pd.DataFrame,
    samples: pd.DataFrame,
) -> ProbedEngine:
    """One site's figures from its probe lines (`members`), checkout records and samples."""
    first = members[0]
    site = first.site
    records = _in(site_checkouts, window)
    waited = records[records["kind"].isin(["checkout", "timeout"])]
    checkouts = records[records["kind"] == "checkout"]
    queued = waited[~waited["opened"].astype(bool)]
    ticks = gauge_ticks(samples, window)
    ceiling = first.ceiling
    out = ticks["out"].to_numpy() if len(ticks) else np.zeros(0)
    at_ceiling = float(np.mean(out >= ceiling)) if ceiling is not None and len(out) else None
    totals = ticks.groupby("tick")["out"].sum() if len(ticks) else pd.Series(dtype=float)
    wait = spread(waited["wait_s"].to_numpy(dtype=float))
    sampled = _in(samples, window)
    peak_out = int(sampled["out_max"].max()) if len(sampled) else 0
    engine = ProbedEngine(
        site=site,
        application_name=first.application_name,
        name_source=first.name_source,
        database=first.database,
        user=first.user,
        pool_class=first.pool_class,
        pool_size=first.pool_size,
        max_overflow=first.max_overflow,
        ceiling=ceiling,
        pool_timeout=first.pool_timeout,
        pool_recycle=first.pool_recycle,
        pool_pre_ping=first.pool_pre_ping,
        processes=len({e.pid for e in members}),
        wait=wait,
        queued=spread(queued["wait_s"].to_numpy(dtype=float)),
        use=spread(checkouts["use_s"].to_numpy(dtype=float)),
        create=spread(records["create_s"].to_numpy(dtype=float)),
        checkouts=len(checkouts),
        opened=int(checkouts["opened"].astype(bool).sum()),
        counters=_increase(samples, window),
        peak_out=peak_out,
        peak_out_total=int(totals.max()) if len(totals) else 0,
        peak_waiting=int(sampled["pending_max"].max()) if len(sampled) else 0,
        at_ceiling_share=at_ceiling,
        advice="",  # from the figures, below
    )
    return replace(engine, advice=wait_advice(first, peak_out, at_ceiling, engine))


def gauge_ticks(samples: pd.DataFrame, window: Window | None) -> pd.DataFrame:
    """Each process's gauges on a 0.1 s grid over the window: tick, pid, out, pending.

    The probe writes a sample when something changed (and every second regardless), so a
    gauge holds its last written value until the next sample; a process counts until
    STALE_S after its last one."""
    if samples.empty:
        return pd.DataFrame(columns=["tick", "pid", "out", "pending"])
    start = window.start if window else float(samples["t"].min())
    end = window.end if window else float(samples["t"].max())
    grid = np.arange(start, end, GRID_S)
    parts = []
    for pid, rows in samples.groupby("pid"):
        times = rows["t"].to_numpy(dtype=float)
        at = np.searchsorted(times, grid, side="right") - 1
        live = (at >= 0) & (grid <= times[-1] + STALE_S)
        parts.append(
            pd.DataFrame(
                {
                    "tick": grid[live],
                    "pid": pid,
                    "out": rows["out"].to_numpy()[at[live]],
                    "pending": rows["pending"].to_numpy()[at[live]],
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def _increase(samples: pd.DataFrame, window: Window | None) -> dict[str, int]:
    """Each counter's increase over the window, summed over processes."""
    total = dict.fromkeys(COUNTERS, 0)
    for _, rows in samples.groupby("pid"):
        before = rows[rows["t"] < window.start] if window else rows.iloc[0:0]
        upto = rows[rows["t"] <= window.end] if window else rows
        if upto.empty:
            continue
        for name in COUNTERS:
            start = int(before[name].iloc[-1]) if len(before) else 0
            total[name] += int(upto[name].iloc[-1]) - start
    return total


def headroom(k: int) -> int:
    """k connections at most, plus a quarter (at least one) for bursts the window missed."""
    return k + max(1, math.ceil(k / 4))


def wait_advice(
    engine: ProbeEngine, peak_out: int, at_ceiling: float | None, f: ProbedEngine
) -> str:
    """The sizing input of the wait: queued at p95 → not over-provisioned; never more than
    k checked out and no queueing → can shrink to k plus headroom. The wait of a checkout
    that opened a new connection is the connection's cost, not the pool's size: left out."""
    wait: Spread = f.queued
    if f.wait.n == 0:
        return "no checkouts in the window"
    if engine.ceiling is None:
        return (
            f"{engine.pool_class}: no ceiling, a new connection per checkout "
            f"(create p50 {fmt.ms(f.create.p50_ms)})"
            if engine.pool_class == "NullPool"
            else f"{engine.pool_class}: no ceiling"
        )
    timeouts = f.counters["timeouts"]
    if (wait.p95_ms or 0) >= WAITED_MS or timeouts:
        full = f", at its ceiling {fmt.share(at_ceiling)} of the time" if at_ceiling else ""
        return (
            f"checkouts queued for a connection (p95 {fmt.ms(wait.p95_ms)}{full}"
            + (f", {timeouts} timeouts" if timeouts else "")
            + "): not over-provisioned; a larger pool cuts the wait only if PostgreSQL has "
            "spare cores"
        )
    if (wait.p99_ms or 0) < WAITED_MS and peak_out < engine.ceiling:
        size = headroom(peak_out)
        if size < engine.ceiling:
            return (
                f"never more than {peak_out} of {engine.ceiling} checked out in a process, "
                f"no queueing: can shrink to {size} (pool_size + max_overflow, {peak_out} plus "
                "headroom)"
            )
    return "no queueing for a connection: sized about right"


def probe_timeline(data: ProbeData, site: str, bin_s: float = 1.0) -> pd.DataFrame:
    """One engine over the whole run, for the chart: per 0.1 s tick the connections checked
    out over all processes (`out`) and their ceilings summed (`ceiling`, NaN when unbounded);
    per `bin_s` of request time the p95 of checkout wait in ms (`wait_p95_ms`, at the bin's
    start). Indexed by epoch seconds."""
    samples = data.samples[data.samples["site"] == site]
    ticks = gauge_ticks(samples, None)
    ceilings = {(e.pid): e.ceiling for e in data.engines if e.site == site}
    if len(ticks):
        ticks = ticks.assign(ceiling=ticks["pid"].map(ceilings).astype(float))
        gauges = ticks.groupby("tick")[["out", "ceiling"]].sum(min_count=1)
    else:
        gauges = pd.DataFrame(columns=["out", "ceiling"], dtype=float)
    records = data.checkouts[
        (data.checkouts["site"] == site) & data.checkouts["kind"].isin(["checkout", "timeout"])
    ]
    if len(records):
        bins = np.floor(records["t"].to_numpy(dtype=float) / bin_s) * bin_s
        waits = p95_ms_per_bin(bins, records["wait_s"].to_numpy(dtype=float))
    else:
        waits = pd.Series(dtype=float)
    frame = gauges.join(waits.rename("wait_p95_ms"), how="outer")
    return frame.sort_index()


def p95_ms_per_bin(bins: np.ndarray, seconds: np.ndarray) -> pd.Series:
    """`spread(values).p95_ms` of each bin's values, NaN for a bin with none but NaN, indexed
    by bin: one sort for every bin, not a Python call per second of the run."""
    keys, inverse = np.unique(bins, return_inverse=True)
    known = ~np.isnan(seconds)
    order = np.lexsort((seconds[known], inverse[known]))
    groups, values = inverse[known][order], seconds[known][order] * 1000.0
    n = np.bincount(groups, minlength=len(keys))
    first = np.searchsorted(groups, np.arange(len(keys)))
    rank = np.maximum(np.ceil(0.95 * n - 1e-9).astype(int), 1) - 1
    p95 = np.full(len(keys), np.nan)
    has = n > 0
    p95[has] = values[first[has] + rank[has]]
    return pd.Series(p95, index=keys)
