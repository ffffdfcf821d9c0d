"""The pooler's side: PgBouncer's admin console sampled at the collector's rate.

PostgreSQL's `pg_stat_activity` sees only PgBouncer's server connections; how many clients
the app holds, how many wait for a server and for how long, are PgBouncer's to say. Each
sample runs `SHOW POOLS`, `SHOW STATS`, `SHOW CLIENTS` and `SHOW SERVERS` on one kept
console connection (simple query protocol: the console knows no other) and writes one row
of `pgbouncer.csv` for the app's database (columns: `COLUMNS`, docs/results.md; written as
`pgbouncer.csv.part`, renamed when the sampler stops, as samples.csv is). The
counters of `SHOW STATS` are written as they are (cumulative); rates and the wait per
transaction are differences between rows (poolbench/analysis/pgbouncer.py).
"""

from __future__ import annotations

import contextlib
import csv
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

SAMPLES_FILE = "pgbouncer.csv"
COLUMNS = (
    "ts",  # unix seconds when the sample began
    "cl_active",  # client connections linked to a server or idle without waiting
    "cl_waiting",  # client connections waiting for a server connection
    "sv_active",  # server connections linked to a client
    "sv_idle",  # server connections free for a client
    "sv_used",  # server connections idle longer than server_check_delay
    "sv_tested",
    "sv_login",
    "maxwait_s",  # the oldest waiting client's wait
    "clients",  # the app's client connections (SHOW CLIENTS)
    "servers",  # PgBouncer's server connections to PostgreSQL (SHOW SERVERS)
    "total_xact_count",
    "total_query_count",
    "total_wait_time_us",  # cumulative time clients waited for a server
    "avg_wait_time_us",  # PgBouncer's own average over its last stats_period
    "query_ms",  # how long this sample's four commands took
)


def _rows(cur: psycopg.Cursor, query: str) -> list[dict[str, Any]]:
    cur.execute(query)
    names = [d.name for d in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def sample(conn: psycopg.Connection, dbname: str) -> dict[str, float]:
    """One row: the app database's pool, stats, clients and servers, now."""
    started, t0 = time.time(), time.perf_counter()
    with conn.cursor() as cur:
        pools = [r for r in _rows(cur, "SHOW POOLS") if r["database"] == dbname]
        stats = [r for r in _rows(cur, "SHOW STATS") if r["database"] == dbname]
        clients = [r for r in _rows(cur, "SHOW CLIENTS") if r["database"] == dbname]
        servers = [r for r in _rows(cur, "SHOW SERVERS") if r["database"] == dbname]
    row: dict[str, float] = {"ts": started}
    for key in ("cl_active", "cl_waiting", "sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login"):  # fmt: skip
        row[key] = sum(int(p[key]) for p in pools)
    row["maxwait_s"] = max(
        (int(p["maxwait"]) + int(p.get("maxwait_us") or 0) / 1e6 for p in pools), default=0.0
    )
    row["clients"], row["servers"] = len(clients), len(servers)
    for key, column in (("total_xact_count", "total_xact_count"),
                        ("total_query_count", "total_query_count"),
                        ("total_wait_time", "total_wait_time_us"),
                        ("avg_wait_time", "avg_wait_time_us")):  # fmt: skip
        row[column] = sum(int(s[key]) for s in stats)
    row["query_ms"] = (time.perf_counter() - t0) * 1000
    return row


class PgBouncerSampler:
    """Samples in a background thread until stopped; a console that fails is reconnected.

    `rows_written` and `errors` say what it did (variant.json's `pgbouncer.sampler`).
    """

    def __init__(self, conninfo: str, dbname: str, out: Path, hz: float = 10.0) -> None:
        self.conninfo, self.dbname, self.path, self.interval = conninfo, dbname, out, 1.0 / hz
        self.rows_written = 0
        self.errors = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(self.conninfo, autocommit=True, cursor_factory=psycopg.ClientCursor)

    def _main(self) -> None:
        conn: psycopg.Connection | None = None
        with self.partial.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            next_at = time.monotonic()
            while not self._stop.is_set():
                try:
                    conn = conn or self._connect()
                    writer.writerow({k: _cell(v) for k, v in sample(conn, self.dbname).items()})
                    handle.flush()
                    self.rows_written += 1
                except psycopg.Error as exc:
                    self.errors += 1
                    self.last_error = str(exc).strip().splitlines()[0] if str(exc) else type(exc).__name__  # fmt: skip
                    if conn is not None:
                        with contextlib.suppress(psycopg.Error):
                            conn.close()
                    conn = None
                next_at = max(next_at + self.interval, time.monotonic())
                self._stop.wait(max(0.0, next_at - time.monotonic()))
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()
        self.partial.replace(self.path)  # whole now: under its own name

    @property
    def partial(self) -> Path:
        """Where rows go while sampling: `pgbouncer.csv.part` until the sampler stops."""
        return self.path.with_name(self.path.name + ".part")

    def start(self) -> PgBouncerSampler:
        self._thread = threading.Thread(target=self._main, name="poolbench-pgbouncer", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> dict[str, Any]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        return {
            "file": self.path.name,
            "hz": round(1.0 / self.interval, 3),
            "rows_written": self.rows_written,
            "errors": self.errors,
            "last_error": self.last_error,
        }

    def __enter__(self) -> PgBouncerSampler:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def _cell(value: float) -> str:
    return f"{value:.6f}" if isinstance(value, float) else str(value)
