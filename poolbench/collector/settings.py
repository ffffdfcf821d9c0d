"""The collector's configuration, checked when it is built so that a bad value fails early."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import conninfo

from poolbench.config.variants import COLLECTOR_PROFILES
from poolbench.errors import PoolbenchError, first_line
from poolbench.redact import mask_url

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
    # Memory and CPU sweeps, ~0.91 s apart: a process whose memory moved is re-read at the
    # second sweep after the one that last saw it unchanged, within memory_refresh_s (2 s) even
    # when a sweep runs up to ~0.18 s late. At exactly 1 Hz two sweeps are 2 s apart, and any
    # lateness went over (2.01-2.08 s in a quiet `make bench`).
    memory_hz: float = 1.1
    app_pids: PidSource = ()  # the app's processes (their descendants are added)
    load_pid: int | None = None  # the load generator (its descendants are added)
    postmaster_pid: int | None = None  # a hint, checked; discovered when None
    pools_url: str | None = None  # the app's /debug/pools
    memory: bool = True  # PSS/USS/RSS rows; False: processes and cpu_percent only
    memory_refresh_s: float = 2.0  # a process's memory that may have moved is re-read by then
    memory_cpu_budget: float | None = 0.01  # fraction of one core for memory (smaps) reads
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
            dbname = parsed.get("dbname")  # a parsed URL's values are strings
            self.dbname = str(dbname) if dbname else None
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
        if not self.memory_refresh_s > 0:
            raise PoolbenchError(f"memory_refresh_s must be positive, not {self.memory_refresh_s}")

    def with_profile(self, profile: str) -> CollectorConfig:
        """This configuration under a named profile (`COLLECTOR_PROFILES`, a bench file's
        word)."""
        if profile not in COLLECTOR_PROFILES:
            raise PoolbenchError(
                f"unknown collector profile {profile!r}: "
                f"choose one of {', '.join(COLLECTOR_PROFILES)}"
            )
        return dataclasses.replace(self, **COLLECTOR_PROFILES[profile])

    def describe(self) -> dict[str, Any]:
        """The rates and switches that shape what is sampled (for variant.json)."""
        return {
            "connections_hz": self.connections_hz,
            "memory_hz": self.memory_hz,
            "memory": self.memory,
            "memory_refresh_s": self.memory_refresh_s,
            "memory_cpu_budget": self.memory_cpu_budget,
            "pools": self.pools_url is not None,
        }
