"""Analysis of a results directory: the numbers behind summary.json, the charts and the report.

Reads a run only through poolbench.results.load_run, the one reader of a results directory
(docs/results.md); variants without samples are left out (the reader warns). Per experiment ×
variant × repeat it computes connection peaks and percentiles, what stays open when idle,
per-engine figures, churn, memory (PSS/USS, never summed RSS as "the" figure) and whether it
leaks, CPU, Locust throughput, latency and failures; then medians over repeats, the pool model against the measurement, before/after
comparisons with a bootstrap confidence interval, and a right-sizing estimate.

Conventions (documented for summary.json in docs/report.md):

- Phases are half-open intervals [start, end) from variant.json. "Load" figures use the load
  phase; "idle" figures use the median over the second half of the idle phase, once the pools
  have settled. "Steady" means the second half of the load phase (after the ramp).
- Percentiles are numpy's linear interpolation over the samples in the phase.
- The baseline of an experiment is its first variant (in run.json order); every other variant
  is compared to it. Nothing here knows what the answer "should" be.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from poolbench.errors import PoolbenchError
from poolbench.results import RunResult, VariantResult, load_run

SCHEMA = 1
POSTGRES_PARTS = ("postgres_backends", "postgres_postmaster", "postgres_other")
MEMORY_METRICS = {"pss": "mem_pss_bytes", "uss": "mem_uss_bytes", "rss": "mem_rss_bytes"}
# Memory that grows by more than this share of its level over the time observed counts as
# growing; below it the level is "flat". The leak test applies it only to windows in which the
# number of PostgreSQL backends and Locust's user count stay constant (see leak_test).
GROWTH_THRESHOLD_PCT = 5.0
MIN_LEAK_WINDOW_S = 4.0  # less time than this at a constant count: no verdict
LEAK_METHOD = (
    "memory growth inside windows where the number of PostgreSQL backends and Locust's user "
    "count stay constant (a line fitted per window, one common slope), separately for the load "
    f"and the idle phase; growing means more than {GROWTH_THRESHOLD_PCT:.0f} % of the level over "
    f"the time observed, which must be at least {MIN_LEAK_WINDOW_S:.0f} s"
)
HEADROOM = 1.25  # right-sizing: recommended = needed × HEADROOM, rounded up
BOOTSTRAP_RESAMPLES = 2000
BLOCK_SECONDS = 10  # moving-block bootstrap over per-second series (they are autocorrelated)

# Failure kinds, first match wins (case-insensitive, searched in Locust's error message).
FAILURE_KINDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "too_many_connections",
        re.compile(r"53300|too many clients|remaining connection slots|TooManyConnections", re.I),
    ),
    ("pool_timeout", re.compile(r"QueuePool limit|pool.{0,20}time ?out|PoolTimeout", re.I)),
    ("timeout", re.compile(r"timed? ?out|TimeoutError|ReadTimeout", re.I)),
    (
        "connection_error",
        re.compile(
            r"ConnectionRefused|ConnectionReset|RemoteDisconnected|ConnectionError|"
            r"connection (?:refused|reset|aborted)",
            re.I,
        ),
    ),
    ("http_5xx", re.compile(r"\b5\d\d\b")),
    ("http_4xx", re.compile(r"\b4\d\d\b")),
)
FAILURE_KIND_NAMES = (*(name for name, _ in FAILURE_KINDS), "other")
TOO_MANY_CLIENTS = FAILURE_KINDS[0][1]


# --- the runs to analyse ---------------------------------------------------------------------


@dataclass
class VariantRun:
    """One variant × repeat as read by poolbench.results, plus what analysis derives from it."""

    result: VariantResult
    series: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def experiment(self) -> str:
        return self.result.experiment

    @property
    def variant(self) -> str:
        return self.result.variant

    @property
    def repeat(self) -> int:
        return self.result.repeat

    @property
    def dir(self) -> Path:
        return self.result.path

    @property
    def meta(self) -> dict[str, Any]:
        return self.result.meta

    @property
    def samples(self) -> pd.DataFrame:
        return self.result.samples

    def locust(self, key: str) -> pd.DataFrame | None:
        """A Locust frame (stats, history, failures), or None when the file was absent/empty."""
        frame = self.result.locust.get(key)
        return None if frame is None or frame.empty else frame


def runs_to_analyse(run: RunResult) -> tuple[list[VariantRun], list[str]]:
    """The variants that have samples (the others are left out), and the warnings to show."""
    warnings = list(run.warnings)
    runs = []
    for result in run.variants:
        status = result.meta.get("status")
        if not result.has_samples:  # the reader has said so in a warning
            continue
        if status not in (None, "complete"):
            warnings.append(
                f"{result.key}: variant status is {status!r}; its numbers may cover only part of "
                "the run"
            )
        runs.append(VariantRun(result))
    if not runs:
        raise PoolbenchError(f"{run.path}: no variant with a samples.csv to analyse")
    return runs, warnings


# --- small numeric helpers -----------------------------------------------------------------


def _num(value: Any) -> float | None:
    """A finite float, or None."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _stat(values: pd.Series | np.ndarray, how: str) -> float | None:
    array = np.asarray(values, dtype=float)
    array = array[np.isfinite(array)]
    if array.size == 0:
        return None
    if how == "max":
        return float(array.max())
    if how == "mean":
        return float(array.mean())
    if how == "min":
        return float(array.min())
    if how == "median":
        return float(np.median(array))
    return float(np.percentile(array, float(how.lstrip("p"))))


def _window(series: pd.Series | pd.DataFrame, start: float | None, end: float | None):
    if start is None or end is None:
        return series.iloc[0:0]
    index = series.index.to_numpy()
    return series[(index >= start) & (index < end)]


def _second_half(phase: tuple[float, float] | None) -> tuple[float | None, float | None]:
    if phase is None:
        return None, None
    start, end = phase
    return start + (end - start) / 2, end


def _wide(frame: pd.DataFrame, column: str, index: pd.Index | None = None) -> pd.DataFrame:
    """Sum of value per (ts, column), one column per label; missing combinations are 0."""
    if frame.empty:
        return pd.DataFrame(index=index if index is not None else pd.Index([], name="ts"))
    wide = frame.groupby(["ts", column], sort=True)["value"].sum(min_count=1).unstack(column)
    if index is not None:
        if wide.index.isin(index).all():
            wide = wide.reindex(index)
        else:  # written at slightly different instants: match to the nearest snapshot
            wide = wide.reindex(index, method="nearest", tolerance=0.05)
    return wide.fillna(0.0)


def _per_ts_sum(frame: pd.DataFrame) -> pd.Series:
    """Sum of value per ts; NaN at a ts where any contributing value is unavailable."""
    if frame.empty:
        return pd.Series(dtype=float)
    total = frame.groupby("ts", sort=True)["value"].sum(min_count=1)
    if frame["value"].isna().any():
        incomplete = frame["value"].isna().groupby(frame["ts"], sort=True).any()
        total[incomplete.reindex(total.index, fill_value=False).to_numpy()] = np.nan
    return total


def _per_second(cumulative: pd.Series, rolling: pd.Series) -> pd.Series:
    """Requests in each second, from Locust's running total.

    Locust's own per-second "Requests/s" is an average over the last ~10 s, so consecutive
    values are nearly the same number; differences of the running total are the real count.
    Falls back to the rolling value when there is no total.
    """
    clean = cumulative.dropna()
    if len(clean) < 2:
        return rolling
    seconds = np.diff(clean.index.to_numpy(dtype=float))
    counts = np.diff(clean.to_numpy(dtype=float))
    keep = (seconds > 0) & (counts >= 0)  # a reset of the totals is not negative traffic
    return pd.Series(counts[keep] / seconds[keep], index=clean.index[1:][keep])


def _common_slope(values: pd.Series, window_id: np.ndarray) -> dict[str, Any]:
    """One slope for several windows: a line per window, all with the same slope.

    slope = Σ (t − t̄_w)(y − ȳ_w) / Σ (t − t̄_w)² over the samples of every window w with two
    or more samples, so a step between windows (a new backend, more users) never counts as
    growth: only change inside a window does.
    """
    clean = values.dropna()
    keep = np.isfinite(values.to_numpy(dtype=float))
    ids = window_id[keep]
    t = clean.index.to_numpy(dtype=float)
    y = clean.to_numpy(dtype=float)
    sxy = sxx = seconds = 0.0
    used = []
    windows = 0
    for w in np.unique(ids[ids >= 0]):
        mask = ids == w
        if mask.sum() < 2:
            continue
        tw, yw = t[mask], y[mask]
        sxy += float(((tw - tw.mean()) * (yw - yw.mean())).sum())
        sxx += float(((tw - tw.mean()) ** 2).sum())
        seconds += float(tw.max() - tw.min())
        used.append(yw)
        windows += 1
    if sxx <= 0:
        return {"seconds": 0.0, "windows": 0, "bytes_per_min": None, "pct_over_window": None}
    slope = sxy / sxx
    level = float(np.concatenate(used).mean())
    return {
        "seconds": seconds,
        "windows": windows,
        "bytes_per_min": slope * 60,
        "pct_over_window": slope * seconds / level * 100 if level else None,
    }


def _constant_windows(series: dict[str, Any], ts: np.ndarray, phase) -> np.ndarray:
    """For each timestamp, the id of its window of constant backends and users (−1: none).

    The counts come from the 1 Hz `processes` rows (PostgreSQL backends) and Locust's history
    (users, stamped at the end of the second they describe; zero outside the load phase). A
    window ends wherever either count changes, even if it changes back, and at the phase ends.
    """
    out = np.full(len(ts), -1)
    counts: pd.Series = series["backends_count"]
    if phase is None or counts.empty:
        return out
    start, end = phase
    ticks = counts.index.to_numpy(dtype=float)
    key = pd.DataFrame({"backends": counts.to_numpy(dtype=float)}, index=ticks)
    users = series.get("users")
    load = series["phases"].get("load")
    if users is not None and not users.dropna().empty and load is not None:
        u = users.dropna()
        at = np.searchsorted(u.index.to_numpy(dtype=float), ticks, side="right") - 1
        values = np.where(at >= 0, u.to_numpy(dtype=float)[np.clip(at, 0, None)], 0.0)
        in_load = (ticks >= load[0]) & (ticks < load[1])
        key["users"] = np.where(in_load, values, 0.0)
    inside = (ticks >= start) & (ticks < end)
    key = key[inside]
    if key.empty:
        return out
    changed = key.ne(key.shift()).any(axis=1) | key.isna().any(axis=1)
    ids = np.cumsum(changed.to_numpy())
    ids[key.isna().any(axis=1).to_numpy()] = -1  # an unknown count belongs to no window
    tick_times = key.index.to_numpy(dtype=float)
    at = np.searchsorted(tick_times, ts, side="right") - 1
    ok = (at >= 0) & (ts >= start) & (ts < end)
    out[ok] = ids[at[ok]]
    return out


def leak_test(series: dict[str, Any]) -> dict[str, Any]:
    """Does memory grow while the number of processes and the load stay the same?

    Under a ramp PostgreSQL's memory rises with every backend it opens and the app's with every
    user: a fixed cost per connection or per concurrent request, not a leak. A leak is growth at
    a constant count, so memory is only compared with itself inside windows where neither the
    number of backends nor the user count changed, in the load phase (a leak driven by work)
    and in the idle phase (one driven by time). `load_change` records how memory and backends
    moved over the whole load phase, to show what the ramp did.
    """
    phases = series["phases"]
    out: dict[str, Any] = {"method": LEAK_METHOD}
    for key in ("postgres_pss", "app_uss"):
        values: pd.Series = series[key]
        ts = values.index.to_numpy(dtype=float)
        entry: dict[str, Any] = {}
        for phase in ("load", "idle"):
            result = _common_slope(values, _constant_windows(series, ts, phases.get(phase)))
            pct = result["pct_over_window"]
            result["grows"] = (
                None
                if pct is None or result["seconds"] < MIN_LEAK_WINDOW_S
                else bool(pct > GROWTH_THRESHOLD_PCT)
            )
            entry[phase] = result
        verdicts = [entry[p]["grows"] for p in ("load", "idle") if entry[p]["grows"] is not None]
        entry["grows"] = any(verdicts) if verdicts else None
        out[key] = entry
    out["grows"] = (
        None
        if out["postgres_pss"]["grows"] is None and out["app_uss"]["grows"] is None
        else bool(out["postgres_pss"]["grows"] or out["app_uss"]["grows"])
    )

    change: dict[str, Any] = {}
    load = phases.get("load")
    backends_pss = _window(series["backends_pss"], *load).dropna() if load else pd.Series()
    counts = series["backends_count"]
    if len(backends_pss) >= 2:
        first, last = backends_pss.index[0], backends_pss.index[-1]
        pg = series["postgres_pss"]
        for name, at in (("start", first), ("end", last)):
            n = _num(counts.asof(at)) if not counts.empty else None
            change[f"backends_{name}"] = n
            change[f"postgres_pss_{name}_bytes"] = _num(pg.get(at))
            change[f"pss_per_backend_{name}_bytes"] = float(backends_pss[at]) / n if n else None
    app = _window(series["app_uss"], *load).dropna() if load else pd.Series()
    if len(app) >= 2:
        change["app_uss_start_bytes"] = float(app.iloc[0])
        change["app_uss_end_bytes"] = float(app.iloc[-1])
    out["load_change"] = change
    return out


def _slope_per_s(series: pd.Series) -> float | None:
    clean = series.dropna()
    if len(clean) < 3:
        return None
    x = clean.index.to_numpy(dtype=float)
    if x.max() - x.min() <= 0:
        return None
    slope, _ = np.polyfit(x - x[0], clean.to_numpy(dtype=float), 1)
    return float(slope)


# --- per variant × repeat ------------------------------------------------------------------


def _phases(meta: dict[str, Any], samples: pd.DataFrame) -> dict[str, tuple[float, float]]:
    phases: dict[str, tuple[float, float]] = {}
    for phase in meta.get("phases") or []:
        if not isinstance(phase, dict):
            continue
        start, end = _num(phase.get("start")), _num(phase.get("end"))
        if phase.get("name") and start is not None and end is not None and end > start:
            phases[str(phase["name"])] = (start, end)
    if "load" not in phases and not samples.empty:
        phases["load"] = (float(samples["ts"].min()), float(samples["ts"].max()) + 1e-6)
    return phases


def classify_failure(message: str) -> str:
    """The kind of a Locust failure message (see FAILURE_KINDS)."""
    for name, pattern in FAILURE_KINDS:
        if pattern.search(message or ""):
            return name
    return "other"


LOG_RECORD_START = re.compile(r"^(?:CRITICAL|ERROR|WARNING|INFO|DEBUG)\b")


def _count_too_many_clients(path: Path | None) -> int | None:
    """Failed requests the app logged as "too many clients" (SQLSTATE 53300).

    One refused request logs one record (uvicorn's "ERROR: Exception in ASGI application")
    whose traceback names the error several times (driver, adapter, SQLAlchemy wrapper),
    so records are counted, not lines. Lines without a level prefix belong to the record
    above them; a log with no prefixes at all is counted line by line.
    """
    if path is None:
        return None
    count, in_record, matched = 0, False, False
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if LOG_RECORD_START.match(line) or not in_record:
                    count += matched
                    in_record, matched = bool(LOG_RECORD_START.match(line)), False
                matched = matched or bool(TOO_MANY_CLIENTS.search(line))
    except OSError:
        return None
    return count + matched


def _build_series(run: VariantRun, phases: dict[str, tuple[float, float]]) -> dict[str, Any]:
    samples = run.samples
    by_metric = {name: frame for name, frame in samples.groupby("metric", sort=False)}
    empty = samples.iloc[0:0]
    conn = by_metric.get("connections", empty)
    total_rows = by_metric.get("connections_total", empty)
    if not total_rows.empty:
        total = total_rows.groupby("ts", sort=True)["value"].sum(min_count=1)
        index = total.index
    else:
        index = pd.Index(np.sort(conn["ts"].unique()), name="ts")
        total = None
    by_engine = _wide(conn, "application_name", index)
    by_state = _wide(conn, "state", index)
    if total is None:
        total = by_engine.sum(axis=1) if not by_engine.empty else pd.Series(dtype=float)
    active = by_state["active"] if "active" in by_state.columns else pd.Series(0.0, index=index)
    active_by_engine = _wide(conn[conn["state"] == "active"], "application_name", index)
    pool_rows = by_metric.get("app_pool_checked_out", empty)

    def component_memory(metric: str, components: tuple[str, ...]) -> pd.Series:
        rows = by_metric.get(metric, empty)
        rows = rows[rows["component"].isin(components)]
        return _per_ts_sum(rows)

    def postgres_memory(metric: str) -> pd.Series:
        rows = by_metric.get(metric, empty)
        parts = rows[rows["component"].isin(POSTGRES_PARTS)]
        if parts.empty:  # a collector that reports PostgreSQL as one component
            parts = rows[rows["component"] == "postgres"]
        return _per_ts_sum(parts)

    series: dict[str, Any] = {
        "phases": phases,
        "t0": min((start for start, _ in phases.values()), default=float(samples["ts"].min())),
        "total": total,
        "by_engine": by_engine,
        "by_state": by_state,
        "active": active,
        "active_by_engine": active_by_engine,
        # the app's own view (/debug/pools, one worker): connections checked out of each pool
        "checked_out_by_engine": _wide(pool_rows, "application_name"),
        "checked_out": _per_ts_sum(pool_rows),
        "max_connections": by_metric.get("max_connections", empty).groupby("ts")["value"].max(),
        "slots_left": by_metric.get("slots_left", empty).groupby("ts")["value"].min(),
    }
    for key, metric in MEMORY_METRICS.items():
        series[f"postgres_{key}"] = postgres_memory(metric)
        series[f"app_{key}"] = component_memory(metric, ("app",))
    processes = by_metric.get("processes", empty)
    series["postgres_backends_processes"] = _per_ts_sum(
        processes[processes["component"] == "postgres_backends"]
    )
    series["backends_pss"] = component_memory("mem_pss_bytes", ("postgres_backends",))
    # backends at every `processes` tick, 0 when none (the collector writes no row for them)
    ticks = np.sort(processes["ts"].unique())
    series["backends_count"] = (
        processes[processes["component"] == "postgres_backends"]
        .groupby("ts")["value"]
        .sum(min_count=1)
        .reindex(ticks, fill_value=0.0)
    )
    # what one backend holds: flat under a ramp (a fixed cost per connection), rising on a leak
    backends = series["postgres_backends_processes"]
    if not backends.empty and not series["backends_pss"].empty:
        n = backends.reindex(series["backends_pss"].index, method="nearest", tolerance=0.05)
        series["pss_per_backend"] = (series["backends_pss"] / n.where(n > 0)).dropna()
    else:
        series["pss_per_backend"] = pd.Series(dtype=float)
    for name in (
        "sessions_new",
        "sessions_abandoned",
        "sessions_fatal",
        "xact_commit",
        "xact_rollback",
    ):
        series[name] = by_metric.get(name, empty).groupby("ts", sort=True)["value"].sum(min_count=1)
    cpu = by_metric.get("cpu_percent", empty)
    series["cpu"] = _wide(cpu, "component") if not cpu.empty else pd.DataFrame()
    gaps = by_metric.get("gap", empty)
    series["gap_seconds"] = float(gaps["value"].sum()) if not gaps.empty else 0.0

    history = run.locust("history")
    if history is not None and "Name" in history.columns and "Timestamp" in history.columns:
        agg = history[history["Name"].astype(str) == "Aggregated"]
        agg = agg.assign(Timestamp=pd.to_numeric(agg["Timestamp"], errors="coerce"))
        agg = agg.dropna(subset=["Timestamp"]).drop_duplicates("Timestamp", keep="last")
        agg = agg.set_index("Timestamp").sort_index()

        def column(name: str) -> pd.Series:
            if name not in agg.columns:
                return pd.Series(dtype=float)
            return pd.to_numeric(agg[name], errors="coerce")

        series["users"] = column("User Count")
        series["rps"] = _per_second(column("Total Request Count"), column("Requests/s"))
        series["fps"] = column("Failures/s")
        for pct in ("50", "95", "99"):
            series[f"latency_p{pct}"] = column(f"{pct}%")
    return series


def _locust_metrics(run: VariantRun, series: dict[str, Any], load) -> dict[str, Any]:
    out: dict[str, Any] = {
        "requests": None,
        "failures": None,
        "requests_per_s": None,
        "failures_per_s": None,
        "failure_ratio": None,
        "latency_ms": {"p50": None, "p95": None, "p99": None, "mean": None, "max": None},
        "failures_by_kind": dict.fromkeys(FAILURE_KIND_NAMES, 0),
        "steady_requests_per_s": None,
        "too_many_clients_in_app_log": _count_too_many_clients(run.result.app_log),
    }
    stats = run.locust("stats")
    if stats is not None and "Name" in stats.columns:
        agg = stats[stats["Name"].astype(str) == "Aggregated"]
        if not agg.empty:
            row = agg.iloc[-1]
            get = lambda name: _num(row.get(name))  # noqa: E731
            out["requests"] = get("Request Count")
            out["failures"] = get("Failure Count")
            out["requests_per_s"] = get("Requests/s")
            out["failures_per_s"] = get("Failures/s")
            if out["requests"]:
                out["failure_ratio"] = (out["failures"] or 0.0) / out["requests"]
            out["latency_ms"] = {
                "p50": get("50%") if get("50%") is not None else get("Median Response Time"),
                "p95": get("95%"),
                "p99": get("99%"),
                "mean": get("Average Response Time"),
                "max": get("Max Response Time"),
            }
    failures = run.locust("failures")
    if failures is not None and {"Error", "Occurrences"} <= set(failures.columns):
        for message, count in zip(
            failures["Error"].astype(str), failures["Occurrences"], strict=False
        ):
            out["failures_by_kind"][classify_failure(message)] += int(_num(count) or 0)
    steady = steady_rps(series, load)
    out["steady_requests_per_s"] = _stat(steady, "mean") if steady is not None else None
    return out


def steady_rps(series: dict[str, Any], load: tuple[float, float] | None) -> np.ndarray | None:
    """Per-second requests/s at full load: the second half of the load phase, at the maximum
    user count (falling back to all seconds at that count, then to the whole load phase, when
    fewer than 5 seconds remain)."""
    return _steady(series, "rps", load)


def _steady(series: dict[str, Any], key: str, load) -> np.ndarray | None:
    values = series.get(key)
    if values is None or values.empty or load is None:
        return None
    # Locust stamps a row at the end of the second it describes: (start, end]
    start, end = load
    index = values.index.to_numpy(dtype=float)
    window = values[(index > start) & (index <= end + 1)]
    users = series.get("users")
    if users is not None and not users.empty:
        u = users.reindex(window.index)
        if u.notna().any():
            at_max = window[(u >= u.max()).to_numpy()]
            late = at_max[at_max.index.to_numpy(dtype=float) > start + (end - start) / 2]
            if len(late) >= 5:
                window = late
            elif len(at_max) >= 5:
                window = at_max
    array = window.to_numpy(dtype=float)
    array = array[np.isfinite(array)]
    return array if array.size else None


def analyse_variant(run: VariantRun) -> dict[str, Any]:
    """Every number for one variant × repeat; also fills run.series for the charts."""
    phases = _phases(run.meta, run.samples)
    series = _build_series(run, phases)
    run.series = series
    load = phases.get("load")
    idle = phases.get("idle")
    idle_half = _second_half(idle)
    steady = _second_half(load)
    total = series["total"]
    load_total = _window(total, *load) if load else total.iloc[0:0]
    idle_total = _window(total, *idle_half)

    connections = {
        "load_peak": _stat(load_total, "max"),
        "load_p95": _stat(load_total, "p95"),
        "load_mean": _stat(load_total, "mean"),
        "idle": _stat(idle_total, "median"),
        "run_peak": _stat(total, "max"),
        "samples_in_load": len(load_total),
        "max_connections": _stat(series["max_connections"], "max"),
        "slots_left_min": _stat(
            _window(series["slots_left"], *load) if load else series["slots_left"], "min"
        ),
    }

    # per engine (application_name), "" shown as "(no name)"
    by_engine: pd.DataFrame = series["by_engine"]
    before_idle = (min(s for s, _ in phases.values()), idle[0]) if idle else load
    per_engine: dict[str, dict[str, Any]] = {}
    active_by_engine: pd.DataFrame = series["active_by_engine"]
    checked_out: pd.DataFrame = series["checked_out_by_engine"]
    for name in by_engine.columns:
        col = by_engine[name]
        active_col = active_by_engine[name] if name in active_by_engine.columns else None
        out_col = checked_out[name] if name in checked_out.columns else None
        per_engine[str(name) or "(no name)"] = {
            "load_peak": _stat(_window(col, *load), "max") if load else None,
            "load_mean": _stat(_window(col, *load), "mean") if load else None,
            "peak_before_idle": _stat(_window(col, *before_idle), "max") if before_idle else None,
            "idle": _stat(_window(col, *idle_half), "median"),
            "run_peak": _stat(col, "max"),
            "active_max": _stat(_window(active_col, *load), "max")
            if load and active_col is not None
            else 0.0,
            "checked_out_max": _stat(_window(out_col, *load), "max")
            if load and out_col is not None
            else None,
        }

    states: dict[str, Any] = {"load_mean": {}, "idle": {}, "load_peak": {}}
    for state in series["by_state"].columns:
        col = series["by_state"][state]
        label = str(state) or "(none)"
        states["load_mean"][label] = _stat(_window(col, *load), "mean") if load else None
        states["load_peak"][label] = _stat(_window(col, *load), "max") if load else None
        states["idle"][label] = _stat(_window(col, *idle_half), "median")

    load_active = _window(series["active"], *load) if load else series["active"]
    active = {
        "p50": _stat(load_active, "p50"),
        "p99": _stat(load_active, "p99"),
        "max": _stat(load_active, "max"),
        "mean": _stat(load_active, "mean"),
    }
    load_out = _window(series["checked_out"], *load) if load else series["checked_out"]
    checked_out_stats = {
        "p50": _stat(load_out, "p50"),
        "p99": _stat(load_out, "p99"),
        "max": _stat(load_out, "max"),
        "mean": _stat(load_out, "mean"),
    }

    load_s = (load[1] - load[0]) if load else None
    churn: dict[str, Any] = {}
    for name in ("sessions_new", "sessions_abandoned", "sessions_fatal"):
        values = series[name]
        churn[f"{name}_total"] = float(values.sum()) if not values.empty else None
    new_in_load = _window(series["sessions_new"], *load) if load else series["sessions_new"]
    churn["sessions_new_per_s_load"] = (
        float(new_in_load.sum()) / load_s if load_s and not series["sessions_new"].empty else None
    )
    new_in_idle = (
        _window(series["sessions_new"], *idle) if idle else series["sessions_new"].iloc[0:0]
    )
    churn["sessions_new_per_s_idle"] = (
        float(new_in_idle.sum()) / (idle[1] - idle[0])
        if idle and not series["sessions_new"].empty
        else None
    )

    memory: dict[str, Any] = {}
    for owner in ("postgres", "app"):
        for key in MEMORY_METRICS:
            values = series[f"{owner}_{key}"]
            memory[f"{owner}_{key}_bytes"] = {
                "load_peak": _stat(_window(values, *load), "max") if load else None,
                "load_mean": _stat(_window(values, *load), "mean") if load else None,
                "idle": _stat(_window(values, *idle_half), "median"),
            }
    processes_idle = _stat(_window(series["postgres_backends_processes"], *idle_half), "median")
    backends_pss_idle = _stat(_window(series["backends_pss"], *idle_half), "median")
    memory["postgres_backends_idle"] = processes_idle
    memory["pss_per_backend_idle_bytes"] = (
        backends_pss_idle / processes_idle if processes_idle and backends_pss_idle else None
    )
    # how memory moved over the steady window, whatever the cause (new backends included)
    growth: dict[str, Any] = {"window": "steady (second half of the load phase), all causes"}
    for key, name in (
        ("postgres_pss", "postgres_pss"),
        ("postgres_uss", "postgres_uss"),
        ("app_uss", "app_uss"),
        ("app_rss", "app_rss"),
    ):
        window = _window(series[name], *steady) if steady[0] is not None else series[name].iloc[0:0]
        slope = _slope_per_s(window)
        level = _stat(window, "mean")
        duration = (steady[1] - steady[0]) if steady[0] is not None else None
        pct = slope * duration / level * 100 if slope is not None and level and duration else None
        growth[key] = {
            "bytes_per_min": slope * 60 if slope is not None else None,
            "pct_over_window": pct,
            "grows": None if pct is None else bool(pct > GROWTH_THRESHOLD_PCT),
        }
    memory["growth"] = growth
    memory["leak"] = leak_test(series)

    cpu: dict[str, Any] = {}
    cpu_frame: pd.DataFrame = series["cpu"]
    if not cpu_frame.empty and load:
        window = _window(cpu_frame, *load)
        for component in window.columns:
            cpu[str(component) or "(none)"] = _stat(window[component], "mean")
        parts = [c for c in POSTGRES_PARTS if c in window.columns]
        if parts and "postgres" not in cpu:
            cpu["postgres"] = _stat(window[parts].sum(axis=1), "mean")

    metrics = {
        "experiment": run.experiment,
        "variant": run.variant,
        "repeat": run.repeat,
        "dir": str(run.meta.get("dir") or run.dir.name),
        "status": run.meta.get("status"),
        "workers": int(_num(run.meta.get("workers")) or 1),
        "phases_s": {name: end - start for name, (start, end) in phases.items()},
        "connections": connections,
        "per_engine": per_engine,
        "states": states,
        "active": active,
        "checked_out": checked_out_stats,
        "churn": churn,
        "memory": memory,
        "cpu_percent": cpu,
        "locust": _locust_metrics(run, series, load),
        "collector_gap_s": series["gap_seconds"],
        "engine_counts": _engine_counts(run, per_engine),
    }
    metrics["model"] = pool_model(run.meta, metrics)
    run.metrics = metrics
    return metrics


def _census_sites(census: Any) -> list[dict[str, Any]] | None:
    if isinstance(census, dict):
        for key in ("sites", "engines", "census"):
            if isinstance(census.get(key), list):
                census = census[key]
                break
    if not isinstance(census, list):
        return None
    return [site for site in census if isinstance(site, dict)]


def _engine_counts(run: VariantRun, per_engine: dict[str, dict[str, Any]]) -> dict[str, Any]:
    listed = [e for e in run.meta.get("engines") or [] if isinstance(e, dict)]
    observed = sorted(name for name, e in per_engine.items() if (e["run_peak"] or 0) > 0)
    holding_idle = sorted(name for name, e in per_engine.items() if (e["idle"] or 0) >= 1)
    sites = _census_sites(run.result.census)
    census = None
    if sites is not None:
        by_scope: dict[str, int] = {}
        for site in sites:
            scope = str(site.get("scope") or "unknown")
            by_scope[scope] = by_scope.get(scope, 0) + 1
        census = {"sites": len(sites), "by_scope": by_scope, "list": sites}
    return {
        "listed": len(listed),
        "observed": len(observed),
        "observed_names": observed,
        "holding_idle": len(holding_idle),
        "holding_idle_names": holding_idle,
        "census": census,
    }


# --- the pool model ------------------------------------------------------------------------


def pool_model(meta: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """Predicted ceiling and idle connections from the pool settings, beside the measurement.

    ceiling = workers × Σ (pool_size + max_overflow) over the engines;
    idle    = Σ min(workers × pool_size, peak use of the engine before the idle phase),
    which equals workers × Σ min(pool_size, per-worker peak) when workers share the load evenly.
    Engines come from variant.json `engines`; when that is empty, from the application names
    observed, with the app's pool settings.
    """
    workers = metrics["workers"]
    per_engine = metrics["per_engine"]
    listed = [e for e in meta.get("engines") or [] if isinstance(e, dict) and e.get("name")]
    app = meta.get("app") if isinstance(meta.get("app"), dict) else {}
    if listed:
        source = "variant.json"
        engines = [
            (str(e["name"]), _num(e.get("pool_size")), _num(e.get("max_overflow")) or 0.0)
            for e in listed
        ]
    else:
        source = "observed"
        engines = [
            (name, _num(app.get("pool_size")), _num(app.get("max_overflow")) or 0.0)
            for name, e in per_engine.items()
            if (e["run_peak"] or 0) > 0
        ]
    rows = []
    for name, pool_size, max_overflow in engines:
        measured = per_engine.get(name, {})
        peak_use = measured.get("peak_before_idle") or 0.0
        ceiling = workers * (pool_size + max_overflow) if pool_size is not None else None
        idle = min(workers * pool_size, peak_use) if pool_size is not None else None
        per_worker = pool_size + max_overflow if pool_size is not None else None
        active_max = measured.get("active_max") or 0.0
        out_max = measured.get("checked_out_max")
        saturated = per_worker is not None and (
            active_max >= workers * per_worker or (out_max is not None and out_max >= per_worker)
        )
        rows.append(
            {
                "name": name,
                "pool_size": pool_size,
                "max_overflow": max_overflow,
                "predicted_ceiling": ceiling,
                "predicted_idle": idle,
                "measured_peak": measured.get("load_peak") or 0.0,
                "measured_idle": measured.get("idle") or 0.0,
                "active_max": active_max,
                "checked_out_max": out_max,
                "saturated": bool(saturated and per_worker > 0),
            }
        )
    known = {row["name"] for row in rows}
    unlisted = {
        name: e for name, e in per_engine.items() if name not in known and (e["run_peak"] or 0) > 0
    }
    complete = bool(rows) and all(r["predicted_ceiling"] is not None for r in rows)
    ceiling = sum(r["predicted_ceiling"] for r in rows) if complete else None
    idle = sum(r["predicted_idle"] for r in rows) if complete else None
    conn = metrics["connections"]
    model = {
        "source": source,
        "workers": workers,
        "engines": rows,
        "unlisted": {
            name: {"run_peak": e["run_peak"], "idle": e["idle"]} for name, e in unlisted.items()
        },
        "predicted_ceiling": ceiling,
        "predicted_idle": idle,
        "measured_peak": conn["load_peak"],
        "measured_idle": conn["idle"],
    }
    model["flags"] = _model_flags(model, metrics)
    return model


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def _model_flags(model: dict[str, Any], metrics: dict[str, Any]) -> list[dict[str, str]]:
    """Mismatches between the model and the measurement, each explained in words."""
    flags: list[dict[str, str]] = []

    def flag(level: str, code: str, message: str) -> None:
        flags.append({"level": level, "code": code, "message": message})

    if not model["engines"]:
        flag(
            "info", "no_engines", "No engines listed and no connections observed: nothing to model."
        )
        return flags
    if model["source"] == "observed":
        flag(
            "info",
            "engines_observed",
            "variant.json lists no engines; the model uses the application names seen in "
            "pg_stat_activity and the app's pool settings, so engines that never connected are "
            "missing from it.",
        )
    if model["predicted_ceiling"] is None:
        flag("info", "no_pool_settings", "Pool settings are unknown, so no prediction is made.")
        return flags
    workers = model["workers"]
    for row in model["engines"]:
        own_ceiling = row["predicted_ceiling"]
        if row["measured_peak"] > own_ceiling:
            flag(
                "warning",
                "engine_above_ceiling",
                f"{row['name']} held {_fmt(row['measured_peak'])} connections, above its "
                f"{workers} × ({_fmt(row['pool_size'])} + {_fmt(row['max_overflow'])}) = "
                f"{_fmt(own_ceiling)}: more processes use this name than the model counts "
                "(more workers, or several engines share the name).",
            )
        if row["saturated"]:
            used = (
                f"{_fmt(row['checked_out_max'])} checked out"
                if row["checked_out_max"] is not None
                and row["checked_out_max"] >= row["pool_size"] + row["max_overflow"]
                else f"{_fmt(row['active_max'])} active"
            )
            flag(
                "warning",
                "engine_saturated",
                f"{row['name']} used all its connections ({used}; pool_size "
                f"{_fmt(row['pool_size'])} + max_overflow {_fmt(row['max_overflow'])} per worker): "
                "requests waited for a connection, which adds latency, and the demand seen is "
                "capped at the pool size.",
            )
        if row["measured_peak"] == 0 and row["measured_idle"] == 0:
            flag(
                "info",
                "engine_unused",
                f"{row['name']} opened no connection during the load: pools open lazily, and "
                "nothing in this load used it.",
            )
    peak, ceiling = model["measured_peak"], model["predicted_ceiling"]
    unlisted = model["unlisted"]
    if peak is not None and peak > ceiling:
        extra = ", ".join(f"{n} {_fmt(e['run_peak'])}" for n, e in unlisted.items()) or "none seen"
        flag(
            "warning",
            "above_ceiling",
            f"Measured peak {_fmt(peak)} exceeds the predicted ceiling {_fmt(ceiling)}: "
            f"connections came from outside the modelled pools (unlisted application names: {extra}).",
        )
    elif peak is not None and peak < 0.9 * ceiling:
        flag(
            "info",
            "below_ceiling",
            f"The load did not fill the pools: peak {_fmt(peak)} of a possible {_fmt(ceiling)}. "
            "The ceiling is what a heavier burst would reach.",
        )
    elif peak is not None:
        flag(
            "info",
            "at_ceiling",
            f"Peak {_fmt(peak)} reached the predicted ceiling {_fmt(ceiling)}: the pools were "
            "exhausted, so requests queued for a connection.",
        )
    if unlisted and not (peak is not None and peak > ceiling):
        flag(
            "info",
            "unlisted",
            "Connections from application names outside the model: "
            + ", ".join(f"{n} (peak {_fmt(e['run_peak'])})" for n, e in unlisted.items())
            + ". Short-lived engines (e.g. NullPool health checks) open and close them.",
        )
    measured_idle, predicted_idle = model["measured_idle"], model["predicted_idle"]
    if measured_idle is None:
        flag(
            "info", "idle_not_measured", "No idle phase was sampled: idle connections not measured."
        )
    elif abs(measured_idle - predicted_idle) > max(1.0, 0.1 * predicted_idle):
        if measured_idle < predicted_idle:
            why = (
                "pools closed connections they would normally keep (pool_recycle, failed "
                "pre-ping, an engine disposed) or the load never opened them all at once"
            )
        else:
            iit = (metrics["states"]["idle"] or {}).get("idle in transaction") or 0
            why = (
                f"{_fmt(iit)} connection(s) sit 'idle in transaction' — sessions not returned to "
                "the pool"
                if iit >= 1
                else "connections outside the modelled pools stayed open, or checked-out "
                "connections were never returned"
            )
        flag(
            "warning",
            "idle_mismatch",
            f"Idle connections {_fmt(measured_idle)} differ from the predicted "
            f"{_fmt(predicted_idle)} (each pool keeps min(pool_size, connections it opened)): {why}.",
        )
    else:
        flag(
            "info",
            "idle_matches",
            f"Idle connections {_fmt(measured_idle)} match the prediction {_fmt(predicted_idle)}: "
            "each pool keeps up to pool_size connections open after a burst (there is no idle "
            "reaper).",
        )
    return flags


# --- statistics ----------------------------------------------------------------------------


def bootstrap_difference(
    a: np.ndarray | list[float],
    b: np.ndarray | list[float],
    *,
    block: int = 1,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> dict[str, Any] | None:
    """Relative difference of means (b − a) / a in %, with a 95 % bootstrap CI and p-value.

    With block > 1 it is a circular block bootstrap (for autocorrelated per-second series).
    The two-sided p-value is 2 × the share of resampled differences on the far side of zero.
    Significant when the CI excludes zero. None when either side is empty or mean(a) is 0.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0 or a.mean() == 0:
        return None
    rng = np.random.default_rng(seed)

    def resample(x: np.ndarray) -> np.ndarray:
        # at least two blocks per resample: a short series gets an honest, wide interval
        size = max(1, min(block, x.size // 2))
        if size == 1:
            idx = rng.integers(0, x.size, size=(resamples, x.size))
            return x[idx].mean(axis=1)
        # circular blocks: every value is equally likely to be drawn, so the resampled means
        # centre on the sample mean (plain moving blocks under-draw the ends)
        wrapped = np.concatenate([x, x[: size - 1]])
        cumulative = np.concatenate([[0.0], np.cumsum(wrapped)])
        block_means = (cumulative[size:] - cumulative[:-size]) / size
        count = math.ceil(x.size / size)
        idx = rng.integers(0, block_means.size, size=(resamples, count))
        return block_means[idx].mean(axis=1)

    ma, mb = resample(a), resample(b)
    diffs = (mb - ma) / ma * 100
    delta = (b.mean() - a.mean()) / a.mean() * 100
    low, high = np.percentile(diffs, [2.5, 97.5])
    p = 2 * min((diffs <= 0).mean(), (diffs >= 0).mean())
    return {
        "delta_pct": float(delta),
        "ci95_pct": [float(low), float(high)],
        "p_value": float(min(1.0, p)),
        "n": [int(a.size), int(b.size)],
        "block": int(max(1, block)),
        "significant": bool(low > 0 or high < 0),
    }


# --- aggregation over repeats and variants -------------------------------------------------


def median_tree(items: list[Any]) -> Any:
    """Median of numeric leaves across same-shaped dicts; other leaves kept when all equal."""
    if not items:
        return None
    first = items[0]
    if isinstance(first, dict):
        keys: list[str] = []
        for item in items:
            for key in item if isinstance(item, dict) else ():
                if key not in keys:
                    keys.append(key)
        return {
            key: median_tree([i[key] for i in items if isinstance(i, dict) and key in i])
            for key in keys
        }
    if isinstance(first, list):
        if all(i == first for i in items):
            return first
        if all(isinstance(i, list) and len(i) == len(first) for i in items) and all(
            isinstance(e, dict) for e in first
        ):
            return [median_tree([i[k] for i in items]) for k in range(len(first))]
        return first
    if isinstance(first, bool) or first is None:
        values = [i for i in items if i is not None]
        if not values:
            return None
        if all(isinstance(v, bool) for v in values):
            return any(values)  # "grows" in any repeat
    numbers = [i for i in items if isinstance(i, int | float) and not isinstance(i, bool)]
    if numbers and len(numbers) == len([i for i in items if i is not None]):
        median = float(np.median(numbers))
        if all(isinstance(i, int) for i in numbers) and median.is_integer():
            return int(median)
        return median
    return first if all(i == first for i in items) else None


COMPARED: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("peak_connections", ("connections", "load_peak"), "lower"),
    ("p95_connections", ("connections", "load_p95"), "lower"),
    ("idle_connections", ("connections", "idle"), "lower"),
    ("sessions_new_per_s", ("churn", "sessions_new_per_s_load"), "lower"),
    ("postgres_pss_peak_bytes", ("memory", "postgres_pss_bytes", "load_peak"), "lower"),
    ("postgres_pss_idle_bytes", ("memory", "postgres_pss_bytes", "idle"), "lower"),
    ("postgres_uss_idle_bytes", ("memory", "postgres_uss_bytes", "idle"), "lower"),
    ("app_uss_peak_bytes", ("memory", "app_uss_bytes", "load_peak"), "lower"),
    ("app_rss_peak_bytes", ("memory", "app_rss_bytes", "load_peak"), "lower"),
    # mean per-second throughput at full load (the quantity tested); else Locust's total rate
    ("requests_per_s", ("locust", "steady_requests_per_s"), "higher"),
    ("latency_p95_ms", ("locust", "latency_ms", "p95"), "lower"),
    ("latency_p99_ms", ("locust", "latency_ms", "p99"), "lower"),
    ("failures", ("locust", "failures"), "lower"),
)


def dig(tree: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(tree, dict):
            return None
        tree = tree.get(key)
    return tree


def _pct(before: float | None, after: float | None) -> float | None:
    if before is None or after is None or before == 0:
        return None
    return (after - before) / before * 100


def _test_inputs(runs: list[VariantRun], key: str) -> tuple[np.ndarray, int]:
    """Per-repeat means when there are ≥ 3 repeats, else pooled per-second values (blocked)."""
    per_repeat = []
    pooled = []
    for run in runs:
        values = _steady(run.series, key, run.series["phases"].get("load"))
        if values is not None:
            per_repeat.append(values.mean())
            pooled.append(values)
    if len(per_repeat) >= 3:
        return np.array(per_repeat), 1
    return (np.concatenate(pooled) if pooled else np.array([])), BLOCK_SECONDS


def compare(
    baseline: dict, other: dict, base_runs: list[VariantRun], other_runs: list[VariantRun]
) -> dict:
    out: dict[str, Any] = {"baseline": baseline["variant"], "variant": other["variant"]}
    for name, path, better in COMPARED:
        b, a = _num(dig(baseline["metrics"], path)), _num(dig(other["metrics"], path))
        if name == "requests_per_s" and (a is None or b is None):
            b = _num(dig(baseline["metrics"], ("locust", "requests_per_s")))
            a = _num(dig(other["metrics"], ("locust", "requests_per_s")))
        out[name] = {
            "baseline": b,
            "variant": a,
            "delta": None if a is None or b is None else a - b,
            "delta_pct": _pct(b, a),
            "better": better,
        }
    for name, key in (("requests_per_s", "rps"), ("latency_p95_ms", "latency_p95")):
        xa, block_a = _test_inputs(base_runs, key)
        xb, block_b = _test_inputs(other_runs, key)
        test = bootstrap_difference(xa, xb, block=min(block_a, block_b))
        if test is not None:
            test["method"] = (
                "bootstrap over per-repeat means"
                if min(block_a, block_b) == 1
                else f"circular block bootstrap ({BLOCK_SECONDS} s blocks) over per-second values "
                "at full load"
            )
        out[name]["test"] = test
    return out


def right_sizing(variants: list[dict[str, Any]], cpu_count: int | None) -> dict[str, Any]:
    """The pool this load needs: active-connection percentiles and Little's law, with headroom.

    hold time W = mean active connections / requests per second (Little's law read backwards:
    the average time a request keeps a connection busy). Demand at the busiest seconds is
    L = p95 requests/s × W. Needed = max(p99 active, L); recommended = ceil(needed × 1.25).
    """
    rows = []
    for variant in variants:
        m = variant["metrics"]
        active = m["active"]
        rps = _num(dig(m, ("locust", "steady_requests_per_s"))) or _num(
            dig(m, ("locust", "requests_per_s"))
        )
        rps_p95 = variant.get("rps_p95") or rps
        hold = active["mean"] / rps if active["mean"] is not None and rps else None
        little = rps_p95 * hold if hold is not None and rps_p95 else None
        out = m.get("checked_out") or {}
        # the app's view is one worker's; scale it to all of them
        out_p99 = out["p99"] * m["workers"] if out.get("p99") is not None else None
        needed = max(v for v in (active["p99"], little, out_p99, 0.0) if v is not None)
        ceiling = m["model"]["predicted_ceiling"]
        saturated = bool(
            (ceiling and active["max"] is not None and active["max"] >= 0.95 * ceiling)
            or any(row.get("saturated") for row in m["model"]["engines"])
            or (m["locust"]["failures_by_kind"].get("pool_timeout") or 0) > 0
            or (m["locust"]["failures_by_kind"].get("too_many_connections") or 0) > 0
        )
        rows.append(
            {
                "variant": variant["variant"],
                "active_p50": active["p50"],
                "active_p99": active["p99"],
                "active_max": active["max"],
                "active_mean": active["mean"],
                "requests_per_s": rps,
                "requests_per_s_p95": rps_p95,
                "hold_time_ms": hold * 1000 if hold is not None else None,
                "littles_law_connections": little,
                "checked_out_p99": out_p99,
                "needed": needed,
                "saturated": saturated,
            }
        )
    if not rows or all(r["active_max"] is None for r in rows):
        return {"measured": False, "per_variant": rows}
    needed = max(r["needed"] for r in rows)
    recommended = max(1, math.ceil(needed * HEADROOM - 1e-9))
    max_active = max(
        max(
            r["active_max"] or 0,
            ((v["metrics"].get("checked_out") or {}).get("max") or 0) * v["metrics"]["workers"],
        )
        for r, v in zip(rows, variants, strict=True)
    )
    savings = []
    for variant in variants:
        m = variant["metrics"]
        peak = m["connections"]["load_peak"]
        idle = m["connections"]["idle"]
        pss = m["memory"]["pss_per_backend_idle_bytes"]
        workers = m["workers"]
        saved_idle = (idle - recommended) if idle is not None else None
        savings.append(
            {
                "variant": variant["variant"],
                "workers": workers,
                "measured_peak": peak,
                "predicted_ceiling": m["model"]["predicted_ceiling"],
                "measured_idle": idle,
                "connections_saved_at_peak": (peak - recommended) if peak is not None else None,
                "connections_saved_idle": saved_idle,
                "postgres_pss_saved_idle_bytes": saved_idle * pss
                if saved_idle is not None and pss
                else None,
            }
        )
    workers = int(max(v["metrics"]["workers"] for v in variants))
    pool_size = math.ceil(recommended / workers)
    overflow = max(0, math.ceil(max_active * HEADROOM / workers) - pool_size)
    return {
        "measured": True,
        "headroom": HEADROOM,
        "method": "max(p99 active connections, Little's law at p95 requests/s, p99 connections "
        "checked out of the pools) × headroom; hold time = mean active connections / mean "
        "requests/s",
        "needed": needed,
        "recommended_total": recommended,
        "recommended_pool_size_per_worker": pool_size,
        "recommended_max_overflow_per_worker": overflow,
        "workers": workers,
        "cpu_count": cpu_count,
        "saturated": any(r["saturated"] for r in rows),
        "per_variant": rows,
        "savings": savings,
    }


# --- the whole run -------------------------------------------------------------------------


@dataclass
class Analysis:
    summary: dict[str, Any]
    runs: list[VariantRun]
    run_dir: Path

    def experiment_runs(self, experiment: str) -> dict[str, list[VariantRun]]:
        """Variant name → its repeats (in order), for one experiment."""
        out: dict[str, list[VariantRun]] = {}
        for run in self.runs:
            if run.experiment == experiment:
                out.setdefault(run.variant, []).append(run)
        return out


def analyse(source: str | Path | RunResult) -> Analysis:
    """Compute every number of summary.json for a results directory (or one already loaded)."""
    from poolbench import __version__

    loaded = source if isinstance(source, RunResult) else load_run(source)
    run_dir, run = loaded.path, loaded.meta
    runs, warnings = runs_to_analyse(loaded)
    for vr in runs:
        analyse_variant(vr)
        if vr.metrics["collector_gap_s"]:
            warnings.append(
                f"{vr.metrics['dir']}: the collector lost contact for "
                f"{vr.metrics['collector_gap_s']:.1f} s (gap samples)"
            )
        if vr.metrics["connections"]["samples_in_load"] == 0:
            warnings.append(f"{vr.metrics['dir']}: no connection samples in the load phase")

    environment = run.get("environment") if isinstance(run.get("environment"), dict) else {}
    cpu_count = int(_num(environment.get("cpu_count")) or 0) or None
    experiments: list[dict[str, Any]] = []
    order: list[str] = []
    for vr in runs:
        if vr.experiment not in order:
            order.append(vr.experiment)
    for name in order:
        by_variant: dict[str, list[VariantRun]] = {}
        for vr in runs:
            if vr.experiment == name:
                by_variant.setdefault(vr.variant, []).append(vr)
        variants = []
        for variant, repeats in by_variant.items():
            repeats.sort(key=lambda r: r.repeat)
            rps_values = [
                v
                for r in repeats
                if (v := steady_rps(r.series, r.series["phases"].get("load"))) is not None
            ]
            rps_all = np.concatenate(rps_values) if rps_values else None
            metrics = median_tree([r.metrics for r in repeats])
            if len(repeats) > 1:  # the model of the medians, with its own words
                metrics["model"] = pool_model(repeats[0].meta, metrics)
            variants.append(
                {
                    "variant": variant,
                    "label": str(repeats[0].meta.get("label") or variant),
                    "repeats": [r.repeat for r in repeats],
                    "metrics": metrics,
                    "per_repeat": [r.metrics for r in repeats],
                    "rps_p95": _stat(rps_all, "p95") if rps_all is not None else None,
                }
            )
        baseline = variants[0]
        comparisons = [
            compare(baseline, other, by_variant[baseline["variant"]], by_variant[other["variant"]])
            for other in variants[1:]
        ]
        experiments.append(
            {
                "name": name,
                "description": _description(run, name),
                "baseline": baseline["variant"],
                "variants": variants,
                "comparisons": comparisons,
                "right_sizing": right_sizing(variants, cpu_count),
            }
        )

    summary: dict[str, Any] = {
        "schema": SCHEMA,
        "generated_by": f"poolbench {__version__}",
        "run": {
            "run_id": run.get("run_id") or run_dir.name,
            "status": run.get("status"),
            "error": run.get("error"),
            "command": run.get("command"),
            "started_at": _num(run.get("started_at")),
            "finished_at": _num(run.get("finished_at")),
            "environment": environment,
        },
        "headline": None,
        "warnings": warnings,
        "experiments": experiments,
    }
    if run.get("status") not in (None, "complete"):
        warnings.insert(
            0,
            f"run status is {run.get('status')!r}"
            + (f" ({run.get('error')})" if run.get("error") else "")
            + ": the numbers cover only what was recorded",
        )
    from poolbench.claims import judge_claims

    summary["headline"] = headline(summary)
    summary["claims"] = judge_claims(summary)
    return Analysis(summary=summary, runs=runs, run_dir=run_dir)


def _description(run: dict[str, Any], name: str) -> str | None:
    for experiment in run.get("experiments") or []:
        if isinstance(experiment, dict) and experiment.get("name") == name:
            description = experiment.get("description")
            return str(description) if description else None
    return None


def format_count(value: float | None) -> str:
    return _fmt(value)


def format_pct(value: float | None, digits: int = 0) -> str:
    """−80 % style: a real minus sign and a thin gap before the percent sign."""
    if value is None:
        return "n/a"
    sign = "−" if value < 0 else "+"
    text = f"{abs(value):.{digits}f}"
    if float(text) == 0:
        sign = "±"
    return f"{sign}{text} %"


def primary_comparison(summary: dict[str, Any]) -> tuple[dict, dict] | None:
    """(experiment, comparison) the headline and the claims are about: the first experiment
    with two or more variants, its baseline against its second variant."""
    for experiment in summary["experiments"]:
        if experiment["comparisons"]:
            return experiment, experiment["comparisons"][0]
    return None


def headline(summary: dict[str, Any]) -> str:
    primary = primary_comparison(summary)
    if primary is not None:
        _, comparison = primary
        peak = comparison["peak_connections"]
        if peak["baseline"] is not None and peak["variant"] is not None:
            text = f"Peak connections {_fmt(peak['baseline'])} → {_fmt(peak['variant'])}"
            if peak["delta_pct"] is not None:
                text += f" ({format_pct(peak['delta_pct'])})"
            return text
    for experiment in summary["experiments"]:
        for variant in experiment["variants"]:
            peak = variant["metrics"]["connections"]["load_peak"]
            if peak is not None:
                return f"Peak connections {_fmt(peak)} ({variant['variant']})"
    return f"poolbench run {summary['run']['run_id']}: no connection samples"


def to_jsonable(value: Any) -> Any:
    """NaN/inf → None, numpy scalars → Python, tuples → lists; floats that are integers stay floats."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
