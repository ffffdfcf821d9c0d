"""The pooler's side of a variant behind PgBouncer: fan-in, waiting, and its failure modes.

PostgreSQL's counts (samples.csv) show only PgBouncer's server connections; what the app
holds and how long its requests queue for a server are in `pgbouncer.csv` (the console,
poolbench/collector/pgbouncer.py). Over the full-load window (the window latency and
goodput use) this module computes:

- the fan-in: the app's client connections (peak and mean of `SHOW CLIENTS`) beside the
  server connections PgBouncer opened (`SHOW SERVERS`), and `server_ceiling`, the most it may
  open for the pair (default_pool_size + reserve_pool_size, or max_db_connections);
- waiting: clients waiting for a server (peak, mean), the pooler wait p95 (the 95th
  percentile of `maxwait`, the oldest waiting client's wait, over the samples), and the wait
  per transaction (Δ total_wait_time ÷ Δ total_xact_count);
- transactions and queries per second (Δ of PgBouncer's counters ÷ seconds);
- the hop's own cost: a `SELECT 1` through PgBouncer minus one straight to PostgreSQL, timed
  back to back once a second, the median over the probes taken while no client waited (the
  whole run: warm-up and idle included, where the queue is empty);
- failure modes, from the logs: prepared-statement errors in app.log (asyncpg's statement
  cache through transaction mode) with the server's messages, and refusals by the pooler
  (`no more connections allowed (max_client_conn)` in pgbouncer.log), never mixed with
  PostgreSQL's own refusals (SQLSTATE 53300).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from poolbench.analysis.typed import Json, Window
from poolbench.results.applog import count_log_records
from poolbench.results.record import PgBouncerEntry

SAMPLES_FILE = "pgbouncer.csv"
LOG_FILE = "pgbouncer.log"
PREPARED_STATEMENT = re.compile(
    r"prepared statement \S+ (?:does not exist|already exists)|InvalidSQLStatementNameError|"
    r"DuplicatePreparedStatementError",
    re.I,
)
POOLER_REFUSAL = re.compile(r"no more connections allowed", re.I)
_STATEMENT_NAME = re.compile(r'"__asyncpg_[^"]*__"')
_MESSAGE = re.compile(r"(?:asyncpg\.exceptions\.|psycopg\.errors\.)\w+: .*")


@dataclass(frozen=True)
class PgBouncerFigures(Json):
    """One variant × repeat behind PgBouncer (None for a variant without one)."""

    version: str | None
    pool_mode: str | None
    default_pool_size: int | None
    reserve_pool_size: int | None
    max_client_conn: int | None
    server_ceiling: int | None
    window: Window | None
    samples: int
    peak_clients: float | None
    mean_clients: float | None
    peak_servers: float | None
    peak_waiting: float | None
    mean_waiting: float | None
    wait_p95_ms: float | None
    wait_per_xact_ms: float | None
    xact_per_s: float | None
    query_per_s: float | None
    prepared_statement_errors: int | None
    messages: dict[str, int] = field(default_factory=dict)  # server's message → records
    pooler_refusals: int | None = None
    hop_ms: float | None = None  # median of paired probes, pooler − direct, no client waiting
    hop_samples: int = 0

    @property
    def fan_in(self) -> float | None:
        """Client connections per server connection, at their peaks."""
        if not self.peak_clients or not self.peak_servers:
            return None
        return self.peak_clients / self.peak_servers


def read_samples(path: Path) -> pd.DataFrame:
    """pgbouncer.csv, else what a run that ended hard left in pgbouncer.csv.part (empty when
    neither is readable; a cut last line is dropped)."""
    if not path.exists():
        path = path.with_name(path.name + ".part")
    try:
        frame = pd.read_csv(path, on_bad_lines="skip")
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return pd.DataFrame()
    numeric: pd.DataFrame = frame.apply(pd.to_numeric, errors="coerce")  # stubs: Any
    return numeric.dropna(subset=["ts"])


def _rate(frame: pd.DataFrame, column: str) -> float | None:
    if len(frame) < 2:
        return None
    seconds = float(frame["ts"].iloc[-1] - frame["ts"].iloc[0])
    change = float(frame[column].iloc[-1] - frame[column].iloc[0])
    return change / seconds if seconds > 0 and change >= 0 else None


def _wait_per_xact_ms(frame: pd.DataFrame) -> float | None:
    if len(frame) < 2:
        return None
    xacts = float(frame["total_xact_count"].iloc[-1] - frame["total_xact_count"].iloc[0])
    wait_us = float(frame["total_wait_time_us"].iloc[-1] - frame["total_wait_time_us"].iloc[0])
    return wait_us / xacts / 1000 if xacts > 0 and wait_us >= 0 else None


def server_messages(app_log: Path | None, limit: int = 5) -> dict[str, int]:
    """The drivers' prepared-statement errors in app.log, statement names folded, counted."""
    if app_log is None:
        return {}
    found: dict[str, int] = {}
    try:
        with app_log.open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if PREPARED_STATEMENT.search(line) and (match := _MESSAGE.search(line)):
                    text = _STATEMENT_NAME.sub('"__asyncpg_…__"', match.group(0).strip())
                    found[text] = found.get(text, 0) + 1
    except OSError:
        return {}
    return dict(sorted(found.items(), key=lambda kv: -kv[1])[:limit])


def _stat(values: pd.Series, how: str) -> float | None:
    if values.empty:
        return None
    if how == "p95":
        return float(np.percentile(values.to_numpy(dtype=float), 95))
    return float(values.max() if how == "max" else values.mean())


def pgbouncer_figures(
    entry: PgBouncerEntry | None, path: Path, app_log: Path | None, window: Window | None
) -> PgBouncerFigures | None:
    """The figures of a variant folder `path` whose variant.json has a `pgbouncer` entry."""
    if entry is None:
        return None
    frame = read_samples(path / SAMPLES_FILE)
    hop, hop_samples = hop_ms(frame)
    if window is not None and not frame.empty:
        frame = frame[window.contains(frame["ts"].to_numpy(dtype=float))]
    maxwait = frame["maxwait_s"] * 1000 if not frame.empty else pd.Series(dtype=float)

    def col(name: str) -> pd.Series:
        return frame[name] if not frame.empty else pd.Series(dtype=float)

    return PgBouncerFigures(
        version=entry.version,
        pool_mode=entry.pool_mode,
        default_pool_size=entry.default_pool_size,
        reserve_pool_size=entry.reserve_pool_size,
        max_client_conn=entry.max_client_conn,
        server_ceiling=entry.server_ceiling,
        window=window,
        samples=len(frame),
        peak_clients=_stat(col("clients"), "max"),
        mean_clients=_stat(col("clients"), "mean"),
        peak_servers=_stat(col("servers"), "max"),
        peak_waiting=_stat(col("cl_waiting"), "max"),
        mean_waiting=_stat(col("cl_waiting"), "mean"),
        wait_p95_ms=_stat(maxwait, "p95"),
        wait_per_xact_ms=_wait_per_xact_ms(frame) if not frame.empty else None,
        xact_per_s=_rate(frame, "total_xact_count") if not frame.empty else None,
        query_per_s=_rate(frame, "total_query_count") if not frame.empty else None,
        prepared_statement_errors=count_log_records(app_log, PREPARED_STATEMENT),
        messages=server_messages(app_log),
        pooler_refusals=_pooler_refusals(path / LOG_FILE),
        hop_ms=hop,
        hop_samples=hop_samples,
    )


def hop_ms(frame: pd.DataFrame) -> tuple[float | None, int]:
    """The hop's own cost: the median, over the whole run's probes taken while no client
    waited for a server, of (SELECT 1 through PgBouncer − SELECT 1 direct), timed back to back."""
    if frame.empty or not {"probe_pooler_ms", "probe_direct_ms"} <= set(frame.columns):
        return None, 0
    quiet = frame[(frame["cl_waiting"] == 0)].dropna(subset=["probe_pooler_ms", "probe_direct_ms"])
    if quiet.empty:
        return None, 0
    return float((quiet["probe_pooler_ms"] - quiet["probe_direct_ms"]).median()), len(quiet)


def _pooler_refusals(log: Path) -> int | None:
    """Client logins PgBouncer turned away at max_client_conn (one log line each)."""
    try:
        with log.open(encoding="utf-8", errors="replace") as handle:
            return sum(1 for line in handle if POOLER_REFUSAL.search(line))
    except OSError:
        return None
