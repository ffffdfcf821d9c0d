"""From the files of one variant × repeat to time series: what the charts draw and figures use.

samples.csv is tidy long form (docs/results.md); here it becomes one series per question:
connections in total, per engine (application_name) and per state, active ones, the app's own
pool view, memory per process group, backends, churn counters, CPU, and Locust's user count.
A connection group absent at a sample's ts held zero connections (the collector writes only
groups that exist; every sample has a connections_total row).

Untagged connections are labelled per client process by the collector
(`untagged:<executable>:<pid>`). One engine in N worker processes is one engine, so every
per-engine series merges them into `untagged`: the label a reader compares across variants
depends neither on the number of workers nor on the executable's name (`fastapi` when the
app runs in-process, `python3.11` for spawned workers). The per-process counts are kept apart
(`by_process`) for the table that shows them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from poolbench.results.run_folder import VariantResult

if TYPE_CHECKING:
    from poolbench.results.requests import RequestLog

POSTGRES_PARTS = ("postgres_backends", "postgres_postmaster", "postgres_other")
MEMORY_METRICS = {"pss": "mem_pss_bytes", "uss": "mem_uss_bytes", "rss": "mem_rss_bytes"}
CHURN_METRICS = ("sessions_new", "sessions_abandoned", "sessions_fatal")
UNTAGGED = "untagged"
_PER_PROCESS = re.compile(r"^untagged:.*:(\d+)$")


def engine_of(label: str) -> str:
    """The engine a connection label belongs to: per-process untagged labels are one engine."""
    return UNTAGGED if _PER_PROCESS.match(label) else label


def _per_process(label: str) -> bool:
    return _PER_PROCESS.match(label) is not None


def process_pid(label: str) -> int | None:
    """The client pid of a per-process untagged label (`untagged:<executable>:<pid>`)."""
    m = _PER_PROCESS.match(label)
    return int(m.group(1)) if m else None


def _labels(column: pd.Series, per_label: Callable[[str], object]) -> np.ndarray:
    """`per_label` of every row's label as str, computed once per distinct label.

    samples.csv's labels are read as categories (hundreds of thousands of rows, a few dozen
    labels): the function runs on the categories and the rows take their category's answer.
    """
    labels, codes = _distinct(column)
    answers = np.array([per_label(label) for label in labels], dtype=object)
    rows: np.ndarray = answers[codes]
    return rows


def _distinct(column: pd.Series) -> tuple[list[str], np.ndarray]:
    """(each distinct label as str, each row's position in that list)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        codes = column.cat.codes.to_numpy()
        if (codes >= 0).all():
            return [str(c) for c in column.cat.categories], codes
    distinct, inverse = np.unique(column.astype(str).to_numpy(dtype=object), return_inverse=True)
    return [str(c) for c in distinct], inverse


def engines(column: pd.Series) -> pd.Series:
    """engine_of(label) for every row of a label column, as categories in sorted order (so a
    groupby orders them as it orders the same names as str)."""
    labels, codes = _distinct(column)
    names = [engine_of(label) for label in labels]
    categories = sorted(set(names))
    position = {name: i for i, name in enumerate(categories)}
    mapped = np.array([position[name] for name in names], dtype=np.int64)
    dtype = pd.CategoricalDtype(pd.Index(categories, dtype=object))
    return pd.Series(pd.Categorical.from_codes(mapped[codes], dtype=dtype), index=column.index)


def _empty() -> pd.Series:
    return pd.Series(dtype=float)


@dataclass
class VariantSeries:
    """Every time series of one variant × repeat (index: epoch seconds)."""

    total: pd.Series = field(default_factory=_empty)
    by_engine: pd.DataFrame = field(default_factory=pd.DataFrame)  # untagged merged
    by_process: pd.DataFrame = field(default_factory=pd.DataFrame)  # untagged, per client pid
    by_state: pd.DataFrame = field(default_factory=pd.DataFrame)
    active: pd.Series = field(default_factory=_empty)
    active_by_engine: pd.DataFrame = field(default_factory=pd.DataFrame)
    checked_out: pd.Series = field(default_factory=_empty)  # the app's /debug/pools view
    checked_out_by_engine: pd.DataFrame = field(default_factory=pd.DataFrame)
    max_connections: pd.Series = field(default_factory=_empty)
    slots_left: pd.Series = field(default_factory=_empty)
    memory: dict[str, pd.Series] = field(default_factory=dict)  # e.g. "postgres_pss", "app_uss"
    backends: pd.Series = field(default_factory=_empty)  # PostgreSQL client backend processes
    backends_pss: pd.Series = field(default_factory=_empty)
    # per application_name (untagged merged), for the variant's own share of a shared server
    backend_memory: dict[str, pd.DataFrame] = field(default_factory=dict)  # "pss" → by name
    backends_by_app: pd.DataFrame = field(default_factory=pd.DataFrame)
    churn: dict[str, pd.Series] = field(default_factory=dict)  # pg_stat_database deltas
    cpu: pd.DataFrame = field(default_factory=pd.DataFrame)  # % of a core per component
    gap_seconds: float = 0.0
    users: pd.Series = field(default_factory=_empty)  # Locust's user count per second
    requests: RequestLog | None = None  # every request, when the run recorded them


def _wide(frame: pd.DataFrame, column: str, index: pd.Index | None = None) -> pd.DataFrame:
    """Sum of value per (ts, column), one column per label; missing combinations are 0."""
    if frame.empty:
        return pd.DataFrame(index=index if index is not None else pd.Index([], name="ts"))
    wide = _counted(frame, column)
    if wide is None:
        wide = (
            frame.groupby(["ts", column], sort=True, observed=True)["value"]
            .sum(min_count=1)
            .unstack(column)
        )
    wide.columns = wide.columns.astype("str")  # labels read as categories: plain names here
    if index is not None:
        if wide.index.isin(index).all():
            wide = wide.reindex(index)
        else:  # written at slightly different instants: match to the nearest snapshot
            wide = wide.reindex(index, method="nearest", tolerance=0.05)
    return wide.fillna(0.0)


def _label_codes(labels: pd.Series) -> tuple[pd.Index, np.ndarray] | None:
    """(labels present, in the order pandas' sorted groupby gives them; each row's position),
    for category labels (as samples.csv is read); None otherwise."""
    if not isinstance(labels.dtype, pd.CategoricalDtype):
        return None
    codes = labels.cat.codes.to_numpy()
    if (codes < 0).any():
        return None
    present = np.unique(codes)  # category order, as a groupby on categories sorts
    return pd.Index(labels.cat.categories[present]), np.searchsorted(present, codes)


def _counted(frame: pd.DataFrame, column: str) -> pd.DataFrame | None:
    """`_wide`'s table before reindexing, for whole-number values (counts, bytes): summed with
    numpy's bincount, exact and so equal to pandas' groupby sum, at a fraction of its cost on
    an hour of samples. None when a value is fractional or a label missing: pandas then."""
    value = frame["value"].to_numpy(dtype=float)
    known = ~np.isnan(value)
    whole = value[known]
    if not np.array_equal(whole, np.floor(whole)) or np.abs(whole).sum() >= 2.0**53:
        return None
    labels = _label_codes(frame[column])
    if labels is None:
        return None
    names, codes = labels
    ts, rows = sorted_unique(frame["ts"].to_numpy(dtype=float))
    cells = rows * len(names) + codes
    # a (ts, label) pair whose every value is NaN, or with no row, is NaN in pandas'
    # sum(min_count=1) and 0 here: `_wide` makes it 0 either way
    sums = np.bincount(cells[known], weights=whole, minlength=len(ts) * len(names))
    return pd.DataFrame(
        sums.reshape(len(ts), len(names)),
        index=pd.Index(ts, name="ts"),
        columns=pd.Index(names, name=column),
    )


def sorted_unique(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(values, return_inverse=True), in one pass when the values never decrease (a
    samples file is written in time order: an hour's 900,000 timestamps, 6 ms instead of
    22 ms to sort), else by sorting them."""
    if values.size and bool((values[1:] >= values[:-1]).all()):
        starts = np.r_[True, values[1:] != values[:-1]]
        inverse: np.ndarray = np.cumsum(starts) - 1
        return values[starts], inverse
    distinct, inverse = np.unique(values, return_inverse=True)
    return distinct, inverse


def per_ts_sum(frame: pd.DataFrame) -> pd.Series:
    """Sum of value per ts; NaN at a ts where any contributing value is unavailable."""
    if frame.empty:
        return _empty()
    total = frame.groupby("ts", sort=True)["value"].sum(min_count=1)
    if frame["value"].isna().any():
        incomplete = frame["value"].isna().groupby(frame["ts"], sort=True).any()
        total[incomplete.reindex(total.index, fill_value=False).to_numpy()] = np.nan
    return total


def _users(result: VariantResult) -> pd.Series:
    history = result.locust.get("history")
    if history is None or history.empty or not {"Name", "Timestamp"} <= set(history.columns):
        return _empty()
    agg = history[history["Name"].astype(str) == "Aggregated"]
    agg = agg.assign(Timestamp=pd.to_numeric(agg["Timestamp"], errors="coerce"))
    agg = agg.dropna(subset=["Timestamp"]).drop_duplicates("Timestamp", keep="last")
    if "User Count" not in agg.columns:
        return _empty()
    users = pd.to_numeric(agg["User Count"], errors="coerce")
    return pd.Series(users.to_numpy(dtype=float), index=agg["Timestamp"].to_numpy()).sort_index()


def _by_metric(samples: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The rows of each metric, in file order. For metric categories (as samples.csv is
    read): one stable sort of the codes, then slices of one reordered copy (half of what
    pandas' groupby split costs on an hour of samples); a groupby otherwise."""
    metric = samples["metric"]
    codes = metric.cat.codes.to_numpy() if isinstance(metric.dtype, pd.CategoricalDtype) else None
    if codes is None or (codes < 0).any():
        return {str(k): rows for k, rows in samples.groupby("metric", sort=False, observed=True)}
    order = np.argsort(codes, kind="stable")
    ordered, sorted_codes = samples.take(order), codes[order]
    bounds = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1], True])
    names = metric.cat.categories
    return {str(names[sorted_codes[a]]): ordered.iloc[a:b] for a, b in pairwise(bounds)}


def build_series(result: VariantResult) -> VariantSeries:
    samples = result.samples
    by_metric = _by_metric(samples)
    empty = samples.iloc[0:0]

    def rows(metric: str) -> pd.DataFrame:
        return by_metric.get(metric, empty)

    raw = rows("connections")
    conn = raw.assign(application_name=engines(raw["application_name"]))
    total_rows = rows("connections_total")
    if not total_rows.empty:
        total = total_rows.groupby("ts", sort=True)["value"].sum(min_count=1)
        index = total.index
    else:
        index = pd.Index(np.sort(conn["ts"].unique()), name="ts")
        total = None
    by_engine = _wide(conn, "application_name", index)
    by_state = _wide(conn, "state", index)
    if total is None:
        total = by_engine.sum(axis=1) if not by_engine.empty else _empty()
    active = by_state["active"] if "active" in by_state.columns else pd.Series(0.0, index=index)
    pools = rows("app_pool_checked_out")
    series = VariantSeries(
        total=total,
        by_engine=by_engine,
        by_process=_wide(
            raw[_labels(raw["application_name"], _per_process).astype(bool)],
            "application_name",
            index,
        ),
        by_state=by_state,
        active=active,
        active_by_engine=_wide(conn[conn["state"] == "active"], "application_name", index),
        checked_out=per_ts_sum(pools),
        checked_out_by_engine=_wide(pools, "application_name"),
        max_connections=rows("max_connections").groupby("ts")["value"].max(),
        slots_left=rows("slots_left").groupby("ts")["value"].min(),
        gap_seconds=float(rows("gap")["value"].sum()) if not rows("gap").empty else 0.0,
        users=_users(result),
        requests=result.requests(),
    )
    _add_memory(series, rows)
    for name in (*CHURN_METRICS, "xact_commit", "xact_rollback"):
        series.churn[name] = rows(name).groupby("ts", sort=True)["value"].sum(min_count=1)
    cpu = rows("cpu_percent")
    series.cpu = _wide(cpu, "component") if not cpu.empty else pd.DataFrame()
    return series


def _by_app(frame: pd.DataFrame, index: pd.Index) -> pd.DataFrame:
    """PostgreSQL backends' rows, one column per engine (untagged processes merged)."""
    rows = frame[frame["component"] == "postgres_backends"]
    rows = rows.assign(application_name=engines(rows["application_name"]))
    return _wide(rows, "application_name", index)


def _add_memory(series: VariantSeries, rows: Callable[[str], pd.DataFrame]) -> None:
    """Memory per process group, summed over the processes alive at each sweep."""
    for key, metric in MEMORY_METRICS.items():
        frame = rows(metric)
        parts = frame[frame["component"].isin(POSTGRES_PARTS)]
        if parts.empty:  # a collector that reports PostgreSQL as one component
            parts = frame[frame["component"] == "postgres"]
        series.memory[f"postgres_{key}"] = per_ts_sum(parts)
        series.memory[f"app_{key}"] = per_ts_sum(frame[frame["component"] == "app"])
    pss = rows("mem_pss_bytes")
    series.backends_pss = per_ts_sum(pss[pss["component"] == "postgres_backends"])
    processes = rows("processes")
    ticks = np.sort(processes["ts"].unique())
    index = pd.Index(ticks, name="ts")
    for key, metric in MEMORY_METRICS.items():
        frame = rows(metric)
        series.memory[f"postmaster_{key}"] = per_ts_sum(
            frame[frame["component"] == "postgres_postmaster"]
        )
        series.backend_memory[key] = _by_app(frame, index)
    series.backends_by_app = _by_app(processes, index)
    # backends at every `processes` tick, 0 when none (the collector writes no row for them)
    series.backends = (
        processes[processes["component"] == "postgres_backends"]
        .groupby("ts")["value"]
        .sum(min_count=1)
        .reindex(ticks, fill_value=0.0)
    )
