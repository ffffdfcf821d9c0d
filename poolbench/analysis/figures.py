"""Every figure of one variant × repeat, computed once from its files."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from poolbench.analysis.connections import (
    ChurnFigures,
    ConnectionFigures,
    churn_figures,
    connection_figures,
    other_clients,
)
from poolbench.analysis.exact import ExactFigures, exact_figures
from poolbench.analysis.leak import NOT_JUDGED, NOT_MEASURED, Trend, trend
from poolbench.analysis.limits import Limit, binding_limit, reword_model
from poolbench.analysis.memory import CpuFigures, MemoryFigures, cpu_figures, memory_figures
from poolbench.analysis.model import PoolModel, pool_model
from poolbench.analysis.pgbouncer import PgBouncerFigures, pgbouncer_figures
from poolbench.analysis.pool_probe import ProbeFigures, probe_figures
from poolbench.analysis.series import VariantSeries, build_series
from poolbench.analysis.traffic import TrafficFigures, traffic_figures
from poolbench.analysis.typed import Json, Window
from poolbench.analysis.windows import Windows, after_backlog, windows_for, within
from poolbench.results.events import ROUTINE, EventKind
from poolbench.results.pool_probe import ProbeData, read_probe
from poolbench.results.record import PreflightEntry
from poolbench.results.run_folder import VariantResult


@dataclass(frozen=True)
class Census(Json):
    """What `poolbench lint` found in the app: engine creation sites by scope."""

    sites: int
    by_scope: dict[str, int]
    list: list[dict[str, Any]]


@dataclass(frozen=True)
class VariantFigures(Json):
    experiment: str
    variant: str
    repeat: int
    label: str
    dir: str
    status: str | None
    fault: str | None  # what ended or spoiled it (variant.json `error`), when not complete
    workers: int
    windows: Windows
    connections: ConnectionFigures
    churn: ChurnFigures
    memory: MemoryFigures
    cpu: CpuFigures
    traffic: TrafficFigures
    model: PoolModel | None
    leak: list[Trend]
    census: Census | None
    exact: ExactFigures
    collector_gap_s: float
    collector: dict[str, Any] = field(default_factory=dict)  # variant.json's collector entry
    events: list[dict[str, Any]] = field(default_factory=list)
    # why another client capped what the app could measure (None: it did not)
    capped: str | None = None
    limit: Limit | None = None  # which limit bound its connections (poolbench.analysis.limits)
    server_settings: dict[str, str] = field(default_factory=dict)  # the server it ran against
    pgbouncer: PgBouncerFigures | None = None  # the pooler's side, for a variant behind one
    app_dir: str | None = None  # the app measured (variants of one app compare the extra hop)
    probe: ProbeFigures | None = None  # inside the pools (poolbench/probe), when it ran


@dataclass
class VariantRun:
    """One variant × repeat: its files, its series (for the charts) and its figures."""

    result: VariantResult
    series: VariantSeries
    figures: VariantFigures
    probe: ProbeData | None = None  # the pool probe's data, for the charts


def _census(data: Any) -> Census | None:
    if isinstance(data, dict):
        data = next(
            (data[k] for k in ("sites", "engines", "census") if isinstance(data.get(k), list)), None
        )
    if not isinstance(data, list):
        return None
    sites = [s for s in data if isinstance(s, dict)]
    by_scope: dict[str, int] = {}
    for site in sites:
        scope = str(site.get("scope") or "unknown")
        by_scope[scope] = by_scope.get(scope, 0) + 1
    return Census(len(sites), by_scope, sites)


def capped_by_others(preflight: PreflightEntry | None) -> str | None:
    """Other clients held slots the app's pools needed (variant.json `preflight`): its
    connections, refusals and the rest measure them, not the app."""
    if preflight is None:
        return None
    others, free, ceiling = preflight.other_clients, preflight.free_slots, preflight.ceiling
    if not others or free is None or ceiling is None or ceiling <= free:
        return None
    return (
        f"other clients held {others} of the server's {preflight.max_connections} "
        f"connection slots, leaving {free} for pools that may open {ceiling}"
    )


def _lifecycle(events: list[dict[str, Any]], w: Windows) -> list[dict[str, Any]]:
    """What happened to the processes the run depends on: not the routine (phases, the load's
    launch, the app's own start), but a worker that exited or was replaced, a restart, lost
    users."""
    began = min((p.start for p in w.phases.values()), default=float("-inf"))
    out = []
    for event in events:
        kind = str(event.get("event", ""))
        if kind in ROUTINE:
            continue
        if kind == EventKind.APP_PROCESS_STARTED and float(event.get("ts") or 0) <= began:
            continue  # the app starting up, before any phase
        out.append(event)
    return out


def _below_ceiling(connections: Trend, model: PoolModel | None) -> Trend:
    """A count below the pools' ceiling is pools filling (or breathing), never a leak."""
    if model is None or model.measured_peak is None or model.ceiling is None:
        return connections
    if model.measured_peak >= model.ceiling or connections.verdict == NOT_MEASURED:
        return connections
    return replace(
        connections,
        verdict=NOT_JUDGED,
        reason=f"below the pools' ceiling ({model.measured_peak:.0f} of {model.ceiling:.0f}): "
        "pools filling, not a leak — a connection leak passes the ceiling",
    )


def leak_window(w: Windows, churn: ChurnFigures) -> Window | None:
    """A constant load after the pools filled: the soak phase, else full load after the fill."""
    soak = w.phases.get("soak")
    if soak is not None:
        return Window("soak", soak.start, soak.end)
    if w.full_load is None:
        return None
    start = max(w.full_load.start, churn.filled_at or w.full_load.start)
    return (
        Window("full load, pools filled", start, w.full_load.end)
        if start < w.full_load.end
        else None
    )


def _busy(series: VariantSeries) -> pd.Series:
    """Backends working for a request: active or idle in transaction."""
    busy = series.active
    if "idle in transaction" in series.by_state.columns:
        busy = busy.add(series.by_state["idle in transaction"], fill_value=0.0)
    return busy


def _completions(series: VariantSeries) -> np.ndarray | None:
    log = series.requests
    return None if log is None else log.start + log.response_ms / 1000


def analyse_variant(result: VariantResult) -> VariantRun:
    series = build_series(result)
    first = float(result.samples["ts"].min()) if not result.samples.empty else None
    windows = after_backlog(
        windows_for(result.entry, series.users, first), _busy(series), _completions(series)
    )
    connections = connection_figures(series, windows)
    traffic = traffic_figures(result, series, windows)
    probe_data = read_probe(result.path)
    probe = probe_figures(probe_data, traffic.window or windows.full_load)
    model = pool_model(
        result.entry,
        connections,
        probe,
        full_load=within(series.by_engine, windows.full_load),
        idle_note=windows.idle_note,
    )
    churn = churn_figures(series, windows)
    window = leak_window(windows, churn)
    exact = exact_figures(result, series, windows, churn.churn_window)
    limit = binding_limit(connections, model, exact, traffic.refusals)
    model = reword_model(model, limit)
    figures = VariantFigures(
        experiment=result.experiment,
        variant=result.variant,
        repeat=result.repeat,
        label=result.entry.label or result.variant,
        dir=result.entry.dir or result.path.name,
        status=result.entry.status,
        fault=result.entry.error,
        workers=result.entry.workers,
        windows=windows,
        connections=connections,
        churn=churn,
        memory=memory_figures(
            series, windows, other_clients(series, windows, result.entry.preflight)
        ),
        cpu=cpu_figures(series, windows),
        traffic=traffic,
        model=model,
        leak=[
            trend("app USS", "bytes", series.memory["app_uss"], window, series.total),
            trend("PostgreSQL USS", "bytes", series.memory["postgres_uss"], window, series.total),
            trend(
                "PostgreSQL PSS",
                "bytes",
                series.memory["postgres_pss"],
                window,
                series.total,
                judged=False,
            ),
            _below_ceiling(trend("connections", "connections", series.total, window), model),
        ],
        census=_census(result.census),
        exact=exact,
        collector_gap_s=series.gap_seconds,
        collector=dict(result.entry.collector),
        events=_lifecycle(result.events, windows),
        capped=capped_by_others(result.entry.preflight),
        limit=limit,
        server_settings=dict(result.entry.server_settings),
        pgbouncer=pgbouncer_figures(
            result.entry.pgbouncer, result.path, result.app_log, windows.full_load
        ),
        app_dir=result.entry.app_dir,
        probe=probe,
    )
    return VariantRun(result, series, figures, probe_data)
