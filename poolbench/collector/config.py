"""The collector's configuration, checked when it is built so that a bad value fails early."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import psycopg
from psycopg import conninfo

from poolbench.errors import PoolbenchError, first_line
from poolbench.redact import mask_url

APPLICATION_NAME = "poolbench-collector"
MAX_CONNECTIONS_HZ = 100.0
MAX_MEMORY_HZ = 10.0

# the app's pids, or a function returning them (called at every sweep: the app may restart)
PidSource = Sequence[int] | Callable[[], Iterable[int]]


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
                f"malformed database URL {mask_url(self.admin_url)!r}: {first_line(exc)}"
            ) from None
        if not self.dbname:
            self.dbname = parsed.get("dbname") or None
        if not self.dbname:
            raise PoolbenchError(f"{mask_url(self.admin_url)} names no database to monitor")
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
