"""The collector: what the database and the processes really hold, sampled over time.

It runs beside the load with its own PostgreSQL connection (``application_name =
poolbench-collector``, excluded from every count) and streams rows to ``samples.csv``
(tidy long form, docs/results.md) through `poolbench.samples.SamplesWriter`: nothing is
accumulated in memory, rows reach the OS at least once a second.

Use it as ``await run(config, stop)`` inside an event loop, or as ``CollectorThread(config)``
(``start()`` / ``latest()`` / ``stop()``) from synchronous code: it then runs its own event
loop in a background thread. ``latest()`` returns the current figures cheaply (no I/O).

Modules: `config` (CollectorConfig and its checks), `server` (the SQL and the checks of the
monitoring connection), `core` (Collector: sampling loops, reconnects, gaps), `sweep` (the
per-component process sweep), `procfs` (reading /proc), `attribution` (socket owners:
untagged clients, the postmaster), `pools` (the app's /debug/pools), `latest` (Latest),
`thread` (run, CollectorThread).

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

from poolbench.collector.config import (
    APPLICATION_NAME,
    MAX_CONNECTIONS_HZ,
    MAX_MEMORY_HZ,
    CollectorConfig,
    PidSource,
)
from poolbench.collector.core import Collector
from poolbench.collector.latest import Latest
from poolbench.collector.thread import CollectorThread, run

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
