"""`Collector`: the async sampling loops, the monitoring connection, reconnects and gaps.

Four loops share one event loop and one connection: connections (``connections_hz``),
churn (1 Hz, also flushes the samples file), processes (``memory_hz``) and the app's
pools (1 Hz). Blocking work (process sweeps, socket-owner lookups) runs in a small thread
pool so that a connection sample is never late because of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg

from poolbench.collector.attribution import PostmasterFinder, UntaggedResolver, socket_ends
from poolbench.collector.config import APPLICATION_NAME, CollectorConfig
from poolbench.collector.latest import Latest
from poolbench.collector.pools import read_pools
from poolbench.collector.procfs import alive
from poolbench.collector.server import (
    BACKENDS_SQL,
    CONNECTIONS_SQL,
    Server,
    candidate_conninfos,
    check_server,
    churn_sql,
    connect,
)
from poolbench.collector.sweep import Plan, ProcessSweeper
from poolbench.errors import PoolbenchError, first_line
from poolbench.redact import mask_url
from poolbench.samples import Row, SamplesWriter, row

log = logging.getLogger(__package__)  # "poolbench.collector": `watch` shows its messages

QUERY_TIMEOUT_S = 10.0
CHURN_HZ = 1.0
POOLS_HZ = 1.0
CHURN_METRICS = (
    "sessions_new",
    "sessions_abandoned",
    "sessions_fatal",
    "xact_commit",
    "xact_rollback",
)

ChurnValues = tuple[float | None, ...]


class Collector:
    """Samples one database. `await start()` (or let `run` do it), `await run(stop)`."""

    def __init__(self, config: CollectorConfig) -> None:
        self.config = config
        self._conn: psycopg.AsyncConnection | None = None
        self._conninfo: str | None = None
        self._server: Server | None = None
        self._lock = asyncio.Lock()
        self._writer: SamplesWriter | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._tids: set[int] = set()
        self._latest = Latest()  # fields that change at most about once a second
        self._sampled: dict[str, Any] = {}  # fields of the newest connection sample
        self._load_pid = config.load_pid
        self._warned: set[str] = set()
        self._resolver = UntaggedResolver()
        self._finder = PostmasterFinder(config.postmaster_pid)
        self._sweeper = ProcessSweeper(self._tids, self._warn_once)  # one sweep at a time
        # connection sampling state
        self._last_ok_ts: float | None = None
        self._gap_open = False
        # churn state
        self._churn_prev: tuple[ChurnValues, float, float | None] | None = None
        self._own_xacts = 0  # our own committed statements (monitoring from the target db)
        self._own_rollbacks = 0
        self._own_prev: tuple[int, int] | None = None
        # process state
        self._postmaster: int | None = None
        self._next_memory = 0.0
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

    async def start(self) -> None:
        """Connect, check rights, open the samples file. PoolbenchError on any problem."""
        if self._started:
            return
        self._tids.add(threading.get_native_id())
        self._executor = ThreadPoolExecutor(
            max_workers=2,
            thread_name_prefix="poolbench-collector",
            initializer=lambda: self._tids.add(threading.get_native_id()),
        )
        try:
            await self._open(first=True)
            self._writer = SamplesWriter(self.config.out_path)
        except BaseException:
            await self._close_connection()
            self._executor.shutdown(wait=False)
            raise
        self._started = True

    async def run(self, stop: asyncio.Event) -> Latest:
        """Sample until `stop` is set; the samples file is then closed (renamed into place)."""
        await self.start()
        tasks = [
            asyncio.create_task(
                self._every(self.config.connections_hz, self._connections_tick, True)
            ),
            asyncio.create_task(self._every(CHURN_HZ, self._churn_tick)),
            asyncio.create_task(self._every(self.config.memory_hz, self._processes_tick)),
        ]
        http = None
        if self.config.pools_url:
            import httpx

            http = httpx.AsyncClient(timeout=1.0)
            tasks.append(asyncio.create_task(self._every(POOLS_HZ, lambda: self._pools_tick(http))))
        stopper = asyncio.create_task(stop.wait())
        failure: BaseException | None = None
        try:
            done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopper and task.exception() is not None:
                    failure = task.exception()
        finally:
            for task in [stopper, *tasks]:
                task.cancel()
            await asyncio.gather(stopper, *tasks, return_exceptions=True)
            await self._shut_down(http)
        if failure is not None:
            raise failure
        return self.latest()

    async def _shut_down(self, http: Any) -> None:
        """Close everything `run` opened; a gap still open is written up to now."""
        if self._gap_open and self._last_ok_ts is not None and self._writer is not None:
            now = time.time()
            self._write([row(now, "gap", now - self._last_ok_ts, component="postgres")])
        if http is not None:
            await http.aclose()
        await self._close_connection()
        if self._writer is not None:
            self._writer.close()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._sweeper.close()
        self._publish(connected=False)

    # ------------------------------------------------------------------ connection

    async def _open(self, first: bool = False) -> None:
        """Connect (maintenance db first), check rights, learn the server, find its processes."""
        candidates = [self._conninfo] if self._conninfo else candidate_conninfos(self.config)
        conn = None
        error: BaseException | None = None
        for info in candidates:
            try:
                conn = await connect(info, self.config.connect_timeout)
                self._conninfo = info
                break
            except psycopg.Error as exc:
                error = exc
        if conn is None:
            raise PoolbenchError(
                f"cannot connect to {mask_url(self.config.admin_url)}: {first_line(error)}"
            )
        try:
            server = await check_server(conn, self.config)
        except BaseException:
            await conn.close()
            raise
        self._conn, self._server = conn, server
        self._publish(connected=True)
        self._churn_prev = None
        self._own_prev = None
        self._sweeper.forget_postgres()
        loop = asyncio.get_running_loop()
        sockname, peername = socket_ends(conn)
        self._postmaster, why = await loop.run_in_executor(
            self._executor, self._finder.find, server.backend_pid, sockname, peername
        )
        if why:
            self._warn_once(
                "visibility", f"PostgreSQL memory and CPU recorded as unavailable: {why}"
            )
        if first and server.in_target:
            log.info("collector monitors from the target database %s itself", self.config.dbname)

    async def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2.0)

    async def _lost(self, exc: BaseException) -> None:
        if self._conn is None:
            return
        self._warn(f"lost the connection to PostgreSQL ({first_line(exc)}); reconnecting")
        self._gap_open = True
        await self._close_connection()
        self._publish(connected=False)

    async def _reconnect(self) -> None:
        while True:
            try:
                await self._open()
                self._warn("reconnected to PostgreSQL")
                return
            except (PoolbenchError, psycopg.Error, OSError) as exc:
                self._warn_once(f"reconnect:{first_line(exc)}", f"still reconnecting: {exc}")
                await asyncio.sleep(self.config.reconnect_interval)

    async def _queries(
        self, statements: Sequence[tuple[str, Mapping[str, Any] | None]]
    ) -> list[list[tuple[Any, ...]]] | None:
        """Run statements back to back on the monitoring connection; None if it is lost."""
        if self._conn is None:
            return None
        async with self._lock:
            conn = self._conn
            if conn is None:
                return None
            results = []
            for sql, params in statements:
                try:
                    async with asyncio.timeout(QUERY_TIMEOUT_S):
                        cur = await conn.execute(sql, params)
                    results.append(await cur.fetchall())
                    self._own_xacts += 1
                except (psycopg.OperationalError, psycopg.InterfaceError, TimeoutError) as exc:
                    await self._lost(exc)
                    return None
                except psycopg.Error as exc:
                    self._own_rollbacks += 1
                    self._warn_once(f"query:{first_line(exc)}", f"a sample failed: {exc}")
                    return None
            return results

    async def _query(
        self, sql: str, params: Mapping[str, Any] | None
    ) -> list[tuple[Any, ...]] | None:
        results = await self._queries([(sql, params)])
        return None if results is None else results[0]

    # ------------------------------------------------------------------ scheduling

    async def _every(self, hz: float, tick: Callable[[], Any], counts_missed: bool = False) -> None:
        """Call `tick` `hz` times a second on a fixed grid; a late tick skips, never bursts.

        A tick that returns True was late for a known reason (a reconnect): not counted.
        """
        period = 1.0 / hz
        next_t = time.monotonic()
        while True:
            excused = await tick()
            next_t += period
            now = time.monotonic()
            if now - next_t >= period:
                skipped = int((now - next_t) // period)
                next_t += skipped * period
                if counts_missed and not excused:
                    self._publish(missed_samples=self._latest.missed_samples + skipped)
            await asyncio.sleep(max(0.0, next_t - now))

    def _publish(self, **changes: Any) -> None:
        self._latest = dataclasses.replace(self._latest, **changes)

    def _write(self, rows: list[Row]) -> None:
        if self._writer is not None and not self._writer.closed:
            self._writer.write(rows)

    def _warn(self, message: str) -> None:
        log.warning("collector: %s", message)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            if len(self._warned) > 1000:
                self._warned.clear()
            self._warn(message)

    # ------------------------------------------------------------------ connections

    async def _connections_tick(self) -> bool:
        reconnected = self._conn is None
        if reconnected:
            await self._reconnect()
        ts = time.time()
        t0 = time.perf_counter()
        result = await self._query(
            CONNECTIONS_SQL, {"db": self.config.dbname, "me": APPLICATION_NAME}
        )
        if result is None:
            return True
        server = self._server
        await self._label_untagged(result)
        counts, all_clients = self._count(result)
        total = sum(counts.values())
        slots_left = max(0, server.max_connections - server.reserved - all_clients)
        rows = [
            row(ts, "connections", n, application_name=name, state=state, wait_event_type=wait)
            for (name, state, wait), n in sorted(counts.items())
        ]
        rows.append(row(ts, "connections_total", total))
        rows.append(row(ts, "max_connections", server.max_connections))
        rows.append(row(ts, "slots_left", slots_left))
        rows += self._close_gap(ts)
        self._write(rows)
        self._publish_sample(ts, t0, counts, total, server.max_connections, slots_left)
        return reconnected

    async def _label_untagged(self, result: list[tuple[Any, ...]]) -> None:
        """Queue the sample's new untagged clients; wait for their owners if a lookup is due."""
        unknown = {
            key
            for name, _, _, n, _, clients in result
            if n and name == ""
            for key in clients or ()
            if key not in self._resolver.labels
        }
        if unknown:
            self._resolver.pending |= unknown
            if self._resolver.due(time.monotonic()):
                await self._resolver.resolve_pending(self._executor)

    def _count(self, result: list[tuple[Any, ...]]) -> tuple[dict[tuple[str, str, str], int], int]:
        """(connections per (label, state, wait event type), client backends of all databases)."""
        counts: dict[tuple[str, str, str], int] = {}
        all_clients = 0
        for name, state, wait, n, n_all, clients in result:
            all_clients += n_all
            if not n:
                continue
            if name == "":
                for key in clients or ():
                    label = self._resolver.label(key)
                    counts[(label, state, wait)] = counts.get((label, state, wait), 0) + 1
            else:
                counts[(name, state, wait)] = counts.get((name, state, wait), 0) + n
        return counts, all_clients

    def _close_gap(self, ts: float) -> list[Row]:
        """The `gap` row when this is the first sample after an outage; notes a good sample."""
        rows = []
        if self._gap_open and self._last_ok_ts is not None:
            rows.append(row(ts, "gap", ts - self._last_ok_ts, component="postgres"))
            self._publish(
                gaps=self._latest.gaps + 1,
                gap_seconds=self._latest.gap_seconds + ts - self._last_ok_ts,
            )
        self._gap_open = False
        self._last_ok_ts = ts
        return rows

    def _publish_sample(
        self,
        ts: float,
        t0: float,  # when the sample began (perf_counter)
        counts: dict[tuple[str, str, str], int],
        total: int,
        max_connections: int,
        slots_left: int,
    ) -> None:
        by_name: dict[str, int] = {}
        by_name_state: dict[tuple[str, str], int] = {}
        for (name, state, _), n in counts.items():
            by_name[name] = by_name.get(name, 0) + n
            by_name_state[(name, state)] = by_name_state.get((name, state), 0) + n
        previous = self._sampled
        peak_by_name = previous.get("peak_by_name", {})
        if any(n > peak_by_name.get(name, 0) for name, n in by_name.items()):
            peak_by_name = {**peak_by_name}
            for name, n in by_name.items():
                peak_by_name[name] = max(n, peak_by_name.get(name, 0))
        peak, peak_ts = previous.get("peak"), previous.get("peak_ts")
        if peak is None or total > peak:
            peak, peak_ts = total, ts
        # One new dict per sample, swapped in whole: `latest()` merges it from any thread.
        self._sampled = {
            "ts": ts,
            "total": total,
            "by_name": by_name,
            "by_name_state": by_name_state,
            "peak_by_name": peak_by_name,
            "peak": peak,
            "peak_ts": peak_ts,
            "max_connections": max_connections,
            "slots_left": slots_left,
            "samples": previous.get("samples", 0) + 1,
            "sample_ms": (time.perf_counter() - t0) * 1000.0,
            "rows_written": self._writer.rows_written if self._writer else 0,
        }

    # ------------------------------------------------------------------ churn

    async def _churn_tick(self) -> None:
        if self._writer is not None:
            self._writer.maybe_flush()
        server = self._server
        if self._conn is None or server is None:
            return
        params = {"db": self.config.dbname}
        sql = churn_sql(server.version_num)
        own: tuple[int, int] | None = None
        ts = time.time()
        if server.in_target and server.version_num >= 150000:
            # Our own statements count in this database: publish them (the flush happens
            # before the server answers), read, and subtract what we ran since the last read.
            # The lock is held across both, so no other statement of ours slips between.
            results = await self._queries(
                [("SELECT pg_stat_force_next_flush()", None), (sql, params)]
            )
            got = None if results is None else results[1]
            own = (self._own_xacts - 1, self._own_rollbacks)  # minus this read itself
        else:
            got = await self._query(sql, params)
        if not got:
            return
        *values, reset = got[0]
        values = tuple(None if v is None else float(v) for v in values)
        prev, self._churn_prev = self._churn_prev, (values, ts, reset)
        own_prev, self._own_prev = self._own_prev, own
        if prev is None or prev[2] != reset:
            return  # a baseline: start, reconnect, or a statistics reset
        deltas = _churn_deltas(prev[0], values)
        if deltas is None:
            return  # counters went backwards: stats reset without stats_reset moving
        if server.in_target:
            _subtract_own(deltas, own, own_prev)
        self._write([row(ts, m, d) for m, d in zip(CHURN_METRICS, deltas, strict=True)])
        interval = ts - prev[1]
        self._publish(
            churn={
                m: None if d is None else d / interval
                for m, d in zip(CHURN_METRICS, deltas, strict=True)
            }
        )

    # ------------------------------------------------------------------ processes

    async def _processes_tick(self) -> None:
        now = time.monotonic()
        memory_due = now >= self._next_memory
        plan = await self._plan_sweep(memory_due)
        try:
            result = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._sweeper.sweep, plan
            )
        except RuntimeError:
            return  # the executor shut down at stop
        self._write(result.rows)
        changes: dict[str, Any] = {
            "processes": result.processes,
            "cpu": result.cpu,
            "postgres_visible": result.postgres_visible,
            "sweep_ms": result.wall_ms,
        }
        if memory_due:
            period = 1.0 / self.config.memory_hz
            budget = self.config.memory_cpu_budget
            if budget is not None:
                period = max(period, result.memory_cpu_s / budget)
            # a small allowance so that a sweep due "now" is not missed by a tick's jitter
            self._next_memory = now + period - 0.5 / self.config.memory_hz
            changes.update(
                memory=result.memory,
                memory_ts=plan.ts,
                memory_sweep_ms=result.memory_wall_s * 1000.0,
                memory_interval=period,
            )
        self._publish(**changes)

    async def _plan_sweep(self, memory_due: bool) -> Plan:
        """What to sweep: the postmaster only while it lives, its backends labelled from SQL."""
        connected = self._conn is not None
        postmaster = self._postmaster if connected else None
        if postmaster is not None and not alive(postmaster):
            postmaster = None  # it died under us; the connection will notice
        backends: dict[int, str] = {}
        unavailable: list[str] | None = None
        if postmaster is not None:
            got = await self._query(
                BACKENDS_SQL, {"db": self.config.dbname, "me": APPLICATION_NAME}
            )
            if got is None:
                postmaster = None
            else:
                for pid, name, key in got:
                    backends[pid] = name or self._resolver.label(key)
        elif connected:
            unavailable = sorted(self._sampled.get("by_name", ()))
        return Plan(
            ts=time.time(),
            app_pids=self.config.app_pids or None,
            load_pid=self._load_pid,
            postmaster=postmaster,
            backends=backends,
            unavailable_labels=unavailable,
            memory=memory_due,
        )

    # ------------------------------------------------------------------ pools

    async def _pools_tick(self, http: Any) -> None:
        url = self.config.pools_url
        try:
            rows, engines = await read_pools(http, url)
        except Exception as exc:  # any failure of the app's endpoint: skip, say so once
            self._warn_once("pools", f"{url} failed ({first_line(exc)}); app pools not sampled")
            return
        self._write(rows)
        self._publish(pools=tuple(dict(e) for e in engines if isinstance(e, dict)))


def _churn_deltas(before: ChurnValues, after: ChurnValues) -> list[float | None] | None:
    """Counter deltas (None where a counter is unavailable); None when any went backwards."""
    pairs = list(zip(before, after, strict=True))
    if any(a is not None and b is not None and b < a for a, b in pairs):
        return None
    return [None if a is None or b is None else b - a for a, b in pairs]


def _subtract_own(
    deltas: list[float | None], own: tuple[int, int] | None, own_prev: tuple[int, int] | None
) -> None:
    """Monitoring from the target database: take our own transactions out of xact_*."""
    if own is not None and own_prev is not None:
        if deltas[3] is not None:
            deltas[3] -= own[0] - own_prev[0]
        if deltas[4] is not None:
            deltas[4] -= own[1] - own_prev[1]
    else:
        deltas[3] = deltas[4] = None  # cannot separate our own transactions
