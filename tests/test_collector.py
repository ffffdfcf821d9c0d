"""The collector against a real PostgreSQL: exact counts, honest memory, churn, resilience."""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import psutil
import psycopg
import pytest
from conftest import fresh_database as _fresh_database
from conftest import maintenance as _maintenance
from conftest import pid_alive
from conftest import with_db as _with_db

from poolbench.collector import (
    APPLICATION_NAME,
    CollectorConfig,
    CollectorThread,
    run,
)
from poolbench.collector.churn import CHURN_METRICS, OwnStatements, subtract_own
from poolbench.collector.memory import MemoryStats, MemoryTracker
from poolbench.collector.procfs import MemoryFiles, StatReader
from poolbench.errors import PoolbenchError
from poolbench.infra.postgres import Database, embedded_server, free_port
from poolbench.results.samples import SamplesWriter, connections_wide, read_samples, row

pytestmark = pytest.mark.slow

# --------------------------------------------------------------------------- helpers


@pytest.fixture
def target(pg: Database) -> Iterator[str]:
    """A fresh database owned by the app role, so counts are exact whatever else ran before."""
    with _fresh_database(pg) as dbname:
        yield dbname


@pytest.fixture(scope="module")
def quiet_pg() -> Iterator[Database]:
    """A server without autovacuum, whose workers would add transactions to any database."""
    with embedded_server(settings={"autovacuum": "off"}) as database:
        yield database


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


class Held:
    """Connections held by the test: idle, idle in transaction, or active in pg_sleep."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conns: list[psycopg.Connection] = []
        self.sleepers: list[tuple[psycopg.Connection, threading.Thread]] = []

    def idle(self, name: str, n: int) -> None:
        for _ in range(n):
            conn = psycopg.connect(self.url, application_name=name, autocommit=True)
            conn.execute("SELECT 1")
            self.conns.append(conn)

    def idle_in_transaction(self, name: str, n: int) -> None:
        for _ in range(n):
            conn = psycopg.connect(self.url, application_name=name)
            conn.execute("BEGIN")  # psycopg opens it implicitly; explicit for the reader
            conn.execute("SELECT 1")
            self.conns.append(conn)

    def active(self, name: str, n: int) -> None:
        for _ in range(n):
            conn = psycopg.connect(self.url, application_name=name, autocommit=True)

            def sleep(c: psycopg.Connection = conn) -> None:
                with contextlib.suppress(psycopg.Error):
                    c.execute("SELECT pg_sleep(120)")

            thread = threading.Thread(target=sleep, daemon=True)
            thread.start()
            self.sleepers.append((conn, thread))

    def release(self) -> None:
        for conn, _ in self.sleepers:
            with contextlib.suppress(psycopg.Error):
                conn.cancel_safe()
        for conn, thread in self.sleepers:
            thread.join(10)
            conn.close()
        for conn in self.conns:
            conn.close()
        self.conns, self.sleepers = [], []


@contextlib.contextmanager
def held(url: str) -> Iterator[Held]:
    h = Held(url)
    try:
        yield h
    finally:
        h.release()


def _activity(admin: psycopg.Connection, dbname: str) -> dict[tuple[str, str, str], int]:
    """What pg_stat_activity says, the way the test expects it (collector left out)."""
    rows = admin.execute(
        """
        SELECT application_name, state,
               CASE WHEN state = 'active' THEN coalesce(wait_event_type, '') ELSE '' END,
               count(*)
        FROM pg_stat_activity
        WHERE datname = %s AND backend_type = 'client backend' AND application_name <> %s
        GROUP BY 1, 2, 3
        """,
        (dbname, APPLICATION_NAME),
    ).fetchall()
    return {(a, s, w): n for a, s, w, n in rows}


def _client_backends(admin: psycopg.Connection) -> int:
    return admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
    ).fetchone()[0]


def _samples_by_ts(frame: pd.DataFrame) -> dict[float, dict[tuple[str, str, str], float]]:
    """Per connection sample (every connections_total ts): its connections rows."""
    out: dict[float, dict[tuple[str, str, str], float]] = {
        ts: {} for ts in frame.loc[frame.metric == "connections_total", "ts"]
    }
    for r in frame[frame.metric == "connections"].itertuples():
        out[r.ts][(r.application_name, r.state, r.wait_event_type)] = r.value
    return out


def _pid_that_does_not_exist() -> int:
    pid = 4_000_000  # above any default pid_max
    while psutil.pid_exists(pid):
        pid += 1
    return pid


# --------------------------------------------------------------------------- samples file


def test_samples_writer_streams_and_renames_into_place(tmp_path: Path) -> None:
    path = tmp_path / "v" / "samples.csv"
    writer = SamplesWriter(path)
    writer.write(
        [
            row(1.0, "connections", 3, application_name='a,b "q"', state="idle"),
            row(1.0, "mem_pss_bytes", None, component="postgres"),
            row(1.0, "mem_uss_bytes", math.nan, component="postgres"),
            row(1.0, "cpu_percent", 12.345678, component="app"),
            row(1.0, "connections", 0, application_name="NA", state="idle"),
        ]
    )
    assert not path.exists() and writer.partial_path.exists()
    time.sleep(1.05)
    writer.write([row(2.0, "connections_total", 3)])  # a second later: flushed
    assert "connections_total" in writer.partial_path.read_text()
    partial = read_samples(tmp_path / "v", allow_partial=True)
    assert len(partial) == 6
    writer.close()
    assert path.exists() and not writer.partial_path.exists()

    frame = read_samples(path)
    assert list(frame.columns) == [
        "ts",
        "metric",
        "application_name",
        "state",
        "wait_event_type",
        "component",
        "value",
    ]
    assert frame.ts.dtype == "float64" and frame.value.dtype == "float64"
    assert frame.application_name.tolist()[0] == 'a,b "q"'
    assert frame.application_name.tolist()[4] == "NA"  # a label is never read as missing
    assert frame.value.isna().tolist() == [False, True, True, False, False, False]
    assert frame.value.tolist()[4] == 0.0  # zero stays zero
    assert frame.value.tolist()[3] == pytest.approx(12.3457)


def test_read_samples_rejects_a_foreign_file(tmp_path: Path) -> None:
    (tmp_path / "samples.csv").write_text("a,b\n1,2\n")
    with pytest.raises(PoolbenchError, match="not a poolbench samples file"):
        read_samples(tmp_path / "samples.csv")


# --------------------------------------------------------------------------- fidelity

EXPECTED_HELD = {  # name: (idle, idle in transaction, active in pg_sleep) -> 7, 11, 13
    "fid-seven": (3, 2, 2),
    "fid-eleven": (5, 3, 3),
    "fid-thirteen": (6, 4, 3),
}


@pytest.mark.parametrize(
    "monitor_dbname", ["postgres", None], ids=["from-postgres-db", "from-target-db"]
)
def test_reports_exact_counts_per_name_and_state_in_every_sample(
    pg: Database, target: str, tmp_path: Path, monitor_dbname: str | None
) -> None:
    expected: dict[tuple[str, str, str], int] = {}
    for name, (idle, iit, active) in EXPECTED_HELD.items():
        expected[(name, "idle", "")] = idle
        expected[(name, "idle in transaction", "")] = iit
        expected[(name, "active", "Timeout")] = active  # pg_sleep waits on Timeout/PgSleep
    out = tmp_path / "samples.csv"
    config = CollectorConfig(
        _with_db(pg.admin_url, target), target, out, monitor_dbname=monitor_dbname
    )
    app_url = _with_db(pg.app_url, target)
    with (
        _maintenance(pg) as admin,  # held open: it takes a slot during the whole window
        CollectorThread(config) as collector,
        held(app_url) as h,
    ):
        for name, (idle, iit, active) in EXPECTED_HELD.items():
            h.idle(name, idle)
            h.idle_in_transaction(name, iit)
            h.active(name, active)
        _wait_for(
            lambda: _activity(admin, target) == expected, 15, "the held connections to settle"
        )
        clients = _client_backends(admin)  # everyone, the collector and this check included
        t0 = time.time()
        time.sleep(1.5)
        t1 = time.time()
        latest = collector.latest()
    frame = read_samples(out)

    samples = {ts: rows for ts, rows in _samples_by_ts(frame).items() if t0 <= ts <= t1}
    assert len(samples) >= 10  # ~15 at 10 Hz
    for ts, rows in samples.items():
        assert rows == expected, f"sample at {ts}"
    window = frame[frame.ts.between(t0, t1)]
    totals = window[window.metric == "connections_total"].value
    assert totals.tolist() == [31.0] * len(samples)
    assert set(window[window.metric == "max_connections"].value) == {300.0}
    # 300 - 3 reserved for superusers - every client backend (the collector's and the check's too)
    assert set(window[window.metric == "slots_left"].value) == {297.0 - clients}
    assert APPLICATION_NAME not in set(frame.application_name)
    assert latest.by_name == {"fid-seven": 7, "fid-eleven": 11, "fid-thirteen": 13}
    assert latest.peak == 31 and latest.total == 31
    wide = connections_wide(window)
    assert wide.sum(axis=1).tolist() == [31] * len(samples)


# --------------------------------------------------------------------------- churn


def _churn_sum(path: Path, metric: str) -> float:
    try:
        frame = read_samples(path, allow_partial=True)
    except PoolbenchError:
        return 0.0
    return float(frame.loc[frame.metric == metric, "value"].sum())


@pytest.mark.parametrize(
    "monitor_dbname", ["postgres", None], ids=["from-postgres-db", "from-target-db"]
)
def test_churn_counts_every_new_session_once(
    quiet_pg: Database, tmp_path: Path, monitor_dbname: str | None
) -> None:
    with _fresh_database(quiet_pg) as target:
        _churn(quiet_pg, target, tmp_path / "samples.csv", monitor_dbname)


def _churn(pg: Database, target: str, out: Path, monitor_dbname: str | None) -> None:
    config = CollectorConfig(
        _with_db(pg.admin_url, target), target, out, monitor_dbname=monitor_dbname
    )
    app_url = _with_db(pg.app_url, target)
    with CollectorThread(config) as collector:
        _wait_for(lambda: bool(collector.latest().churn), 5, "the churn baseline")
        idle_from = time.time()
        # nothing happens in the target database: no transactions either. From the target
        # database, idle long enough for every statement of the collector to run 6 times:
        # psycopg would prepare it then, a transaction of its own that must not count.
        time.sleep(2.5 if monitor_dbname else 6.5)
        idle_to = time.time()
        for _ in range(50):
            psycopg.connect(app_url, application_name="churn").close()
        # Backends publish their counters when they end, a moment after the client closes:
        # wait for all 50 (the file is flushed at least once a second) ...
        _wait_for(lambda: _churn_sum(out, "sessions_new") >= 50, 10, "50 new sessions")
        time.sleep(2.5)  # ... and two more reads, to see that nothing is counted twice
    frame = read_samples(out)
    churn = frame[frame.metric == "sessions_new"]
    assert churn.value.sum() == 50
    assert (churn.value >= 0).all()
    for metric in ("sessions_abandoned", "sessions_fatal", "xact_rollback"):
        assert frame.loc[frame.metric == metric, "value"].sum() == 0, metric
    idle = frame[(frame.metric == "xact_commit") & frame.ts.between(idle_from + 1.0, idle_to)]
    # the collector's own ~11 statements a second never count, even from the target database
    assert len(idle) >= 1 and idle.value.tolist() == [0.0] * len(idle)


def test_own_commits_seen_a_read_late_are_carried_not_written_negative() -> None:
    """From the target database: 13 of ours ran, 12 showed; the 13th shows at the next read."""
    first = dict(zip(CHURN_METRICS, [0.0, 0.0, 0.0, 12.0, 0.0], strict=True))
    carry = subtract_own(first, OwnStatements(25, 0), OwnStatements(12, 0), OwnStatements(0, 0))
    assert [first["xact_commit"], first["xact_rollback"]] == [0.0, 0.0] and carry == (1.0, 0.0)
    second = dict(zip(CHURN_METRICS, [0.0, 0.0, 0.0, 16.0, 0.0], strict=True))  # 13 more of
    # ours, the late one, and 2 of the app's
    carry = subtract_own(second, OwnStatements(38, 0), OwnStatements(25, 0), carry)
    assert [second["xact_commit"], second["xact_rollback"]] == [2.0, 0.0] and carry == (0, 0)


# --------------------------------------------------------------------------- memory


def test_memory_of_idle_backends_is_pss_and_uss_per_name_far_below_rss(
    pg: Database, target: str, tmp_path: Path
) -> None:
    out = tmp_path / "samples.csv"
    config = CollectorConfig(
        _with_db(pg.admin_url, target),
        target,
        out,
        postmaster_pid=pg.postmaster_pid,
        app_pids=[os.getpid()],
    )
    key = ("mem_pss_bytes", "postgres_backends", "mem-idle")
    with held(_with_db(pg.app_url, target)) as h, CollectorThread(config) as collector:
        h.idle("mem-idle", 20)
        _wait_for(
            lambda: (
                collector.latest().processes.get(("postgres_backends", "mem-idle")) == 20
                and collector.latest().memory_ts is not None
                and collector.latest().memory_ts > collector.latest().ts - 0.5
                and collector.latest().memory.get(key) is not None
            ),
            10,
            "a memory sweep with the 20 backends",
        )
        time.sleep(1.2)
    frame = read_samples(out)
    mine = frame[(frame.component == "postgres_backends") & (frame.application_name == "mem-idle")]
    last = mine[mine.ts == mine[mine.metric == "mem_pss_bytes"].ts.max()]
    value = dict(zip(last.metric, last.value, strict=True))
    assert value["processes"] == 20
    pss, uss, rss = value["mem_pss_bytes"], value["mem_uss_bytes"], value["mem_rss_bytes"]
    assert 0 < uss <= pss
    assert pss < 10 * 2**20 * 20  # well under 10 MiB per idle backend
    assert rss > 3 * pss  # summed RSS counts shared memory in every backend
    visible = frame[frame.component.isin(["postgres", "postgres_postmaster", "app"])]
    assert not visible[visible.metric.str.startswith("mem_")].value.isna().any()
    cpu = frame[frame.metric == "cpu_percent"]
    assert set(cpu.component) >= {"postgres", "app", "collector"}
    assert (cpu.value.dropna() >= 0).all()


def test_memory_of_100_backends_is_reread_within_2_s_as_sessions_come_and_go_in_even_shares(
    pg: Database, target: str, tmp_path: Path
) -> None:
    """Sessions come and go all the time: the PSS they take of the pages they share with
    the others, and leave to them, passes 1 % of PostgreSQL's, so every backend's PSS may
    have moved: each is re-read within 2 s, about half of them at each 1 Hz sweep."""
    out = tmp_path / "samples.csv"
    config = CollectorConfig(
        _with_db(pg.admin_url, target),
        target,
        out,
        postmaster_pid=pg.postmaster_pid,
        memory_cpu_budget=None,  # the schedule alone (the budget has its own test)
    )
    url = _with_db(pg.app_url, target)
    stop = threading.Event()

    with psycopg.connect(url, autocommit=True) as conn:  # 8 MB that each session reads
        conn.execute("CREATE TABLE pages AS SELECT repeat('x', 200) FROM generate_series(1, 35000)")

    def session() -> psycopg.Connection:
        conn = psycopg.connect(url, application_name="churn", autocommit=True)
        conn.execute("SELECT count(*) FROM pages")  # maps the table's shared buffers
        return conn

    def churn(collector: CollectorThread) -> None:
        """Three sessions come and three go between any two sweeps, whatever the pace of
        this thread on a busy machine: the churn is counted in sweeps, not in seconds. Each
        reads 8 MB of shared buffers, so their arrivals and departures move several MB of
        PSS between PostgreSQL's processes at every sweep, well past 1 % (~1.7 MB here);
        idle sessions alone moved ~0.7 MB a sweep, past 1 % at one sweep in two or three."""
        sessions: deque[psycopg.Connection] = deque()
        swept = None
        while not stop.is_set():
            if (sweep := collector.latest().memory_ts) != swept:
                swept = sweep
                sessions.extend(session() for _ in "abc")
                while len(sessions) > 6:
                    sessions.popleft().close()
            time.sleep(0.02)
        for conn in sessions:
            conn.close()

    with held(url) as h, CollectorThread(config) as collector:
        h.idle("many", 100)
        churner = threading.Thread(target=churn, args=(collector,), daemon=True)
        churner.start()
        try:
            _wait_for(
                lambda: collector.latest().processes.get(("postgres_backends", "many")) == 100,
                20,
                "a sweep with the 100 backends",
            )
            time.sleep(2.5)  # past the sweeps that read them new
            first = collector.latest()
            intervals = []
            while len(intervals) < 16:  # 4 s
                time.sleep(0.25)
                intervals.append(collector.latest().memory_interval)
            last = collector.latest()
        finally:
            stop.set()
            churner.join(10)
    processes = last.processes[("postgres", "")]
    assert processes >= 103  # the 100, the collector's own, the server's own
    assert max(intervals) <= 2.0 + 0.35  # a sweep may run a little late
    sweeps = round(last.memory_ts - first.memory_ts)
    reads = last.memory_reads_total - first.memory_reads_total
    # every one within 2 s, so about half at each sweep: not all at once, not never
    assert sweeps >= 3 and 0.35 * processes * sweeps <= reads <= 0.75 * processes * sweeps
    frame = read_samples(out)
    many = frame[
        (frame.metric == "mem_pss_bytes")
        & (frame.application_name == "many")
        & (frame.ts >= first.memory_ts)
    ]
    assert len(many) >= sweeps and (many.value > 0).all()  # a row at every sweep
    # where its CPU went (variant.json's footprint): each thread's, and the reads' by group
    footprint = last.footprint()
    by_thread = footprint["cpu_s_by_thread"]
    assert set(by_thread) == {"connection", "sweeps"} and by_thread["sweeps"] > 0
    by_group = footprint["memory_cpu_s_by_group"]
    assert set(by_group) == {"postgres"}
    assert 0 < by_group["postgres"] <= last.memory_cpu_s_total  # the reads, of the memory part


class _Proxy:
    """A TCP relay: the server is then 'elsewhere' as far as the collector can prove."""

    def __init__(self, port: int) -> None:
        self.upstream = ("127.0.0.1", port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.listener.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.close()


def _swept(collector: CollectorThread, name: str) -> bool:
    return ("mem_pss_bytes", "postgres_backends", name) in collector.latest().memory


def _assert_postgres_memory_unavailable(frame: pd.DataFrame, name: str) -> None:
    pg_rows = frame[frame.component.str.startswith("postgres")]
    assert not pg_rows.empty
    assert pg_rows.value.isna().all(), pg_rows[pg_rows.value.notna()].head()
    mem = pg_rows[pg_rows.metric == "mem_pss_bytes"]
    assert {"postgres", "postgres_postmaster", "postgres_other"} <= set(mem.component)
    assert name in set(mem[mem.component == "postgres_backends"].application_name)
    # ... while what is visible is measured, and connections stay exact
    app = frame[(frame.component == "app") & (frame.metric == "mem_uss_bytes")]
    assert not app.empty and (app.value > 0).all()
    assert set(frame.loc[frame.metric == "connections_total", "value"]) == {4.0}


def test_memory_is_unavailable_not_zero_when_the_given_postmaster_is_not_the_server(
    pg: Database, target: str, tmp_path: Path
) -> None:
    out = tmp_path / "samples.csv"
    config = CollectorConfig(
        _with_db(pg.admin_url, target),
        target,
        out,
        postmaster_pid=_pid_that_does_not_exist(),
        app_pids=[os.getpid()],
    )
    with held(_with_db(pg.app_url, target)) as h:
        h.idle("remote-ish", 4)
        with CollectorThread(config) as collector:
            _wait_for(lambda: _swept(collector, "remote-ish"), 5, "a memory sweep")
            assert collector.latest().postgres_visible is False
    _assert_postgres_memory_unavailable(read_samples(out), "remote-ish")


def test_memory_is_unavailable_when_the_server_is_behind_a_proxy(
    pg: Database, target: str, tmp_path: Path
) -> None:
    """No pid given: the collector looks for the backend that owns its socket, and cannot."""
    proxy = _Proxy(pg.port)
    try:
        proxied = _with_db(pg.admin_url, target).replace(f":{pg.port}/", f":{proxy.port}/")
        out = tmp_path / "samples.csv"
        config = CollectorConfig(proxied, target, out, app_pids=[os.getpid()])
        with held(_with_db(pg.app_url, target)) as h:
            h.idle("behind-proxy", 4)
            with CollectorThread(config) as collector:
                _wait_for(lambda: _swept(collector, "behind-proxy"), 5, "a memory sweep")
                assert collector.latest().postgres_visible is False
        _assert_postgres_memory_unavailable(read_samples(out), "behind-proxy")
    finally:
        proxy.close()


# --------------------------------------------------------------------------- attribution


def test_untagged_backends_are_attributed_to_the_process_owning_the_socket(
    pg: Database, target: str, tmp_path: Path
) -> None:
    out = tmp_path / "samples.csv"
    config = CollectorConfig(_with_db(pg.admin_url, target), target, out)
    label = f"untagged:{psutil.Process().name()}:{os.getpid()}"
    with held(_with_db(pg.app_url, target)) as h, CollectorThread(config) as collector:
        h.idle("", 3)
        h.idle("tagged", 2)
        _wait_for(lambda: collector.latest().by_name.get(label) == 3, 5, label)
        time.sleep(0.5)
    frame = read_samples(out)
    last = frame[frame.ts == frame.loc[frame.metric == "connections_total", "ts"].max()]
    names = dict(zip(last.application_name, last.value, strict=False))
    assert names[label] == 3 and names["tagged"] == 2
    assert "" not in set(frame.loc[frame.metric == "connections", "application_name"])


UNTAGGED_CLIENT = """
import sys, time, psycopg
url, n = sys.argv[1], int(sys.argv[2])
held = []
for _ in range(n):
    held.append(psycopg.connect(url, autocommit=True))
    time.sleep(0.03)  # the connections arrive over several samples
print("ready", flush=True)
sys.stdin.read()
"""


def test_untagged_backends_keep_one_owner_from_their_first_sample(
    pg: Database, target: str, tmp_path: Path
) -> None:
    """Processes opening untagged connections at once: each is counted exactly N times, in
    every sample, under its own name only (never as a bare `untagged` meanwhile)."""
    n, clients = 4, 3
    out = tmp_path / "samples.csv"
    config = CollectorConfig(_with_db(pg.admin_url, target), target, out)
    env = {k: v for k, v in os.environ.items() if k != "PGAPPNAME"}
    url = _with_db(pg.app_url, target)
    with CollectorThread(config) as collector:
        _wait_for(lambda: collector.latest().samples >= 3, 5, "the first samples")
        start = time.time()
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", UNTAGGED_CLIENT, url, str(n)],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(clients)
        ]
        try:
            for proc in procs:
                assert proc.stdout.readline().strip() == "ready"
            ready = time.time()
            time.sleep(1.0)
            held_to = time.time()
            labels = {f"untagged:{psutil.Process(p.pid).name()}:{p.pid}" for p in procs}
        finally:
            for proc in procs:
                proc.stdin.close()
                proc.wait(10)
    frame = read_samples(out)
    samples = {ts: rows for ts, rows in _samples_by_ts(frame).items() if start <= ts <= held_to}
    totals = dict(
        frame.loc[frame.metric == "connections_total", ["ts", "value"]].itertuples(index=False)
    )
    previous: dict[str, float] = {}
    for ts, rows in sorted(samples.items()):
        per_label: dict[str, float] = {}
        for (name, _, _), count in rows.items():
            per_label[name] = per_label.get(name, 0) + count
        assert set(per_label) <= labels, f"sample at {ts}: {per_label}"  # no bare `untagged`
        assert sum(per_label.values()) == totals[ts]
        for name, count in per_label.items():
            # opening only: a count that fell would be a backend moved to another name
            assert previous.get(name, 0) <= count <= n, f"sample at {ts}: {per_label}"
        previous = per_label
        if ts > ready + 0.2:
            assert per_label == dict.fromkeys(labels, n), f"sample at {ts}: {per_label}"
    assert sum(1 for ts in samples if ts > ready + 0.2) >= 5


# --------------------------------------------------------------------------- app pools


class _PoolsHandler(BaseHTTPRequestHandler):
    body = json.dumps(
        {
            "engines": [
                {
                    "name": "before:app.db.session",
                    "kind": "async",
                    "pool_class": "AsyncAdaptedQueuePool",
                    "size": 20,
                    "checked_in": 3,
                    "checked_out": 2,
                    "overflow": -15,
                    "max_overflow": 0,
                },
                {
                    "name": "before:app.core.db",
                    "kind": "sync",
                    "pool_class": "NullPool",
                    "size": None,
                    "checked_in": None,
                    "checked_out": None,
                    "overflow": None,
                    "max_overflow": None,
                },
            ]
        }
    ).encode()

    def do_GET(self) -> None:
        if self.path != "/debug/pools":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


def test_app_pools_are_sampled_and_a_failing_endpoint_is_skipped(
    pg: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    http = ThreadingHTTPServer(("127.0.0.1", 0), _PoolsHandler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{http.server_address[1]}"
    try:
        good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
        for path, url in ((good, f"{base}/debug/pools"), (bad, f"{base}/missing")):
            config = CollectorConfig(pg.admin_url, pg.dbname, path, pools_url=url)
            with CollectorThread(config):
                time.sleep(1.5)
    finally:
        http.shutdown()
    frame = read_samples(good)
    size = frame[(frame.metric == "app_pool_size")]
    by_engine = size.groupby("application_name").value.last()
    assert by_engine["before:app.db.session"] == 20
    assert math.isnan(by_engine["before:app.core.db"])  # NullPool has no size: unavailable
    out = frame[frame.metric == "app_pool_checked_out"].groupby("application_name").value.last()
    assert out["before:app.db.session"] == 2
    failing = read_samples(bad)
    assert not failing.metric.str.startswith("app_pool").any()
    assert (failing.metric == "connections_total").sum() >= 5  # it went on sampling
    assert sum("missing" in r.getMessage() for r in caplog.records) == 1  # said once


def test_the_minimal_profile_counts_connections_once_a_second_and_nothing_costly(
    pg: Database, tmp_path: Path
) -> None:
    out = tmp_path / "samples.csv"
    config = CollectorConfig(
        pg.admin_url,
        pg.dbname,
        out,
        postmaster_pid=pg.postmaster_pid,
        app_pids=[os.getpid()],
        pools_url="http://127.0.0.1:9/debug/pools",
    ).with_profile("minimal")
    assert (config.connections_hz, config.memory, config.pools_url) == (1.0, False, None)
    assert config.describe()["pools"] is False
    with CollectorThread(config):
        time.sleep(2.6)
    frame = read_samples(out)
    assert 2 <= (frame.metric == "connections_total").sum() <= 4  # 1 Hz
    assert not frame.metric.str.startswith(("mem_", "app_pool")).any()
    assert {"processes", "cpu_percent", "connections_total"} <= set(frame.metric)
    with pytest.raises(PoolbenchError, match="unknown collector profile 'tiny'"):
        config.with_profile("tiny")


# --------------------------------------------------------------------------- resilience


def _restart(db: Database) -> None:
    """pg_ctl restart, as the system user that owns the embedded server."""
    postmaster = psutil.Process(db.postmaster_pid)
    data = Path(postmaster.cwd())
    pg_ctl = Path(postmaster.exe()).with_name("pg_ctl")
    user = psutil.Process(db.postmaster_pid).username() if os.geteuid() == 0 else None
    subprocess.run(
        [
            str(pg_ctl),
            "-D",
            str(data),
            "-l",
            str(data.parent / "server.log"),
            "-m",
            "fast",
            "-w",
            "-t",
            "30",
            "restart",
        ],
        user=user,
        check=True,
        capture_output=True,
        timeout=60,
    )


def test_reconnects_after_a_restart_and_records_the_gap(tmp_path: Path) -> None:
    out = tmp_path / "samples.csv"
    with embedded_server() as db:
        config = CollectorConfig(db.admin_url, db.dbname, out, postmaster_pid=db.postmaster_pid)
        with CollectorThread(config) as collector:
            _wait_for(lambda: collector.latest().samples >= 5, 5, "samples before the restart")
            down = time.time()
            _restart(db)
            _wait_for(lambda: collector.latest().gaps == 1, 20, "the reconnection")
            reconnected = collector.latest().samples  # from the reconnection on: a count taken
            _wait_for(  # before the restart also holds the ticks until the server went down
                lambda: (
                    collector.latest().samples >= reconnected + 10
                    and collector.latest().postgres_visible is True
                    and (collector.latest().memory_ts or 0) > down + 0.5
                ),
                10,
                "samples after the restart",
            )
            old_postmaster = db.postmaster_pid
    frame = read_samples(out)
    gaps = frame[frame.metric == "gap"]
    assert len(gaps) == 1
    gap = gaps.iloc[0]
    assert gap.component == "postgres" and 0.1 < gap.value < 30
    ticks = frame.loc[frame.metric == "connections_total", "ts"]
    after = ticks[ticks >= gap.ts]
    assert len(after) >= 10
    before_gap = ticks[ticks < gap.ts].max()
    assert gap.value == pytest.approx(gap.ts - before_gap, abs=0.002)
    mem = frame[(frame.metric == "mem_pss_bytes") & (frame.component == "postgres")]
    assert mem[mem.ts > gap.ts].value.notna().all() and (mem[mem.ts > gap.ts].value > 0).any()
    assert not pid_alive(old_postmaster)  # the restart really replaced the server


def test_an_unreachable_server_is_a_one_line_error(tmp_path: Path) -> None:
    url = f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/poolbench"
    out = tmp_path / "samples.csv"
    with pytest.raises(PoolbenchError) as caught:
        CollectorThread(CollectorConfig(url, None, out)).start()
    message = str(caught.value)
    assert "\n" not in message and "cannot connect" in message and "hunter2" not in message
    assert not out.exists() and not out.with_name("samples.csv.part").exists()


def test_a_role_that_cannot_read_other_sessions_names_the_grant(
    pg: Database, tmp_path: Path
) -> None:
    with pytest.raises(PoolbenchError, match=rf"GRANT pg_monitor TO {pg.app_user}") as caught:
        CollectorThread(CollectorConfig(pg.app_url, None, tmp_path / "samples.csv")).start()
    assert "\n" not in str(caught.value)


def test_async_run_raises_the_same_errors_and_samples_until_stopped(
    pg: Database, tmp_path: Path
) -> None:
    import asyncio

    async def main() -> None:
        stop = asyncio.Event()
        with pytest.raises(PoolbenchError, match="GRANT pg_monitor"):
            await run(CollectorConfig(pg.app_url, None, tmp_path / "x.csv"), stop)
        asyncio.get_running_loop().call_later(1.0, stop.set)
        latest = await run(CollectorConfig(pg.admin_url, None, tmp_path / "samples.csv"), stop)
        assert latest.samples >= 5

    asyncio.run(main())
    assert (read_samples(tmp_path).metric == "connections_total").sum() >= 5


def test_bad_rates_are_rejected(pg: Database, tmp_path: Path) -> None:
    with pytest.raises(PoolbenchError, match="out of range"):
        CollectorConfig(pg.admin_url, None, tmp_path / "s.csv", connections_hz=1000)
    with pytest.raises(PoolbenchError, match="names no database"):
        CollectorConfig("postgresql://postgres@127.0.0.1:5432", None, tmp_path / "s.csv")


GROWER = """
import mmap, sys, tempfile
held = []
print("ready", flush=True)
for line in sys.stdin:
    how, _, path = line.strip().partition(" ")
    if how == "anon":  # 8 MiB more resident, private
        held.append(bytearray(8 * 2**20))
    else:  # 8 MiB of a file mapped and read: resident, and counted as shared (file pages)
        f = open(path, "rb") if path else tempfile.TemporaryFile()
        if not path:
            f.write(b"x" * 8 * 2**20)
            f.flush()
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        sum(m[i] for i in range(0, len(m), 4096))
        held += [f, m]
    print("grown", flush=True)
"""


@contextlib.contextmanager
def _growers(n: int) -> Iterator[list[subprocess.Popen]]:
    """Idle processes that grow by 8 MiB each time they are told to."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", GROWER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(n)
    ]
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready"
        _wait_for(lambda: _statm_still([p.pid for p in procs]), 10, "the interpreters to settle")
        yield procs
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def _statm_still(pids: list[int]) -> bool:
    """No process's memory counters moved in 0.2 s (start-up is over)."""
    before = [Path(f"/proc/{pid}/statm").read_text() for pid in pids]
    time.sleep(0.2)
    return before == [Path(f"/proc/{pid}/statm").read_text() for pid in pids]


def _grow(proc: subprocess.Popen, how: str) -> None:
    proc.stdin.write(f"{how}\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "grown"


def test_memory_tracker_rereads_what_may_have_moved_by_its_deadline_spread_over_sweeps(
    tmp_path: Path,
) -> None:
    reader = StatReader()
    with _growers(5) as procs:
        pids = [p.pid for p in procs[:4]]  # the fifth joins later

        last: list[MemoryStats] = []

        def sweeps(tracker: MemoryTracker, *times: float) -> list[tuple[int, int]]:
            """(re-reads, values still waiting) of sweeps at these times."""
            out = []
            for now in times:
                stats = [s for s in map(reader.read, pids) if s is not None]
                last[:] = [tracker.update({"app": stats}, now)]
                out.append((last[0].reads, last[0].stale))
            return out

        tracker = MemoryTracker(refresh_s=2.0, drift=1.0)  # drift: its own test below
        # new: read at once, and again within 2 s (a new process copies its parent's
        # pages as it starts), half of them at each sweep
        assert sweeps(tracker, 100.0, 101.0, 102.0) == [(4, 0), (2, 2), (2, 0)]
        assert tracker.sum(pids).values()[0] > 0  # (uss, pss, rss) of all four
        assert sweeps(tracker, 103.0, 110.0) == [(0, 0), (0, 0)]  # nothing moved: no reads
        uss = tracker.sum(pids[:1]).uss
        _grow(procs[0], "anon")  # its own pages: only its own figures move, within 2 s
        assert sweeps(tracker, 111.0, 112.0, 120.0) == [(1, 0), (0, 0), (0, 0)]
        assert tracker.sum(pids[:1]).uss - uss >= 7 * 2**20
        rss = tracker.sum(pids[1:2]).rss
        _grow(procs[1], "file")  # shared pages: the others' PSS may move a little: within
        assert sweeps(tracker, 121.0, 122.0, 123.0, 124.0) == [(1, 3), (1, 2), (1, 1), (1, 0)]
        assert tracker.sum(pids[1:2]).rss - rss >= 7 * 2**20  # 10 s, the moved one first
        pids.append(procs[4].pid)  # one joins: read at once and again, the others by 10 s
        assert sweeps(tracker, 126.0, 127.0, 128.0, 129.0, 130.0) == [
            (2, 3),
            (1, 3),
            (1, 2),
            (1, 1),
            (1, 0),
        ]
        procs[3].kill()  # one ends: the PSS it held of shared pages is its sharers', by 10 s
        procs[3].wait()
        assert sweeps(tracker, 131.0, 132.0, 133.0, 134.0) == [(1, 3), (1, 2), (1, 1), (1, 0)]
        assert sweeps(tracker, 170.0) == [(4, 0)]  # re-read after 30 s whatever statm says

        # PSS moved between them beyond 1 % of theirs: all re-read within 2 s, not 10 s
        shared = tmp_path / "shared"
        shared.write_bytes(b"x" * 8 * 2**20)
        _grow(procs[0], f"file {shared}")  # 8 MiB of PSS, all its own
        drifting = MemoryTracker(refresh_s=2.0)
        sweeps(drifting, 200.0, 201.0, 202.0, 203.0, 210.0)  # the start-up reads
        _grow(procs[1], f"file {shared}")  # half of those 8 MiB of PSS move to procs[1]
        assert sweeps(drifting, 211.0, 212.0, 213.0) == [(1, 3), (2, 2), (2, 0)]
        procs[1].kill()  # ... and back to procs[0] when it ends
        procs[1].wait()
        assert sweeps(drifting, 214.0, 215.0) == [(2, 1), (1, 0)]

        # a budget too small for any re-read: new processes are read all the same (they
        # have no figures), their second reads wait, and the tracker says for how long
        starved = MemoryTracker(refresh_s=2.0, cpu_budget=1e-9)
        assert sweeps(starved, 300.0, 301.0, 303.0) == [(3, 0), (0, 3), (0, 3)]
        assert last[0].refresh_max_s == 3.0 and starved.sum(pids).values()[0] > 0
    reader.close()


def test_a_budget_that_holds_one_pass_keeps_every_value_within_2_s_from_the_start() -> None:
    """The first sweep reads every process (they have no figures yet) and reads them all
    again within 2 s (a new process copies its parent's pages as it starts). With a budget of
    a sixth of such a pass per second — 1 % of a core at 120 PostgreSQL backends comes to
    about that — the bucket holds 20 s of it, so the second pass is paid for at once and
    nothing waits past 2 s. (The old bucket held 2 refresh periods, 4 s: the start-up pass
    overdrew it, the second reads waited 5 s, and at 120 busy backends the lag itself kept
    values waiting 8-10 s: benchmarks/collector_cost.py.)"""
    from poolbench.collector.procfs import read_memory

    reader = StatReader()
    with _growers(8) as procs:
        pids = [p.pid for p in procs]
        costs = []
        for _ in range(3):  # what one pass over them costs here, in CPU seconds
            began = time.thread_time()
            for pid in pids:
                read_memory(pid)
            costs.append(time.thread_time() - began)
        tracker = MemoryTracker(refresh_s=2.0, cpu_budget=sorted(costs)[1] / 6, drift=1.0)
        out = []
        for now in (100.0, 101.0, 102.0):
            stats = [s for s in map(reader.read, pids) if s is not None]
            done = tracker.update({"app": stats}, now)
            out.append((done.reads, done.stale, done.refresh_max_s))
    reader.close()
    # every one read at once, then all again within 2 s, half at each sweep: none waiting
    assert out == [(8, 0, 0.0), (4, 4, 1.0), (4, 0, 2.0)]


def test_a_short_budget_rereads_what_moved_before_the_checks_that_may_wait() -> None:
    """When the budget runs short, a process that moved itself (due within 2 s) is re-read
    before the ones due by the 30 s check, even when theirs is the earlier deadline, and the
    checks leave the bucket's reserve to the urgent reads. (Before: read in the order of the
    deadlines, so under a `make bench` ramp the checks and the sharers' 10 s re-reads spent
    the budget first and the moved processes waited 5-7 s.)"""
    reader = StatReader()
    with _growers(4) as procs:
        pids = [p.pid for p in procs]

        def sweep(tracker: MemoryTracker, now: float) -> MemoryStats:
            return tracker.update({"app": [s for s in map(reader.read, pids) if s]}, now)

        tracker = MemoryTracker(refresh_s=2.0, drift=1.0)
        for now in (100.0, 101.0, 102.0, 103.0):  # read new, and again: all held
            sweep(tracker, now)
        # from now on a budget of 10 µs of CPU a second, and the bucket near empty
        tracker.cpu_budget = 1e-5
        tracker._allowance = -1.0
        checked = sweep(tracker, 140.0)  # > 30 s since read: all due by 142, none urgent
        assert (checked.reads, checked.stale, checked.refresh_max_s) == (0, 4, 0.0)
        uss = tracker.sum(pids[3:]).uss
        _grow(procs[3], "anon")  # the last one moves: urgent, its check's deadline kept
        tracker._allowance = 5e-5  # room for one read, less than the checks' reserve
        moved = sweep(tracker, 141.0)
        assert (moved.reads, moved.stale, moved.refresh_max_s) == (1, 3, 1.0)
        assert tracker.sum(pids[3:]).uss - uss >= 7 * 2**20  # the moved one was the read
    reader.close()


def test_held_smaps_rollup_descriptors_follow_their_process_until_it_ends() -> None:
    files = MemoryFiles()
    with _growers(1) as procs:
        pid = procs[0].pid
        before = files.read(pid)
        _grow(procs[0], "anon")
        after = files.read(pid)  # the same descriptor, read again: the new figures
        assert before is not None and after is not None
        assert after[2] - before[2] >= 7 * 2**20 and after[0] >= after[1] >= after[2] > 0
    assert files.read(pid) is None  # ended: nothing to read, no error
    files.close()


def test_memory_rows_keep_the_sweep_rate_while_rereads_wait_for_their_cpu_budget(
    pg: Database, target: str, tmp_path: Path
) -> None:
    out = tmp_path / "samples.csv"
    config = CollectorConfig(_with_db(pg.admin_url, target), target, out, memory_cpu_budget=1e-6)
    spin = "import time\nend = time.monotonic() + 30\nwhile time.monotonic() < end: pass"
    url = _with_db(pg.app_url, target)
    with held(url) as h, CollectorThread(config) as collector:
        h.idle("budget", 10)
        _wait_for(
            lambda: ("mem_pss_bytes", "postgres_backends", "budget") in collector.latest().memory,
            5,
            "a memory sweep with the 10 backends",
        )
        with psycopg.connect(url, application_name="grower", autocommit=True) as grower:
            grower.execute("CREATE TABLE grown AS SELECT g FROM generate_series(1, 100000) g")
            load = subprocess.Popen([sys.executable, "-c", spin])
            try:
                collector.set_load_pid(load.pid)
                time.sleep(3.2)
                latest = collector.latest()
            finally:
                load.kill()
                load.wait()
    frame = read_samples(out)
    mem = frame[(frame.metric == "mem_pss_bytes") & (frame.component == "postgres")]
    cpu = frame[(frame.metric == "cpu_percent") & (frame.component == "postgres")]
    assert len(cpu) >= 4  # still 1 Hz
    assert mem.ts.tolist() == cpu.ts.tolist()  # a memory row with every sweep, from the cache
    assert mem.value.notna().all()
    # a backend's memory moved; the budget (0.0001 % of a core) allows no re-read: the values
    # wait, and the collector says for how long (more than its 2 s refresh)
    assert latest.memory_stale and latest.memory_stale >= 10
    assert latest.memory_interval is not None and latest.memory_interval > 2.5
    spun = frame[(frame.metric == "cpu_percent") & (frame.component == "load")].value.dropna()
    assert len(spun) >= 1 and spun.max() > 10  # a busy loop, attributed to the load


def test_processes_that_keep_moving_are_reread_within_2_s_when_every_sweep_runs_late() -> None:
    """Sweeps at the default rate, each 0.08 s late (a quiet `make bench` saw up to ~0.08 s):
    of four processes whose memory moves before every sweep, those not read at the first
    sweep after a move (the even share) are re-read at the second, and that must still be
    within memory_refresh_s. At 1 Hz two late sweeps were 2.16 s apart (the quiet `make
    bench`'s before variants: 'memory refreshed within 2.1 s')."""
    config = CollectorConfig("postgresql://postgres@127.0.0.1:5432/postgres")
    period = 1 / config.memory_hz + 0.08
    reader = StatReader()
    with _growers(4) as procs:
        pids = [p.pid for p in procs]
        tracker = MemoryTracker(refresh_s=config.memory_refresh_s, drift=1.0)
        waits = []
        for k in range(8):
            if k >= 2:  # past the start-up reads: each moves before every sweep
                for proc in procs:
                    _grow(proc, "anon")
            stats = [s for s in map(reader.read, pids) if s is not None]
            waits.append(tracker.update({"app": stats}, 100.0 + k * period).refresh_max_s)
    reader.close()
    assert max(waits[3:]) > 0  # it waited: a re-read after a move
    assert max(waits) <= config.memory_refresh_s
