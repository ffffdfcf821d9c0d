"""The collector: what the database and the processes really hold, sampled over time.

It runs beside the load with its own PostgreSQL connection (``application_name =
poolbench-collector``, excluded from every count) and streams rows to ``samples.csv``
(tidy long form, docs/results.md) through `poolbench.samples.SamplesWriter`: nothing is
accumulated in memory, rows reach the OS at least once a second.

Use it as ``await run(config, stop)`` inside an event loop, or as ``CollectorThread(config)``
(``start()`` / ``latest()`` / ``stop()``) from synchronous code: it then runs its own event
loop in a background thread. ``latest()`` returns the current figures cheaply (no I/O).

Which connection it monitors from
    The collector needs a superuser or a member of ``pg_read_all_stats`` (``GRANT pg_monitor
    TO <role>``). It connects to the ``postgres`` maintenance database of the same server
    when it can (so its own session and its ~11 transactions a second stay out of the target
    database's ``pg_stat_database`` counters), else to the database in ``admin_url``. In the
    latter case, on PostgreSQL 15+, it forces its own statistics out before each churn read
    and subtracts its own transactions; on 13–14 ``xact_*`` are then unavailable (empty).

Metrics (rows of samples.csv; ``value`` empty = unavailable, never written as zero)

``connections`` (``connections_hz``, default 10 Hz; labels application_name, state,
wait_event_type)
    Client backends (``backend_type = 'client backend'``) of the target database, grouped
    by ``application_name`` × ``state``; active ones also by ``wait_event_type`` (``""`` =
    not waiting, i.e. on CPU; a NULL ``state`` is written as ``""``). A row is written
    only for groups that exist: a group absent at a sample's ``ts`` held zero connections
    (every sample has a ``connections_total`` row; see `samples.connections_wide`). The
    collector's own backend and any other ``poolbench-collector`` backend are excluded.
    Untagged backends (empty ``application_name``) are attributed to the local process
    owning the client socket: ``untagged:<process name>:<pid>``; ``untagged:<address>``
    for a client on another host; ``untagged`` when the owner cannot be found. The owner
    lookup (a scan of the host's sockets, ~30 ms of CPU) runs in a worker thread, is cached
    per client address and port, and runs at most once a second: a sample that meets a new
    untagged connection waits for it when one is due (its ``ts`` is unchanged), otherwise
    the connection shows as ``untagged`` until the next lookup (up to ~1 s).
``connections_total`` (same samples)
    The sum of the sample's ``connections`` rows.
``max_connections``, ``slots_left`` (same samples)
    The server's limit, and ``max_connections - superuser_reserved_connections -
    reserved_connections - (client backends of all databases, the collector's included)``,
    floored at 0: how many more connections a role without superuser (or
    ``pg_use_reserved_connections``) rights can open.
``sessions_new``, ``sessions_abandoned``, ``sessions_fatal``, ``xact_commit``,
``xact_rollback`` (1 Hz)
    Deltas of ``pg_stat_database`` for the target database since the previous read (the
    interval is the difference of consecutive ``ts``; ~1 s). ``sessions_new`` is the delta
    of ``sessions`` (PostgreSQL 14+; empty on 13). Backends publish these counters lazily
    (at session end, or when idle, at most about once a second on PostgreSQL 15+), so a
    connection shows up in the deltas up to ~1 s late: sums over a window are exact, a
    single delta may land a tick late. The first read after start or a reconnect, or after
    a statistics reset, is a baseline and writes no row.
``mem_uss_bytes``, ``mem_pss_bytes``, ``mem_rss_bytes``, ``processes`` (``memory_hz``,
default 1 Hz; label component, + application_name for ``postgres_backends``)
    From ``/proc/<pid>/smaps_rollup``, summed over a component's live processes (zombies
    are gone). Components: ``app`` (``app_pids`` and all their descendants),
    ``postgres_postmaster``, ``postgres_backends`` (client backends of the target
    database, per application_name, labelled as for ``connections``), ``postgres_other``
    (every other server process: checkpointer, walwriter, autovacuum, backends of other
    databases, the collector's own backend), ``postgres`` (all server processes: the
    postmaster and its children; a short-lived grandchild such as an archive_command
    shell is not swept, its CPU counts once its parent reaps it). PSS and USS are
    the honest figures; RSS counts every shared page (shared_buffers, libraries) in every
    process and is kept only to show how much summing it overstates. When PostgreSQL's
    processes are not visible from this host — the server is elsewhere, a proxy sits in
    between, a process cannot be read — the postgres rows are written with an empty value.
    Visibility is proved, not assumed: the postmaster is the parent of the backend serving
    the collector's own connection, found by that backend owning the server end of the
    collector's socket; a ``postmaster_pid`` given in the configuration must be that
    backend's parent. A memory sweep costs ~0.4 ms of CPU per process (the kernel walks
    each process's page tables), so it runs in a worker thread, and when a sweep would
    cost more than ``memory_cpu_budget`` (default 0.5 % of one core) at ``memory_hz``, the
    memory rows are written less often (every ``sweep cost / budget`` seconds);
    ``processes`` and ``cpu_percent`` keep ``memory_hz``. Set ``memory_cpu_budget=None``
    to hold ``memory_hz`` whatever it costs.
``cpu_percent`` (``memory_hz``; label component)
    Percent of one core since the previous sweep, for ``app`` (tree), ``postgres`` (all
    server processes), ``load`` (``load_pid`` and descendants) and ``collector`` (the
    threads running the collector: its event loop and its worker threads). A tree's CPU is
    the sum of user+system time of its live processes plus the time of their reaped
    children, so processes that come and go between sweeps (short-lived backends) are
    counted. Empty when the tree changed under it (a restart) or is not visible. The
    kernel counts CPU time in clock ticks (10 ms), so one sweep's figure moves in steps of
    ~1 % of a core per process at 1 Hz: average over a window. The collector's own memory
    is not a metric: in a run it shares its process with the runner.
``app_pool_size``, ``app_pool_checked_in``, ``app_pool_checked_out``,
``app_pool_overflow``, ``app_pool_max_overflow`` (1 Hz, application_name = engine name)
    From the app's ``/debug/pools`` (``pools_url``), one worker's view. A failing endpoint
    is skipped (logged once). ``app_pool_max_overflow`` is an addition to docs/results.md.
``gap`` (label component ``postgres``)
    Written with the first sample after PostgreSQL was unreachable (restarted, network):
    the seconds between the last sample before the outage and the first after it. Written
    at stop, up to the stop, if the collector is still reconnecting then.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg
from psycopg import conninfo

from poolbench.errors import PoolbenchError
from poolbench.redact import mask_text, mask_url
from poolbench.samples import Row, SamplesWriter, row

log = logging.getLogger(__name__)

APPLICATION_NAME = "poolbench-collector"
MAX_CONNECTIONS_HZ = 100.0
MAX_MEMORY_HZ = 10.0
UNTAGGED = "untagged"
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
MEMORY_METRICS = ("mem_uss_bytes", "mem_pss_bytes", "mem_rss_bytes")
POOL_FIELDS = {
    "size": "app_pool_size",
    "checked_in": "app_pool_checked_in",
    "checked_out": "app_pool_checked_out",
    "overflow": "app_pool_overflow",
    "max_overflow": "app_pool_max_overflow",
}

PidSource = Sequence[int] | Callable[[], Iterable[int]]


# --------------------------------------------------------------------------- configuration


@dataclass
class CollectorConfig:
    """What to sample, how often, and where the rows go."""

    admin_url: str
    dbname: str | None = None  # the target database; default: the one in admin_url
    out_path: str | os.PathLike[str] = "samples.csv"
    connections_hz: float = 10.0
    memory_hz: float = 1.0
    app_pids: PidSource = ()  # the app's processes (their descendants are added)
    load_pid: int | None = None  # the load generator (its descendants are added)
    postmaster_pid: int | None = None  # a hint, checked; discovered when None
    pools_url: str | None = None  # the app's /debug/pools
    memory_cpu_budget: float | None = 0.005  # fraction of one core for memory sweeps
    monitor_dbname: str | None = "postgres"  # where the collector connects; None = admin_url's
    connect_timeout: float = 5.0
    reconnect_interval: float = 0.5

    def __post_init__(self) -> None:
        try:
            parsed = conninfo.conninfo_to_dict(self.admin_url)
        except psycopg.ProgrammingError as exc:
            raise PoolbenchError(
                f"malformed database URL {_masked(self.admin_url)!r}: {_first_line(exc)}"
            ) from None
        if not self.dbname:
            self.dbname = parsed.get("dbname") or None
        if not self.dbname:
            raise PoolbenchError(f"{_masked(self.admin_url)} names no database to monitor")
        if not 0 < self.connections_hz <= MAX_CONNECTIONS_HZ:
            raise PoolbenchError(
                f"connection sampling rate {self.connections_hz} Hz is out of range: "
                f"choose more than 0 and at most {MAX_CONNECTIONS_HZ:.0f}"
            )
        if not 0 < self.memory_hz <= MAX_MEMORY_HZ:
            raise PoolbenchError(
                f"memory sampling rate {self.memory_hz} Hz is out of range: "
                f"choose more than 0 and at most {MAX_MEMORY_HZ:.0f}"
            )
        if self.memory_cpu_budget is not None and not 0 < self.memory_cpu_budget <= 1:
            raise PoolbenchError("memory_cpu_budget is a fraction of one core: 0 < budget <= 1")


def _masked(url: str) -> str:
    return mask_url(url) if "://" in url else mask_text(url)


# --------------------------------------------------------------------------- latest values


@dataclass(frozen=True)
class Latest:
    """The newest figures, for a progress display. Also readable as a mapping (`get`)."""

    ts: float | None = None  # the newest connection sample
    connected: bool = False
    total: int | None = None  # connections_total of the newest sample
    peak: int | None = None  # the highest connections_total so far
    peak_ts: float | None = None
    by_name: Mapping[str, int] = field(default_factory=dict)
    by_name_state: Mapping[tuple[str, str], int] = field(default_factory=dict)
    peak_by_name: Mapping[str, int] = field(default_factory=dict)
    max_connections: int | None = None
    slots_left: int | None = None
    churn: Mapping[str, float | None] = field(default_factory=dict)  # per second
    memory: Mapping[tuple[str, str, str], float | None] = field(default_factory=dict)
    memory_ts: float | None = None  # (metric, component, application_name) -> bytes
    processes: Mapping[tuple[str, str], float | None] = field(default_factory=dict)
    cpu: Mapping[str, float | None] = field(default_factory=dict)  # component -> % of a core
    pools: tuple[Mapping[str, Any], ...] = ()
    postgres_visible: bool | None = None
    samples: int = 0
    missed_samples: int = 0  # ticks skipped because a sample ran late
    gaps: int = 0
    gap_seconds: float = 0.0
    sample_ms: float | None = None  # wall time of the newest connection sample
    sweep_ms: float | None = None  # wall time of the newest process sweep
    memory_sweep_ms: float | None = None  # wall time of the memory part of the newest sweep
    memory_interval: float | None = None  # seconds between memory sweeps (after the budget)
    rows_written: int = 0

    def get(self, key: str, default: Any = None) -> Any:
        value = getattr(self, key, None)
        return default if value is None else value

    def __getitem__(self, key: str) -> Any:
        if not hasattr(self, key):
            raise KeyError(key)
        return getattr(self, key)


# --------------------------------------------------------------------------- processes


_PROC = Path("/proc")
_HAS_PROC = (_PROC / str(os.getpid()) / "stat").exists()
_HAS_CHILDREN = (_PROC / str(os.getpid()) / "task" / str(os.getpid()) / "children").exists()
_CLK_TCK = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0


@dataclass(slots=True)
class _Stat:
    pid: int
    ppid: int
    zombie: bool
    cpu: float  # seconds, user + system
    cpu_children: float  # seconds, reaped children (user + system)
    start: float  # an identity: pid + start time


def _parse_stat(pid: int, data: bytes) -> _Stat | None:
    if not data:
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    return _Stat(
        pid=pid,
        ppid=int(fields[1]),
        zombie=fields[0] in (b"Z", b"X"),
        cpu=(int(fields[11]) + int(fields[12])) / _CLK_TCK,
        cpu_children=(int(fields[13]) + int(fields[14])) / _CLK_TCK,
        start=float(fields[19]),
    )


def _read_stat(pid: int) -> _Stat | None:
    """One process's state and CPU times, or None when it is gone (or not visible)."""
    if _HAS_PROC:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                return _parse_stat(pid, f.read())
        except OSError:
            return None
    try:  # portable fallback (no reaped-children time on every platform)
        proc = psutil.Process(pid)
        with proc.oneshot():
            times = proc.cpu_times()
            return _Stat(
                pid=pid,
                ppid=proc.ppid(),
                zombie=proc.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD),
                cpu=times.user + times.system,
                cpu_children=getattr(times, "children_user", 0.0)
                + getattr(times, "children_system", 0.0),
                start=proc.create_time(),
            )
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


class _StatReader:
    """/proc/<pid>/stat re-read through descriptors held between sweeps: ~5 µs instead of ~21.

    A descriptor keeps pointing at the process it was opened for: once that process is gone
    a read fails, and the pid (perhaps reused) is opened afresh. At most MAX_FDS are held.
    """

    MAX_FDS = 512

    def __init__(self) -> None:
        self._fds: dict[int, int] = {}
        self._seen: set[int] = set()

    def read(self, pid: int) -> _Stat | None:
        if not _HAS_PROC:
            return _read_stat(pid)
        self._seen.add(pid)
        fd = self._fds.get(pid)
        if fd is not None:
            try:
                stat = _parse_stat(pid, os.pread(fd, 4096, 0))
            except OSError:
                stat = None
            if stat is not None:
                return stat
            os.close(self._fds.pop(pid))
        if len(self._fds) >= self.MAX_FDS:
            return _read_stat(pid)
        try:
            fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            stat = _parse_stat(pid, os.pread(fd, 4096, 0))
        except OSError:
            stat = None
        if stat is None:
            os.close(fd)
        else:
            self._fds[pid] = fd
        return stat

    def end_sweep(self) -> None:
        """Close the descriptors of processes this sweep did not look at."""
        for pid in [p for p in self._fds if p not in self._seen]:
            os.close(self._fds.pop(pid))
        self._seen = set()

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def _children(pid: int) -> list[int]:
    if _HAS_CHILDREN:
        out: list[int] = []
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            return out
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                    out.extend(int(x) for x in f.read().split())
            except OSError:
                continue
        return out
    try:
        return [p.pid for p in psutil.Process(pid).children()]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


def _tree(roots: Iterable[int], depth: int | None = None) -> list[int]:
    """Roots and their descendants (down to `depth` levels), each once, roots first."""
    seen: dict[int, None] = {}
    queue = [(pid, 0) for pid in roots if pid and pid > 0]
    while queue:
        pid, level = queue.pop(0)
        if pid in seen:
            continue
        seen[pid] = None
        if depth is None or level < depth:
            queue.extend((child, level + 1) for child in _children(pid))
    return list(seen)


class _Unreadable(Exception):
    """A live process whose memory this host may not read."""


def _read_memory(pid: int) -> tuple[int, int, int] | None:
    """(rss, pss, uss) in bytes; None when the process is gone; _Unreadable when denied."""
    if _HAS_PROC:
        try:
            with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
                data = f.read()
        except PermissionError:
            raise _Unreadable(pid) from None
        except (FileNotFoundError, ProcessLookupError):
            return None
        except OSError:  # ESRCH and friends on a dying process
            return None
        if not data:
            return None  # a zombie or kernel thread: nothing mapped
        rss = pss = uss = 0
        for line in data.splitlines():
            if line.startswith(b"Rss:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith(b"Pss:"):
                pss = int(line.split()[1]) * 1024
            elif line.startswith(b"Private_"):
                uss += int(line.split()[1]) * 1024
        return rss, pss, uss
    try:
        info = psutil.Process(pid).memory_full_info()
    except psutil.AccessDenied:
        raise _Unreadable(pid) from None
    except psutil.NoSuchProcess:
        return None
    return info.rss, getattr(info, "pss", info.uss), info.uss


def _thread_cpu(tids: Iterable[int]) -> float:
    """CPU seconds of some of this process's threads (the whole process off Linux)."""
    if not _HAS_PROC:
        times = psutil.Process().cpu_times()
        return times.user + times.system
    total = 0.0
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2 :].split()
        total += (int(fields[11]) + int(fields[12])) / _CLK_TCK
    return total


def _alive(pid: int) -> bool:
    stat = _read_stat(pid)
    return stat is not None and not stat.zombie


@dataclass
class _Plan:
    """What one process sweep looks at (built on the event loop, run in a worker)."""

    ts: float
    app_pids: PidSource | None
    load_pid: int | None
    postmaster: int | None  # None: not visible or not connected
    backends: dict[int, str]  # pid -> label, client backends of the target database
    unavailable_labels: list[str] | None  # connected but not visible: write empty values
    memory: bool


@dataclass
class _SweepResult:
    rows: list[Row]
    memory: dict[tuple[str, str, str], float | None]
    processes: dict[tuple[str, str], float | None]
    cpu: dict[str, float | None]
    postgres_visible: bool | None
    memory_cpu_s: float
    memory_wall_s: float
    wall_ms: float


class _Mem:
    """Sums of (rss, pss, uss) over a component; `None` once any process was unreadable."""

    __slots__ = ("n", "pss", "readable", "rss", "uss")

    def __init__(self) -> None:
        self.rss = self.pss = self.uss = 0
        self.n = 0
        self.readable = True

    def add(self, pid: int) -> None:
        if not self.readable:
            return
        try:
            got = _read_memory(pid)
        except _Unreadable:
            self.readable = False
            return
        if got is not None:
            self.rss += got[0]
            self.pss += got[1]
            self.uss += got[2]
            self.n += 1

    def merge(self, other: _Mem) -> None:
        self.readable = self.readable and other.readable
        self.rss += other.rss
        self.pss += other.pss
        self.uss += other.uss
        self.n += other.n

    def values(self) -> tuple[int | None, int | None, int | None]:
        if not self.readable:
            return None, None, None
        return self.uss, self.pss, self.rss


class _CpuMeter:
    """Percent of one core for a process tree, from the sum of its CPU times between sweeps."""

    def __init__(self) -> None:
        self._prev: dict[str, tuple[Any, float, float]] = {}

    def percent(self, component: str, identity: Any, cpu_s: float, now: float) -> float | None:
        prev = self._prev.get(component)
        self._prev[component] = (identity, cpu_s, now)
        if prev is None or prev[0] != identity or now <= prev[2]:
            return None
        delta = cpu_s - prev[1]
        if delta < 0:  # a process left the tree without being reaped by it
            return None
        return 100.0 * delta / (now - prev[2])

    def forget(self, component: str) -> None:
        self._prev.pop(component, None)


# --------------------------------------------------------------------------- attribution


def _local_addresses() -> set[str]:
    addresses = {"127.0.0.1", "::1"}
    with contextlib.suppress(OSError, psutil.Error):
        for entries in psutil.net_if_addrs().values():
            for entry in entries:
                if entry.family in (socket.AF_INET, socket.AF_INET6):
                    addresses.add(entry.address.split("%", 1)[0])
    return addresses


class _UntaggedResolver:
    """client address + port of an untagged backend -> label of the local process owning it."""

    MAX_ENTRIES = 4096
    MAX_ATTEMPTS = 3

    def __init__(self) -> None:
        self.labels: dict[str, str] = {}
        self.pending: set[str] = set()
        self._attempts: dict[str, int] = {}
        self._local: set[str] | None = None
        self._running = False
        self._last = 0.0

    def label(self, key: str) -> str:
        found = self.labels.get(key)
        if found is not None:
            return found
        self.pending.add(key)
        return UNTAGGED

    def due(self, now: float) -> bool:
        return bool(self.pending) and not self._running and now - self._last >= 1.0

    def resolve(self, keys: set[str]) -> dict[str, str]:
        """Runs in a worker thread: one scan of the host's sockets for every pending key."""
        if self._local is None:
            self._local = _local_addresses()
        found: dict[str, str] = {}
        wanted: dict[tuple[str, int], str] = {}
        for key in keys:
            address, _, port = key.rpartition(" ")
            if not address or port in ("", "-1"):
                found[key] = UNTAGGED  # a Unix-socket client: no address to look up
            elif address not in self._local:
                found[key] = f"{UNTAGGED}:{address}"
            else:
                wanted[(address, int(port))] = key
        if wanted:
            try:
                sockets = psutil.net_connections(kind="inet")
            except (psutil.Error, OSError):
                sockets = []
            for conn in sockets:
                if not conn.laddr or conn.pid is None:
                    continue
                key = wanted.get((conn.laddr.ip, conn.laddr.port))
                if key is None:
                    continue
                try:
                    name = psutil.Process(conn.pid).name()
                except psutil.Error:
                    continue
                found[key] = f"{UNTAGGED}:{name}:{conn.pid}"
        return found

    def apply(self, keys: set[str], found: dict[str, str]) -> None:
        if len(self.labels) > self.MAX_ENTRIES:
            self.labels.clear()
            self._attempts.clear()
        self.labels.update(found)
        for key in keys - found.keys():
            attempts = self._attempts.get(key, 0) + 1
            if attempts >= self.MAX_ATTEMPTS:
                self.labels[key] = UNTAGGED  # its owner is gone or not visible: stop looking
                self._attempts.pop(key, None)
            else:
                self._attempts[key] = attempts
        self.pending -= keys


# --------------------------------------------------------------------------- SQL

_SETUP_SQL = """
SELECT current_user, r.rolsuper, pg_has_role(current_user, 'pg_read_all_stats', 'USAGE'),
       current_setting('server_version_num')::int, current_setting('server_version'),
       current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int,
       coalesce(current_setting('reserved_connections', true), '0')::int,
       pg_backend_pid(), current_database(),
       EXISTS (SELECT 1 FROM pg_database WHERE datname = %(db)s)
FROM pg_roles r WHERE r.rolname = current_user
"""

_CONNECTIONS_SQL = """
SELECT coalesce(application_name, ''), coalesce(state, ''),
       CASE WHEN state = 'active' THEN coalesce(wait_event_type, '') ELSE '' END,
       count(*) FILTER (WHERE counted)::int,
       count(*)::int,
       CASE WHEN coalesce(application_name, '') = '' THEN
         array_agg(coalesce(host(client_addr), '') || ' ' || coalesce(client_port, -1))
           FILTER (WHERE counted)
       END
FROM (SELECT application_name, state, wait_event_type, client_addr, client_port,
             datname = %(db)s AND pid <> pg_backend_pid()
             AND application_name IS DISTINCT FROM %(me)s AS counted
      FROM pg_stat_activity WHERE backend_type = 'client backend') a
GROUP BY 1, 2, 3
"""

_BACKENDS_SQL = """
SELECT pid, coalesce(application_name, ''),
       coalesce(host(client_addr), '') || ' ' || coalesce(client_port, -1)
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND datname = %(db)s AND pid <> pg_backend_pid()
  AND application_name IS DISTINCT FROM %(me)s
"""

_CHURN_SQL = """
SELECT {sessions}, xact_commit, xact_rollback, extract(epoch FROM stats_reset)
FROM pg_stat_database WHERE datname = %(db)s
"""
_SESSIONS_14 = "sessions, sessions_abandoned, sessions_fatal"
_SESSIONS_13 = "NULL::bigint, NULL::bigint, NULL::bigint"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass
class _Server:
    """What the collector learned about the server at (re)connection."""

    user: str
    version_num: int
    version: str
    max_connections: int
    reserved: int
    backend_pid: int
    in_target: bool  # the monitoring connection is to the target database itself


# --------------------------------------------------------------------------- the collector


class Collector:
    """Samples one database. `await start()` (or let `run` do it), `await run(stop)`."""

    def __init__(self, config: CollectorConfig) -> None:
        self.config = config
        self._conn: psycopg.AsyncConnection | None = None
        self._conninfo: str | None = None
        self._server: _Server | None = None
        self._lock = asyncio.Lock()
        self._writer: SamplesWriter | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._tids: set[int] = set()
        self._latest = Latest()  # fields that change at most about once a second
        self._sampled: dict[str, Any] = {}  # fields of the newest connection sample
        self._load_pid = config.load_pid
        self._warned: set[str] = set()
        self._resolver = _UntaggedResolver()
        self._cpu = _CpuMeter()
        self._stats = _StatReader()  # used by sweeps only (one at a time, in a worker)
        # connection sampling state
        self._last_ok_ts: float | None = None
        self._gap_open = False
        self._peak_by_name: dict[str, int] = {}
        # churn state
        self._churn_prev: tuple[tuple[float | None, ...], float, float | None] | None = None
        self._own_xacts = 0  # our own committed statements (monitoring from the target db)
        self._own_rollbacks = 0
        self._own_prev: tuple[int, int] | None = None
        # process state
        self._postmaster: int | None = None
        self._given_pid_ok = False  # config.postmaster_pid was verified once
        self._next_memory = 0.0
        self._started = False

    # ------------------------------------------------------------------ public

    def latest(self) -> Latest:
        """The newest figures (cheap; callable from any thread)."""
        return dataclasses.replace(self._latest, **self._sampled)

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
            self._stats.close()
            self._publish(connected=False)
        if failure is not None:
            raise failure
        return self.latest()

    # ------------------------------------------------------------------ connection

    def _conninfos(self) -> list[str]:
        url = self.config.admin_url
        out = []
        if self.config.monitor_dbname:
            with contextlib.suppress(psycopg.ProgrammingError):
                out.append(conninfo.make_conninfo(url, dbname=self.config.monitor_dbname))
        out.append(url)
        return list(dict.fromkeys(out))

    async def _connect(self, info: str) -> psycopg.AsyncConnection:
        return await psycopg.AsyncConnection.connect(
            info,
            autocommit=True,
            connect_timeout=max(1, math.ceil(self.config.connect_timeout)),
            application_name=APPLICATION_NAME,
        )

    async def _open(self, first: bool = False) -> None:
        """Connect (maintenance db first), check rights, learn the server, find its processes."""
        candidates = [self._conninfo] if self._conninfo else self._conninfos()
        conn = None
        error: BaseException | None = None
        for info in candidates:
            try:
                conn = await self._connect(info)
                self._conninfo = info
                break
            except psycopg.Error as exc:
                error = exc
        if conn is None:
            raise PoolbenchError(
                f"cannot connect to {_masked(self.config.admin_url)}: {_first_line(error)}"
            )
        try:
            server = await self._check(conn)
        except BaseException:
            await conn.close()
            raise
        self._conn, self._server = conn, server
        self._publish(connected=True)
        self._churn_prev = None
        self._own_prev = None
        self._cpu.forget("postgres")
        loop = asyncio.get_running_loop()
        sockname, peername = _socket_ends(conn)
        self._postmaster, why = await loop.run_in_executor(
            self._executor, self._find_postmaster, server.backend_pid, sockname, peername
        )
        if why:
            self._warn_once(
                "visibility", f"PostgreSQL memory and CPU recorded as unavailable: {why}"
            )
        if first and server.in_target:
            log.info("collector monitors from the target database %s itself", self.config.dbname)

    async def _check(self, conn: psycopg.AsyncConnection) -> _Server:
        masked = _masked(self.config.admin_url)
        cur = await conn.execute(_SETUP_SQL, {"db": self.config.dbname})
        got = await cur.fetchone()
        if got is None:
            raise PoolbenchError(f"cannot read the role of the connection to {masked}")
        user, is_super, read_stats, vnum, version, maxc, su_res, res, pid, current_db, db_ok = got
        if not (is_super or read_stats):
            raise PoolbenchError(
                f"role {user!r} at {masked} cannot read other sessions in pg_stat_activity: "
                f"GRANT pg_monitor TO {user} (or use a superuser URL)"
            )
        if not db_ok:
            raise PoolbenchError(f"database {self.config.dbname!r} does not exist at {masked}")
        return _Server(
            user=user,
            version_num=vnum,
            version=version,
            max_connections=maxc,
            reserved=su_res + res,
            backend_pid=pid,
            in_target=current_db == self.config.dbname,
        )

    def _find_postmaster(
        self, backend_pid: int, sockname: Any, peername: Any
    ) -> tuple[int | None, str]:
        """(postmaster pid, "") when the server's processes are provably visible, else a reason."""
        given = self.config.postmaster_pid
        parent: int | None = None
        owns_socket = False
        try:
            backend = psutil.Process(backend_pid)
            parent = backend.ppid()
            if sockname is not None and peername is not None:
                kind = "unix" if isinstance(peername, str) else "inet"
                for c in backend.net_connections(kind=kind):
                    if kind == "unix":
                        owns_socket = owns_socket or (c.laddr == peername and bool(peername))
                    elif c.laddr and c.raddr:
                        ends = ((c.laddr.ip, c.laddr.port), (c.raddr.ip, c.raddr.port))
                        owns_socket = owns_socket or ends == (peername[:2], sockname[:2])
        except (psutil.Error, OSError):
            parent = None
        if given is not None and not (self._given_pid_ok and not _alive(given)):
            if _alive(given) and parent == given:
                self._given_pid_ok = True
                return given, ""
            return None, (
                f"postmaster pid {given} is not the parent of the backend serving the "
                f"collector (pid {backend_pid}) on this host"
            )
        if owns_socket and parent is not None and _alive(parent):
            return parent, ""
        return None, (
            f"the backend serving the collector (pid {backend_pid}) is not a local process "
            "owning the collector's connection (server on another host, in a container, or "
            "behind a proxy)"
        )

    async def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2.0)

    async def _lost(self, exc: BaseException) -> None:
        if self._conn is None:
            return
        self._warn(f"lost the connection to PostgreSQL ({_first_line(exc)}); reconnecting")
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
                self._warn_once(f"reconnect:{_first_line(exc)}", f"still reconnecting: {exc}")
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
                    self._warn_once(f"query:{_first_line(exc)}", f"a sample failed: {exc}")
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
            _CONNECTIONS_SQL, {"db": self.config.dbname, "me": APPLICATION_NAME}
        )
        if result is None:
            return True
        server = self._server
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
                await self._resolve_untagged()
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
        total = sum(counts.values())
        slots_left = max(0, server.max_connections - server.reserved - all_clients)
        rows = [
            row(ts, "connections", n, application_name=name, state=state, wait_event_type=wait)
            for (name, state, wait), n in sorted(counts.items())
        ]
        rows.append(row(ts, "connections_total", total))
        rows.append(row(ts, "max_connections", server.max_connections))
        rows.append(row(ts, "slots_left", slots_left))
        if self._gap_open and self._last_ok_ts is not None:
            rows.append(row(ts, "gap", ts - self._last_ok_ts, component="postgres"))
            self._publish(
                gaps=self._latest.gaps + 1,
                gap_seconds=self._latest.gap_seconds + ts - self._last_ok_ts,
            )
        self._gap_open = False
        self._last_ok_ts = ts
        self._write(rows)

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
            "max_connections": server.max_connections,
            "slots_left": slots_left,
            "samples": previous.get("samples", 0) + 1,
            "sample_ms": (time.perf_counter() - t0) * 1000.0,
            "rows_written": self._writer.rows_written if self._writer else 0,
        }
        return reconnected

    async def _resolve_untagged(self) -> None:
        resolver = self._resolver
        keys = set(resolver.pending)
        resolver._running = True
        try:
            found = await asyncio.get_running_loop().run_in_executor(
                self._executor, resolver.resolve, keys
            )
            resolver.apply(keys, found)
        except RuntimeError:  # the executor shut down at stop
            pass
        finally:
            resolver._running = False
            resolver._last = time.monotonic()

    # ------------------------------------------------------------------ churn

    async def _churn_tick(self) -> None:
        if self._writer is not None:
            self._writer.maybe_flush()
        server = self._server
        if self._conn is None or server is None:
            return
        params = {"db": self.config.dbname}
        sql = _CHURN_SQL.format(
            sessions=_SESSIONS_14 if server.version_num >= 140000 else _SESSIONS_13
        )
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
        if any(
            a is not None and b is not None and b < a for a, b in zip(prev[0], values, strict=True)
        ):
            return  # counters went backwards: stats reset without stats_reset moving
        deltas = [
            None if a is None or b is None else b - a for a, b in zip(prev[0], values, strict=True)
        ]
        if server.in_target:
            if own is not None and own_prev is not None:
                if deltas[3] is not None:
                    deltas[3] -= own[0] - own_prev[0]
                if deltas[4] is not None:
                    deltas[4] -= own[1] - own_prev[1]
            else:
                deltas[3] = deltas[4] = None  # cannot separate our own transactions
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
        connected = self._conn is not None
        postmaster = self._postmaster if connected else None
        if postmaster is not None and not _alive(postmaster):
            postmaster = None  # it died under us; the connection will notice
        backends: dict[int, str] = {}
        unavailable: list[str] | None = None
        if postmaster is not None:
            got = await self._query(
                _BACKENDS_SQL, {"db": self.config.dbname, "me": APPLICATION_NAME}
            )
            if got is None:
                postmaster = None
            else:
                for pid, name, key in got:
                    backends[pid] = name or self._resolver.label(key)
        elif connected:
            unavailable = sorted(self._sampled.get("by_name", ()))
        plan = _Plan(
            ts=time.time(),
            app_pids=self.config.app_pids or None,
            load_pid=self._load_pid,
            postmaster=postmaster,
            backends=backends,
            unavailable_labels=unavailable,
            memory=memory_due,
        )
        try:
            result = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._sweep, plan
            )
        except RuntimeError:
            return  # the executor shut down at stop
        self._write(result.rows)
        if memory_due:
            period = 1.0 / self.config.memory_hz
            budget = self.config.memory_cpu_budget
            if budget is not None:
                period = max(period, result.memory_cpu_s / budget)
            # a small allowance so that a sweep due "now" is not missed by a tick's jitter
            self._next_memory = now + period - 0.5 / self.config.memory_hz
        changes: dict[str, Any] = {
            "processes": result.processes,
            "cpu": result.cpu,
            "postgres_visible": result.postgres_visible,
            "sweep_ms": result.wall_ms,
        }
        if memory_due:
            changes.update(
                memory=result.memory,
                memory_ts=plan.ts,
                memory_sweep_ms=result.memory_wall_s * 1000.0,
                memory_interval=period,
            )
        self._publish(**changes)

    def _sweep(self, plan: _Plan) -> _SweepResult:
        """Runs in a worker thread: CPU and process counts always, memory when due."""
        t0 = time.perf_counter()
        rows: list[Row] = []
        memory: dict[tuple[str, str, str], float | None] = {}
        processes: dict[tuple[str, str], float | None] = {}
        cpu: dict[str, float | None] = {}
        mono = time.monotonic()
        mem_cpu = mem_wall = 0.0
        ts = plan.ts

        def emit_memory(component: str, mem: _Mem | None, app: str = "") -> None:
            values = (None, None, None) if mem is None else mem.values()
            for metric, value in zip(MEMORY_METRICS, values, strict=True):
                rows.append(row(ts, metric, value, component=component, application_name=app))
                memory[(metric, component, app)] = value

        def emit_processes(component: str, n: int | None, app: str = "") -> None:
            rows.append(row(ts, "processes", n, component=component, application_name=app))
            processes[(component, app)] = n

        def emit_cpu(component: str, value: float | None) -> None:
            rows.append(row(ts, "cpu_percent", value, component=component))
            cpu[component] = value

        def tree_stats(roots: Iterable[int], depth: int | None = None) -> tuple[list[_Stat], Any]:
            stats = [s for s in map(self._stats.read, _tree(roots, depth)) if s is not None]
            members = {s.pid for s in stats}
            identity = frozenset((s.pid, s.start) for s in stats if s.ppid not in members)
            return stats, identity

        def measure(stats: Iterable[_Stat]) -> _Mem:
            nonlocal mem_cpu, mem_wall
            c0, w0 = time.thread_time(), time.perf_counter()
            mem = _Mem()
            for s in stats:
                if not s.zombie:
                    mem.add(s.pid)
            mem_cpu += time.thread_time() - c0
            mem_wall += time.perf_counter() - w0
            return mem

        # the app's process tree
        if plan.app_pids is not None:
            roots = self._app_roots(plan.app_pids)
            stats, identity = tree_stats(roots)
            live = [s for s in stats if not s.zombie]
            emit_processes("app", len(live))
            if live:
                total = sum(s.cpu + s.cpu_children for s in stats)
                emit_cpu("app", self._cpu.percent("app", identity, total, mono))
                if plan.memory:
                    emit_memory("app", measure(live))
            else:
                self._cpu.forget("app")

        # the load generator: CPU only
        if plan.load_pid:
            stats, identity = tree_stats([plan.load_pid])
            if any(not s.zombie for s in stats):
                total = sum(s.cpu + s.cpu_children for s in stats)
                emit_cpu("load", self._cpu.percent("load", identity, total, mono))
            else:
                self._cpu.forget("load")

        # PostgreSQL's processes
        visible: bool | None = None
        if plan.postmaster is not None:
            stats, identity = tree_stats([plan.postmaster], depth=1)
            visible = bool(stats) and stats[0].pid == plan.postmaster and not stats[0].zombie
            if visible:
                groups: dict[tuple[str, str], list[_Stat]] = {}
                for s in stats:
                    if s.zombie:
                        continue
                    if s.pid == plan.postmaster:
                        key = ("postgres_postmaster", "")
                    elif s.pid in plan.backends:
                        key = ("postgres_backends", plan.backends[s.pid])
                    else:
                        key = ("postgres_other", "")
                    groups.setdefault(key, []).append(s)
                groups.setdefault(("postgres_other", ""), [])
                emit_processes("postgres", sum(len(g) for g in groups.values()))
                for (component, app), members in sorted(groups.items()):
                    emit_processes(component, len(members), app)
                total = sum(s.cpu + s.cpu_children for s in stats)
                emit_cpu("postgres", self._cpu.percent("postgres", identity, total, mono))
                if plan.memory:
                    whole = _Mem()
                    for (component, app), members in sorted(groups.items()):
                        mem = measure(members)
                        whole.merge(mem)
                        emit_memory(component, mem, app)
                    emit_memory("postgres", whole)
        if visible is False or (plan.postmaster is None and plan.unavailable_labels is not None):
            visible = False
            self._cpu.forget("postgres")
            labels = plan.unavailable_labels or sorted(set(plan.backends.values()))
            components = [("postgres", ""), ("postgres_postmaster", ""), ("postgres_other", "")]
            components += [("postgres_backends", label) for label in labels]
            for component, app in components:
                emit_processes(component, None, app)
                if plan.memory:
                    emit_memory(component, None, app)
            emit_cpu("postgres", None)

        # the collector itself
        emit_cpu(
            "collector",
            self._cpu.percent("collector", "self", _thread_cpu(self._tids), mono),
        )
        self._stats.end_sweep()

        return _SweepResult(
            rows=rows,
            memory=memory,
            processes=processes,
            cpu=cpu,
            postgres_visible=visible,
            memory_cpu_s=mem_cpu,
            memory_wall_s=mem_wall,
            wall_ms=(time.perf_counter() - t0) * 1000.0,
        )

    def _app_roots(self, source: PidSource) -> list[int]:
        try:
            pids = source() if callable(source) else source
            return [int(p) for p in pids]
        except Exception as exc:  # the caller's function: never let it stop sampling
            self._warn_once("app_pids", f"app_pids failed ({_first_line(exc)}); app not sampled")
            return []

    # ------------------------------------------------------------------ pools

    async def _pools_tick(self, http: Any) -> None:
        url = self.config.pools_url
        ts = time.time()
        try:
            response = await http.get(url)
            response.raise_for_status()
            engines = response.json()["engines"]
            rows: list[Row] = []
            for engine in engines:
                name = str(engine["name"])
                for key, metric in POOL_FIELDS.items():
                    value = engine.get(key)
                    number = (
                        float(value)
                        if isinstance(value, int | float) and not isinstance(value, bool)
                        else None
                    )
                    rows.append(row(ts, metric, number, application_name=name))
        except Exception as exc:  # any failure of the app's endpoint: skip, say so once
            self._warn_once("pools", f"{url} failed ({_first_line(exc)}); app pools not sampled")
            return
        self._write(rows)
        self._publish(pools=tuple(dict(e) for e in engines if isinstance(e, dict)))


def _socket_ends(conn: psycopg.AsyncConnection) -> tuple[Any, Any]:
    """(our address, the server's address) of the monitoring connection's socket."""
    try:
        fd = conn.pgconn.socket
        with socket.socket(fileno=os.dup(fd)) as sock:
            return sock.getsockname(), sock.getpeername()
    except (OSError, psycopg.Error):
        return None, None


# --------------------------------------------------------------------------- entry points


async def run(config: CollectorConfig, stop: asyncio.Event) -> Latest:
    """Sample until `stop` is set. Start-up problems raise PoolbenchError before any sampling."""
    return await Collector(config).run(stop)


class CollectorThread:
    """The collector on its own event loop in a background thread, for synchronous callers.

    ``start()`` returns once the collector is connected and sampling (or raises its
    PoolbenchError); ``stop()`` ends it, closes the samples file, and returns the last
    `Latest`. Usable as a context manager.
    """

    def __init__(self, config: CollectorConfig) -> None:
        self.config = config
        self.collector = Collector(config)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._started = False

    def latest(self) -> Latest:
        return self.collector.latest()

    def set_load_pid(self, pid: int | None) -> None:
        self.collector.set_load_pid(pid)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 60.0) -> CollectorThread:
        if self._thread is not None:
            raise RuntimeError("collector already started")
        self._thread = threading.Thread(target=self._main, name="poolbench-collector", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise PoolbenchError(f"the collector did not start within {timeout:.0f} s")
        if self._error is not None:
            self._thread.join()
            error, self._error = self._error, None
            raise error
        self._started = True
        return self

    def stop(self, timeout: float = 30.0) -> Latest:
        self._stopping.set()
        loop, event = self._loop, self._stop_event
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(event.set)
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise PoolbenchError(f"the collector did not stop within {timeout:.0f} s")
        if self._error is not None and self._started:
            error, self._error = self._error, None
            raise error
        return self.latest()

    def __enter__(self) -> CollectorThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._amain())
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _amain(self) -> None:
        self._stop_event = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        try:
            await self.collector.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        if self._stopping.is_set():
            self._stop_event.set()
        try:
            await self.collector.run(self._stop_event)
        except BaseException as exc:
            self._error = exc
