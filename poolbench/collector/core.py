"""`Collector`: the sampling threads, the monitoring connection, reconnects and gaps.

One thread owns the monitoring connection and runs every query on a fixed grid: the
connections sample (``connections_hz``), churn (1 Hz, also flushes the samples file) and the
plan of each process sweep (``memory_hz``: which backends exist and their names). A second
thread runs the process sweeps (blocking /proc reads) from those plans, a third polls the
app's pools: a connection sample is never late because of them.

Threads and blocking calls rather than an event loop: an instrument at 10 Hz pays for
every wake-up, and a blocking query (psycopg's own wait, in C) costs about half of an
asyncio one (~0.25 ms of CPU against ~0.5 ms, wake-ups included). A query that hangs is
ended by the server's ``statement_timeout`` or, for a dead network, libpq's
``tcp_user_timeout`` (both ``QUERY_TIMEOUT_S``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg

from poolbench.collector import connections
from poolbench.collector.attribution import BackendOwners, PostmasterFinder, socket_ends
from poolbench.collector.churn import ChurnReader
from poolbench.collector.latest import Latest
from poolbench.collector.memory import MemoryStats, MemoryTracker
from poolbench.collector.pools import PoolsPoller
from poolbench.collector.process_sweep import Plan, ProcessSweeper
from poolbench.collector.procfs import alive
from poolbench.collector.server import (
    BACKENDS_SQL,
    Server,
    candidate_conninfos,
    check_server,
    connect,
    sample_connections,
)
from poolbench.collector.settings import CollectorConfig
from poolbench.errors import PoolbenchError, first_line
from poolbench.redact import mask_url
from poolbench.results.names import APPLICATION_NAME, UNTAGGED
from poolbench.results.samples import Row, SamplesWriter, row

log = logging.getLogger(__package__)  # "poolbench.collector": `watch` shows its messages

CHURN_HZ = 1.0
POOLS_HZ = 1.0


class Collector:
    """Samples one database: `start()` (connect, check), `run(stop)` until `stop` is set."""

    def __init__(self, config: CollectorConfig) -> None:
        self.config = config
        self._conn: psycopg.Connection | None = None
        self._cursor: psycopg.Cursor | None = None
        self._conninfo: str | None = None
        self._server: Server | None = None
        self._writer: SamplesWriter | None = None
        self._write_lock = threading.Lock()  # three threads write rows
        self._publish_lock = threading.Lock()  # ... and publish figures
        self._tids: dict[int, str] = {}  # the collector's threads (tid -> name), for its CPU
        self._latest = Latest()  # fields that change at most about once a second
        self._sampled: dict[str, Any] = {}  # fields of the newest connection sample
        self._load_pid = config.load_pid
        self._warned: set[str] = set()
        self._owners = BackendOwners()
        self._finder = PostmasterFinder(config.postmaster_pid)
        memory = (
            MemoryTracker(config.memory_refresh_s, config.memory_cpu_budget)
            if config.memory
            else None
        )
        self._sweeper = ProcessSweeper(self._tids, self.warn_once, memory)
        self._plans: queue.Queue[Plan | None] = queue.Queue(maxsize=1)
        assert config.dbname is not None  # CollectorConfig.__post_init__ sets it or raises
        self._churn = ChurnReader(config.dbname)
        self._sample_params = [config.dbname.encode(), APPLICATION_NAME.encode()]
        self._failure: BaseException | None = None
        self._stopping = False
        # connection sampling state
        self._last_ok_ts: float | None = None
        self._gap_open = False
        self.own_xacts = 0  # our own committed statements (monitoring from the target db)
        self.own_rollbacks = 0
        self._postmaster: int | None = None
        self._started = False

    # ------------------------------------------------------------------ public

    def latest(self) -> Latest:
        """The newest figures (cheap; callable from any thread)."""
        return dataclasses.replace(self._latest, **self._sampled)

    @property
    def rows_written(self) -> int:
        """Rows written to samples.csv so far (variant.json records the final count)."""
        return self._writer.rows_written if self._writer is not None else 0

    def set_load_pid(self, pid: int | None) -> None:
        """The load generator's pid, once it exists (thread-safe)."""
        self._load_pid = pid

    @property
    def server(self) -> Server | None:
        return self._server

    def start(self) -> None:
        """Connect, check rights, open the samples file. PoolbenchError on any problem."""
        if self._started:
            return
        try:
            self._open(first=True)
            self._writer = SamplesWriter(self.config.out_path)
        except BaseException:
            self._close_connection()
            raise
        self._started = True

    def run(self, stop: threading.Event) -> Latest:
        """Sample until `stop` is set; the samples file is then closed (renamed into place).

        Runs the connection's duties in the calling thread, the sweeps and the pools in
        threads of their own; an error in any of them ends the run and is raised here.
        """
        self.start()
        self._tids[threading.get_native_id()] = "connection"
        pools = PoolsPoller(self.config.pools_url) if self.config.pools_url else None
        workers = [self._thread("sweeps", self._sweeps)]
        if pools is not None:
            workers.append(
                self._thread("pools", lambda: self._every(POOLS_HZ, stop, self._pools_tick, pools))
            )
        try:
            for worker in workers:
                worker.start()
            self._guarded(lambda: self._duties(stop))
        finally:
            self._stopping = True
            with contextlib.suppress(queue.Empty):
                self._plans.get_nowait()  # a plan not swept yet: dropped
            self._plans.put_nowait(None)  # ends the sweeps' thread (only this thread puts)
            for worker in workers:
                if worker.ident is not None:
                    worker.join()
            self._shut_down(pools)
        if self._failure is not None:
            raise self._failure
        return self.latest()

    # ------------------------------------------------------------------ threads

    def _thread(self, name: str, body: Callable[[], None]) -> threading.Thread:
        def main() -> None:
            self._tids[threading.get_native_id()] = name
            self._guarded(body)

        return threading.Thread(target=main, name=f"poolbench-collector-{name}", daemon=True)

    def _guarded(self, body: Callable[[], None]) -> None:
        """Run a thread's loop; an unexpected error is kept for `run` and ends the others."""
        try:
            body()
        except BaseException as exc:
            if self._failure is None:
                self._failure = exc

    def _running(self, stop: threading.Event) -> bool:
        return not (stop.is_set() or self._stopping or self._failure is not None)

    def _every(
        self, hz: float, halt: threading.Event, tick: Callable[..., None], *args: Any
    ) -> None:
        """Call `tick` `hz` times a second on a fixed grid until `halt`; a late tick skips."""
        period = 1.0 / hz
        next_t = time.monotonic()
        while self._running(halt):
            tick(*args)
            next_t += period
            now = time.monotonic()
            if now - next_t >= period:
                next_t += ((now - next_t) // period) * period
            halt.wait(max(0.0, next_t - now))

    def _duties(self, halt: threading.Event) -> None:
        """The connection's thread: connections samples, churn and sweep plans, each on its
        own fixed grid; a late connections sample skips (and is counted), never bursts."""
        period = 1.0 / self.config.connections_hz
        churn_every, plan_every = 1.0 / CHURN_HZ, 1.0 / self.config.memory_hz
        now = time.monotonic()
        next_t, next_churn, next_plan = now, now, now
        while self._running(halt):
            if time.monotonic() >= next_t:
                excused = self._connections_tick(halt)
                next_t += period
                now = time.monotonic()
                if now - next_t >= period:
                    skipped = int((now - next_t) // period)
                    next_t += skipped * period
                    if not excused:
                        self.publish(missed_samples=self._latest.missed_samples + skipped)
            now = time.monotonic()
            if now >= next_churn:
                self._churn_tick()
                next_churn = _next(next_churn, churn_every, now)
            if now >= next_plan:
                self._offer_plan()
                next_plan = _next(next_plan, plan_every, now)
            halt.wait(max(0.0, min(next_t, next_churn, next_plan) - time.monotonic()))

    def _sweeps(self) -> None:
        """The sweeps' thread: one sweep per plan the connection's thread offers."""
        while (plan := self._plans.get()) is not None:
            self._processes_tick(plan)

    # ------------------------------------------------------------------ connection

    def _open(self, first: bool = False) -> None:
        """Connect (maintenance db first), check rights, learn the server, find its processes."""
        candidates = [self._conninfo] if self._conninfo else candidate_conninfos(self.config)
        conn = None
        error: BaseException | None = None
        for info in candidates:
            try:
                conn = connect(info, self.config.connect_timeout)
                self._conninfo = info
                break
            except psycopg.Error as exc:
                error = exc
        if conn is None:
            assert error is not None  # candidates are never empty: each one failed
            raise PoolbenchError(
                f"cannot connect to {mask_url(self.config.admin_url)}: {first_line(error)}"
            )
        try:
            server = check_server(conn, self.config)
        except BaseException:
            conn.close()
            raise
        self._conn, self._server = conn, server
        self._cursor = conn.cursor()  # one for every query: a cursor costs ~50 µs to make
        self.publish(connected=True)
        self._churn.reset()
        self._sweeper.forget_postgres()
        sockname, peername = socket_ends(conn)
        # an app connects where the collector does: the other end of its clients' sockets
        self._owners.server = tuple(peername[:2]) if isinstance(peername, tuple) else None
        self._postmaster, why = self._finder.find(server.backend_pid, sockname, peername)
        if why:
            self.warn_once(
                "visibility", f"PostgreSQL memory and CPU recorded as unavailable: {why}"
            )
        if first and server.in_target:
            log.info("collector monitors from the target database %s itself", self.config.dbname)

    def _close_connection(self) -> None:
        conn, self._conn, self._cursor = self._conn, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _lost(self, exc: BaseException) -> None:
        if self._conn is None:
            return
        self._warn(f"lost the connection to PostgreSQL ({first_line(exc)}); reconnecting")
        self._gap_open = True
        self._close_connection()
        self.publish(connected=False)

    def _reconnect(self, halt: threading.Event) -> bool:
        """Reconnect, trying again every reconnect_interval; False when halted meanwhile."""
        while not halt.is_set():
            try:
                self._open()
                self._warn("reconnected to PostgreSQL")
                return True
            except (PoolbenchError, psycopg.Error, OSError) as exc:
                self.warn_once(f"reconnect:{first_line(exc)}", f"still reconnecting: {exc}")
                halt.wait(self.config.reconnect_interval)
        return False

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def queries(
        self, statements: Sequence[tuple[str, Mapping[str, Any] | None]]
    ) -> list[list[tuple[Any, ...]]] | None:
        """Run statements back to back on the monitoring connection; None if it is lost.
        Only the connection's thread calls this."""
        cur = self._cursor
        if self._conn is None or cur is None:
            return None
        results = []
        for sql, params in statements:
            try:
                cur.execute(sql, params)
                results.append(cur.fetchall())
                self.own_xacts += 1
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                self._lost(exc)  # gone, or stuck past statement_timeout: start afresh
                return None
            except psycopg.Error as exc:
                self.own_rollbacks += 1
                self.warn_once(f"query:{first_line(exc)}", f"a sample failed: {exc}")
                return None
        return results

    def _sample(self) -> list[tuple[Any, ...]] | None:
        """The connections sample's rows (`server.sample_connections`); None as `queries`."""
        if self._conn is None:
            return None
        try:
            rows = sample_connections(self._conn, self._sample_params)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self._lost(exc)
            return None
        except psycopg.Error as exc:
            self.own_rollbacks += 1
            self.warn_once(f"query:{first_line(exc)}", f"a sample failed: {exc}")
            return None
        self.own_xacts += 1
        return rows

    def _query(self, sql: str, params: Mapping[str, Any] | None) -> list[tuple[Any, ...]] | None:
        results = self.queries([(sql, params)])
        return None if results is None else results[0]

    # ------------------------------------------------------------------ shared

    def publish(self, **changes: Any) -> None:
        """Change some figures of `latest()` (any thread)."""
        with self._publish_lock:
            self._latest = dataclasses.replace(self._latest, **changes)

    def write(self, rows: list[Row]) -> None:
        """Rows to samples.csv (any thread); flushed to the OS at least once a second."""
        with self._write_lock:
            if self._writer is not None and not self._writer.closed:
                self._writer.write(rows)

    def flush_soon(self) -> None:
        with self._write_lock:
            if self._writer is not None:
                self._writer.maybe_flush()

    def _churn_tick(self) -> None:
        """Once a second: flush the samples, then the churn counters' deltas, written and
        published."""
        self.flush_soon()
        if not self.connected:
            return
        read = self._churn.read(self)
        if read is None:
            return
        self.write([row(read.ts, m, d) for m, d in read.deltas.items()])
        self.publish(churn=read.rates())

    def _shut_down(self, pools: PoolsPoller | None) -> None:
        """Close everything `run` opened; a gap still open is written up to now."""
        if self._gap_open and self._last_ok_ts is not None and self._writer is not None:
            now = time.time()
            self.write([row(now, "gap", now - self._last_ok_ts, component="postgres")])
        if pools is not None:
            pools.close()
        self._close_connection()
        with self._write_lock:
            if self._writer is not None:
                self._writer.close()
        self._sweeper.close()
        self._owners.close()
        self.publish(connected=False)

    def _warn(self, message: str) -> None:
        log.warning("collector: %s", message)

    def warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            if len(self._warned) > 1000:
                self._warned.clear()
            self._warn(message)

    # ------------------------------------------------------------------ connections

    def _connections_tick(self, halt: threading.Event) -> bool:
        """One connections sample; True when it was late for a known reason (a reconnect)."""
        reconnected = self._conn is None
        if reconnected and not self._reconnect(halt):
            return True
        ts = time.time()
        t0 = time.perf_counter()
        result = self._sample()
        server = self._server
        if result is None or server is None:
            return True
        # attributed before the sample is written: none shows under a provisional name
        untagged = connections.untagged_backends(result)
        self._attribute(untagged)
        self._owners.retire({pid for pid, _ in untagged})
        counts, all_clients = connections.count(result, self._owners)
        slots_left = max(0, server.max_connections - server.reserved - all_clients)
        self.write(
            connections.rows(ts, counts, server.max_connections, slots_left) + self._close_gap(ts)
        )
        sampled = connections.figures(self._sampled, ts, counts, server.max_connections, slots_left)
        sampled["sample_ms"] = (time.perf_counter() - t0) * 1000.0
        sampled["rows_written"] = self._writer.rows_written if self._writer else 0
        self._sampled = sampled
        return reconnected

    def _attribute(self, backends: list[tuple[int, str]]) -> None:
        """Look up the owners of the backends never met before (~0.1-0.3 ms each)."""
        unknown = self._owners.unknown(backends)
        if unknown:
            self._owners.lookup(unknown)

    def _close_gap(self, ts: float) -> list[Row]:
        """The `gap` row when this is the first sample after an outage; notes a good sample."""
        rows = []
        if self._gap_open and self._last_ok_ts is not None:
            rows.append(row(ts, "gap", ts - self._last_ok_ts, component="postgres"))
            self.publish(
                gaps=self._latest.gaps + 1,
                gap_seconds=self._latest.gap_seconds + ts - self._last_ok_ts,
            )
        self._gap_open = False
        self._last_ok_ts = ts
        return rows

    # ------------------------------------------------------------------ processes

    def _offer_plan(self) -> None:
        """Plan a sweep for the sweeps' thread; skipped while it still runs the last one."""
        if self._plans.full():
            return
        plan = self._plan_sweep()
        with contextlib.suppress(queue.Full):
            self._plans.put_nowait(plan)

    def _processes_tick(self, plan: Plan) -> None:
        result = self._sweeper.sweep(plan)
        self.write(result.rows)
        changes: dict[str, Any] = {
            "processes": result.processes,
            "cpu": result.cpu,
            "postgres_visible": result.postgres_visible,
            "sweep_ms": result.wall_ms,
            "thread_cpu_s": result.thread_cpu_s,
        }
        if result.memory_stats is not None:
            changes.update(memory=result.memory, memory_ts=plan.ts)
            changes.update(self._memory_figures(result.memory_stats))
        self.publish(**changes)

    def _memory_figures(self, stats: MemoryStats) -> dict[str, Any]:
        """What the memory part of a sweep did, for `Latest` (and variant.json)."""
        latest = self._latest
        return {
            "memory_sweep_ms": stats.wall_s * 1000.0,
            "memory_interval": stats.refresh_max_s,
            "memory_reads": stats.reads,
            "memory_stale": stats.stale,
            "memory_reads_total": latest.memory_reads_total + stats.reads,
            "memory_cpu_s_by_group": stats.cpu_s_by_group,
            "memory_urgent_total": latest.memory_urgent_total + stats.urgent,
            "memory_cpu_s_total": latest.memory_cpu_s_total + stats.cpu_s,
            "memory_refresh_max_s": max(latest.memory_refresh_max_s or 0.0, stats.refresh_max_s),
        }

    def _plan_sweep(self) -> Plan:
        """What to sweep: the postmaster only while it lives, its backends labelled from SQL."""
        connected = self._conn is not None
        postmaster = self._postmaster if connected else None
        if postmaster is not None and not alive(postmaster):
            postmaster = None  # it died under us; the connection will notice
        backends: dict[int, str] = {}
        unavailable: list[str] | None = None
        if postmaster is not None:
            got = self._query(BACKENDS_SQL, {"db": self.config.dbname, "me": APPLICATION_NAME})
            if got is None:
                postmaster = None
            else:
                self._attribute([(pid, client) for pid, name, client in got if not name])
                for pid, name, client in got:
                    backends[pid] = name or self._owners.label(pid, client) or UNTAGGED
        elif connected:
            unavailable = sorted(self._sampled.get("by_name", ()))
        return Plan(
            ts=time.time(),
            app_pids=self.config.app_pids or None,
            load_pid=self._load_pid,
            postmaster=postmaster,
            backends=backends,
            unavailable_labels=unavailable,
            memory=self.config.memory,
        )

    # ------------------------------------------------------------------ pools

    def _pools_tick(self, http: PoolsPoller) -> None:
        try:
            rows, engines = http.read()
        except Exception as exc:  # any failure of the app's endpoint: skip, say so once
            self.warn_once("pools", f"{http.url} failed ({first_line(exc)}); app pools not sampled")
            return
        self.write(rows)
        self.publish(pools=tuple(dict(e) for e in engines if isinstance(e, dict)))


def _next(due: float, every: float, now: float) -> float:
    """The next time on a grid of `every` after `due` that is after `now`."""
    due += every
    if due <= now:
        due += ((now - due) // every + 1) * every
    return due
