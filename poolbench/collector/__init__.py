"""The collector: what the database and the processes really hold, sampled over time.

It runs beside the load with its own PostgreSQL connection (``application_name =
poolbench-collector``, excluded from every count) and streams rows to ``samples.csv``
(tidy long form, docs/results.md) through `poolbench.results.samples.SamplesWriter`: nothing is
accumulated in memory, rows reach the OS at least once a second.

Use it as ``CollectorThread(config)`` (``start()`` / ``latest()`` / ``stop()``): it samples
in three background threads of its own (the monitoring connection's queries, the process
sweeps, the app's pools), with blocking calls rather than an event loop, which halves what
each 10 Hz sample costs. ``await run(config, stop)`` does the same from inside an event
loop. ``latest()`` returns the current figures cheaply (no I/O).

Modules: `config` (CollectorConfig, its checks and profiles), `server` (the SQL and the
checks of the monitoring connection), `core` (Collector: its threads, reconnects, gaps),
`connections` (one connections sample), `churn` (pg_stat_database deltas), `sweep` (the
per-component process sweep), `memory` (which processes' memory to re-read),
`procfs` (reading /proc), `attribution` (socket owners: untagged clients, the postmaster),
`sockets` (the host's TCP sockets and their holders), `pools` (the app's /debug/pools),
`latest` (Latest), `thread` (run, CollectorThread).

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
    for a client on another host; ``untagged`` when the owner cannot be found (a
    Unix-socket client, a process this host may not look into, a client already gone).
    A backend is attributed once, by its pid, when a sample first meets it, before that
    sample is written (its ``ts`` is unchanged; the lookup asks the kernel for that one
    socket, ~0.1-0.3 ms, in the connection thread), and keeps that name for its life: it is
    never counted under two names, nor shown as ``untagged`` while its owner is found.
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
default 1.1 Hz; label component, + application_name for ``postgres_backends``)
    From ``/proc/<pid>/smaps_rollup``: at every sweep, the sum over a component's live
    processes (zombies are gone) of each process's latest figures, re-read when they may
    have moved (below). Components: ``app`` (``app_pids`` and all their descendants),
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
    backend's parent. Reading smaps_rollup costs ~0.1-0.4 ms of CPU per PostgreSQL process
    (the kernel walks its page tables; more for an app with GiBs mapped), so a process is
    not re-read at every sweep but when its figures may have moved (`memory`): its
    ``statm`` counters (~1 µs) moved, or a process of its group started or ended, within
    ``memory_refresh_s`` (2 s); another process of its group mapped shared pages, within
    10 s (2 s once the PSS so moved may exceed 1 % of the group's); whatever happened,
    within 30 s. Re-reads are spread over sweeps and stay within ``memory_cpu_budget``
    (default 1 % of one core, on average over 20 s: a pass over every process may be spent
    at once; ``None``: no limit): beyond it values wait longer, and the
    collector reports how long (``memory_refresh_max_s`` in variant.json). ``memory=False``
    (the ``minimal`` profile) writes no memory rows.
``cpu_percent`` (``memory_hz``; label component)
    Percent of one core since the previous sweep, for ``app`` (tree), ``postgres`` (all
    server processes), ``load`` (``load_pid`` and descendants) and ``collector`` (the
    threads running the collector: its event loop and its worker threads). A tree's CPU is
    the sum of user+system time of its live processes plus the time of their reaped
    children, so processes that come and go between sweeps (short-lived backends) are
    counted. Empty when the tree changed under it (a restart) or is not visible. The
    kernel counts CPU time in clock ticks (10 ms), so one sweep's figure moves in steps of
    ~1 % of a core per process at ~1 Hz: average over a window. The collector's own memory
    is not a metric: in a run it shares its process with the runner.
``app_pool_size``, ``app_pool_checked_in``, ``app_pool_checked_out``,
``app_pool_overflow``, ``app_pool_max_overflow`` (1 Hz, application_name = engine name)
    From the app's ``/debug/pools`` (``pools_url``), one worker's view, over a kept-alive
    connection from a worker thread. A failing endpoint is skipped (logged once).
    ``app_pool_max_overflow`` is an addition to docs/results.md.
``gap`` (label component ``postgres``)
    Written with the first sample after PostgreSQL was unreachable (restarted, network):
    the seconds between the last sample before the outage and the first after it. Written
    at stop, up to the stop, if the collector is still reconnecting then.

Profiles (`CollectorConfig.with_profile`, a variant's ``collector`` in the bench file)
    ``default``: the rates above. ``minimal``: connections at 1 Hz, no memory reads, no
    pools polling (processes and CPU stay at ``memory_hz``): the lightest instrument that
    still counts connections, to measure what the default one costs the system it observes.

What it costs
    1.1-2.0 % of one core during the load of a `make bench` on a slow 2-core machine (its
    ``cpu_percent`` row; ~1.2 % at ~40 PostgreSQL processes, 1.8-2.0 % at ~120): the 10 Hz
    connections sample (~0.15-0.35 ms of CPU each through libpq directly, ~0.3-0.5 % of a
    core with churn and sweep plans), the memory re-reads (~0.3-0.4 ms per PostgreSQL
    process re-read under load; at 120 busy backends ~20 a second, the whole 1 % budget;
    none while nothing moves), the 1.1 Hz process sweep (~2-3 ms at 120 processes,
    ~0.3-0.4 %) and the app's pools (~0.07 %). variant.json records the reads and their
    CPU, each thread's CPU and the reads' by group (`Latest.footprint`);
    benchmarks/collector_cost.py the breakdown.
"""

from typing import Any

from poolbench.collector.settings import (
    MAX_CONNECTIONS_HZ,
    MAX_MEMORY_HZ,
    CollectorConfig,
    PidSource,
)
from poolbench.results.names import APPLICATION_NAME

# The running parts are imported on first use (PEP 562): the report and the analysis import
# this package for a name or two (APPLICATION_NAME, attribution) and need none of them.
_LAZY = {
    "Collector": "poolbench.collector.core",
    "Latest": "poolbench.collector.latest",
    "CollectorThread": "poolbench.collector.thread",
    "run": "poolbench.collector.thread",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "APPLICATION_NAME",
    "MAX_CONNECTIONS_HZ",
    "MAX_MEMORY_HZ",
    "Collector",
    "CollectorConfig",
    "CollectorThread",
    "Latest",
    "PidSource",
    "run",
]
