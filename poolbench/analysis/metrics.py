"""The metrics a comparison, a claim and a threshold can name: one definition each.

A metric is a named figure of a variant × repeat with its unit, its window (named in its label),
which direction is better, and whether it is exact — a count read without sampling noise, such
as a connection peak or an idle count, compared without a statistical test — or noisy, compared
with a test across repeats (or across independent blocks of one run, for the metrics that
have per-block values).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from poolbench.analysis.figures import VariantFigures
from poolbench.errors import PoolbenchError


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    unit: str  # a poolbench.format unit
    better: str  # "lower" or "higher"
    exact: bool
    get: Callable[[VariantFigures], float | None]
    window: Callable[[VariantFigures], str]
    block: str | None = None  # the BlockMetrics field for a within-run test
    glance: bool = True  # shown in the at-a-glance table
    measured: bool = True  # read from the run (False: from the code or the configuration)


def _w(attr: str) -> Callable[[VariantFigures], str]:
    def label(f: VariantFigures) -> str:
        window = getattr(f.windows, attr)
        return window.label() if window else "n/a"

    return label


def _traffic_window(f: VariantFigures) -> str:
    return f.traffic.window.label() if f.traffic.window else "n/a"


def _fixed(text: str) -> Callable[[VariantFigures], str]:
    return lambda f: text


def _refused_attempts(f: VariantFigures) -> float | None:
    return float(f.exact.attempts.refused) if f.exact.attempts else None


def _attempts_window(f: VariantFigures) -> str:
    return f.exact.attempts.window.label() if f.exact.attempts else "n/a"


def _backends_per_s(f: VariantFigures) -> float | None:
    a = f.exact.attempts_after_fill
    return a.per_s(a.started) if a else None


def _pooler_window(f: VariantFigures) -> str:
    window = f.pgbouncer.window if f.pgbouncer else None
    return window.label() if window else "n/a"


def _census(f: VariantFigures) -> float | None:
    return float(f.census.sites) if f.census else None


METRICS: tuple[Metric, ...] = (
    Metric(
        "peak_connections",
        "Peak connections",
        "connections",
        "lower",
        True,
        lambda f: f.connections.peak,
        _w("load"),
    ),
    Metric(
        "exact_peak_connections",
        "Peak connections, exact (server log)",
        "connections",
        "lower",
        True,
        lambda f: float(f.exact.total.exact) if f.exact.total else None,
        _w("load"),
    ),
    Metric(
        "idle_connections",
        "Connections held when idle",
        "connections",
        "lower",
        True,
        lambda f: f.connections.idle,
        _w("idle_settled"),
    ),
    Metric(
        "pools_holding_idle",
        "Application names holding connections when idle",
        "count",
        "lower",
        True,
        lambda f: f.connections.pools_holding_idle,
        _w("idle_settled"),
    ),
    Metric(
        "refusals",
        "Connection attempts refused by PostgreSQL (server log, SQLSTATE 53300)",
        "count",
        "lower",
        True,
        _refused_attempts,
        _attempts_window,
    ),
    Metric(
        "failed_requests",
        "Failed requests (Locust)",
        "count",
        "lower",
        True,
        lambda f: f.traffic.failures,
        _traffic_window,
    ),
    Metric(
        "refused_requests",
        "Failed requests whose error names a refusal (app log / Locust)",
        "count",
        "lower",
        True,
        lambda f: f.traffic.refusals,
        _w("load"),
    ),
    Metric(
        "idle_in_transaction_mean",
        "“idle in transaction” connections, mean",
        "count",
        "lower",
        False,
        lambda f: f.connections.idle_in_transaction.mean,
        _w("full_load"),
    ),
    Metric(
        "idle_in_transaction_max",
        "“idle in transaction” connections, max",
        "count",
        "lower",
        False,
        lambda f: f.connections.idle_in_transaction.max,
        _w("full_load"),
    ),
    Metric(
        "goodput",
        "Goodput (successful requests/s)",
        "per_s",
        "higher",
        False,
        lambda f: f.traffic.goodput,
        _traffic_window,
        block="goodput",
    ),
    Metric(
        "failures_per_s",
        "Failed requests/s",
        "per_s",
        "lower",
        False,
        lambda f: f.traffic.failures_per_s,
        _traffic_window,
        block="failures",
    ),
    Metric(
        "p50_ms",
        "Latency p50 (successful requests)",
        "ms",
        "lower",
        False,
        lambda f: f.traffic.latency.p50,
        _traffic_window,
        block="p50_ms",
    ),
    Metric(
        "p95_ms",
        "Latency p95 (successful requests)",
        "ms",
        "lower",
        False,
        lambda f: f.traffic.latency.p95,
        _traffic_window,
        block="p95_ms",
    ),
    Metric(
        "p99_ms",
        "Latency p99 (successful requests)",
        "ms",
        "lower",
        False,
        lambda f: f.traffic.latency.p99,
        _traffic_window,
        block="p99_ms",
    ),
    Metric(
        "postgres_pss_idle",
        "PostgreSQL memory, PSS",
        "bytes",
        "lower",
        False,
        lambda f: f.memory.postgres_pss.idle,
        _w("idle_settled"),
    ),
    Metric(
        "postgres_uss_idle",
        "PostgreSQL memory, USS",
        "bytes",
        "lower",
        False,
        lambda f: f.memory.postgres_uss.idle,
        _w("idle_settled"),
    ),
    Metric(
        "app_uss",
        "App memory, USS (all its processes, mean)",
        "bytes",
        "lower",
        False,
        lambda f: f.memory.app_uss.full_load,
        _w("full_load"),
    ),
    Metric(
        "sessions_opened_filling",
        "Sessions opened while the pools filled",
        "count",
        "lower",
        False,
        lambda f: f.churn.opened_while_filling,
        lambda f: f.churn.fill_window.label() if f.churn.fill_window else "n/a",
    ),
    Metric(
        "backends_per_s",
        "Backends PostgreSQL started per second after the pools filled (server log)",
        "per_s",
        "lower",
        True,
        _backends_per_s,
        lambda f: f.exact.churn_window.label() if f.exact.churn_window else "n/a",
    ),
    Metric(
        "churn_per_s",
        "New sessions/s after the pools filled (pg_stat_database)",
        "per_s",
        "lower",
        False,
        lambda f: f.churn.churn_per_s,
        lambda f: f.churn.churn_window.label() if f.churn.churn_window else "n/a",
    ),
    Metric(
        "app_cpu",
        "App CPU",
        "pct_core",
        "lower",
        False,
        lambda f: f.cpu.full_load.get("app"),
        _w("full_load"),
        glance=False,
    ),
    Metric(
        "collector_cpu",
        "Collector CPU",
        "pct_core",
        "lower",
        False,
        lambda f: f.cpu.full_load.get("collector"),
        _w("full_load"),
        glance=False,
    ),
    Metric(
        "engine_sites",
        "Engine creation sites in the code (lint census)",
        "count",
        "lower",
        True,
        _census,
        _fixed("static"),
        glance=False,
        measured=False,
    ),
    Metric(
        "ceiling",
        "Connection ceiling (configuration)",
        "connections",
        "lower",
        True,
        lambda f: f.model.ceiling if f.model else None,
        _fixed("configuration"),
        glance=False,
        measured=False,
    ),
    # behind PgBouncer (None for a variant without one): poolbench/analysis/pgbouncer.py
    Metric(
        "client_connections",
        "Client connections to PgBouncer, peak",
        "connections",
        "lower",
        True,
        lambda f: f.pgbouncer.peak_clients if f.pgbouncer else None,
        _pooler_window,
        glance=False,
    ),
    Metric(
        "pooler_wait_p95_ms",
        "PgBouncer client wait p95 (maxwait)",
        "ms",
        "lower",
        False,
        lambda f: f.pgbouncer.wait_p95_ms if f.pgbouncer else None,
        _pooler_window,
        glance=False,
    ),
    Metric(
        "prepared_statement_errors",
        "Requests failed on prepared statements",
        "count",
        "lower",
        True,
        lambda f: f.pgbouncer.prepared_statement_errors if f.pgbouncer else None,
        _fixed("whole run"),
        glance=False,
    ),
    Metric(
        "pooler_refusals",
        "Logins refused by PgBouncer (max_client_conn)",
        "count",
        "lower",
        True,
        lambda f: f.pgbouncer.pooler_refusals if f.pgbouncer else None,
        _fixed("whole run"),
        glance=False,
    ),
)
BY_NAME = {m.name: m for m in METRICS}


def check_claims(claims: dict[str, dict[str, Any]], where: str) -> None:
    """Every metric a bench file's claim names is one of ours, else one line listing them."""
    for claim_id, claim in claims.items():
        names = claim.get("metrics") or ([claim["metric"]] if "metric" in claim else [])
        for name in names:
            if name not in BY_NAME:
                raise PoolbenchError(
                    f"{where}.{claim_id} names unknown metric {name!r}: "
                    f"valid metrics are {', '.join(BY_NAME)}"
                )
