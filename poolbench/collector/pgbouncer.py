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
    "probe_pooler_ms",  # SELECT 1 through PgBouncer as the app's role (1 Hz; else empty)
    "probe_direct_ms",  # the same straight to PostgreSQL, right after (1 Hz; else empty)
)
PROBE_NAME = "poolbench-probe"  # the probe's application_name, left out of `clients`


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
        clients = [
            r
            for r in _rows(cur, "SHOW CLIENTS")
            if r["database"] == dbname and r.get("application_name") != PROBE_NAME
        ]
        servers = [r for r in _rows(cur, "SHOW SERVERS") if r["database"] == dbname]
    row: dict[str, float] = {"ts": started}
    for key in (
        "cl_active",
        "cl_waiting",
        "sv_active",
        "sv_idle",
        "sv_used",
        "sv_tested",
        "sv_login",
    ):
        row[key] = sum(int(p[key]) for p in pools)
    row["maxwait_s"] = max(
        (int(p["maxwait"]) + int(p.get("maxwait_us") or 0) / 1e6 for p in pools), default=0.0
    )
    row["clients"], row["servers"] = len(clients), len(servers)
    for key, column in (
        ("total_xact_count", "total_xact_count"),
        ("total_query_count", "total_query_count"),
        ("total_wait_time", "total_wait_time_us"),
        ("avg_wait_time", "avg_wait_time_us"),
    ):
        row[column] = sum(int(s[key]) for s in stats)
    row["query_ms"] = (time.perf_counter() - t0) * 1000
    return row


class _Link:
    """One kept connection, opened on first use and dropped (to be reopened) when it fails."""

    def __init__(self, conninfo: str, **options: Any) -> None:
        self.conninfo, self.options = conninfo, options
        self.conn: psycopg.Connection | None = None

    def get(self) -> psycopg.Connection:
        if self.conn is None:
            self.conn = psycopg.connect(self.conninfo, autocommit=True, **self.options)
        return self.conn

    def drop(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):
                self.conn.close()
        self.conn = None


def probe_ms(link: _Link) -> float:
    """One `SELECT 1` round trip, in ms (autocommit: one transaction, one server turn)."""
    conn = link.get()
    t0 = time.perf_counter()
    conn.execute("SELECT 1").fetchone()
    return (time.perf_counter() - t0) * 1000


class PgBouncerSampler:
    """Samples in a background thread until stopped; a link that fails is reconnected.

    `probe` = (through PgBouncer as the app's role, straight to PostgreSQL) conninfos: once a
    second a `SELECT 1` is timed on each, back to back, so the hop's own cost can be read where
    no client waited (poolbench/analysis/pgbouncer.py). `rows_written` and `errors` say what
    it did (variant.json's `pgbouncer.sampler`).
    """

    def __init__(
        self,
        conninfo: str,
        dbname: str,
        out: Path,
        hz: float = 10.0,
        probe: tuple[str, str] | None = None,
    ) -> None:
        self.dbname, self.path, self.interval = dbname, out, 1.0 / hz
        self.console = _Link(conninfo, cursor_factory=psycopg.ClientCursor)
        self.probes = (
            (_Link(probe[0], prepare_threshold=None), _Link(probe[1], prepare_threshold=None))
            if probe
            else None
        )
        self.probe_every = max(1, round(hz))  # samples between probes: once a second
        self.rows_written = 0
        self.errors = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _row(self, n: int) -> dict[str, float]:
        row = sample(self.console.get(), self.dbname)
        if self.probes is not None and n % self.probe_every == 0:
            pooler, direct = self.probes
            for column, link in (("probe_pooler_ms", pooler), ("probe_direct_ms", direct)):
                try:
                    row[column] = probe_ms(link)
                except psycopg.Error as exc:
                    link.drop()
                    self._failed(exc)
        return row

    def _failed(self, exc: Exception) -> None:
        self.errors += 1
        self.last_error = str(exc).strip().splitlines()[0] if str(exc) else type(exc).__name__

    def _main(self) -> None:
        with self.partial.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            next_at, n = time.monotonic(), 0
            while not self._stop.is_set():
                try:
                    writer.writerow({k: _cell(v) for k, v in self._row(n).items()})
                    handle.flush()
                    self.rows_written += 1
                except psycopg.Error as exc:
                    self._failed(exc)
                    self.console.drop()
                n += 1
                next_at = max(next_at + self.interval, time.monotonic())
                self._stop.wait(max(0.0, next_at - time.monotonic()))
        for link in (self.console, *(self.probes or ())):
            link.drop()
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
