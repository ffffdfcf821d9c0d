"""`Latest`: the newest figures, an immutable snapshot any thread may read without locking."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


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
    # the longest, in the newest sweep, that a process's memory due within memory_refresh_s
    # went unread (at most memory_refresh_s while within the CPU budget)
    memory_interval: float | None = None
    memory_reads: int | None = None  # smaps_rollup reads in the newest sweep
    memory_stale: int | None = None  # processes waiting for a re-read after it
    memory_reads_total: int = 0  # since start
    memory_urgent_total: int = 0  # of which re-reads due within memory_refresh_s
    memory_cpu_s_total: float = 0.0  # CPU seconds spent on smaps_rollup reads since start
    memory_refresh_max_s: float | None = None  # the largest memory_interval since start
    # where the collector's CPU went, since start: its threads (connection: the 10 Hz
    # samples, churn and plans; sweeps: processes and memory; pools), and the smaps_rollup
    # reads of each group of processes (postgres, app, load)
    thread_cpu_s: Mapping[str, float] = field(default_factory=dict)
    memory_cpu_s_by_group: Mapping[str, float] = field(default_factory=dict)
    rows_written: int = 0

    def footprint(self) -> dict[str, Any]:
        """What the collector did and what its memory reads cost, since start (variant.json)."""
        return {
            "samples": self.samples,
            "missed_samples": self.missed_samples,
            "memory_reads": self.memory_reads_total,
            "memory_cpu_s": round(self.memory_cpu_s_total, 4),
            "memory_refresh_max_s": (
                None if self.memory_refresh_max_s is None else round(self.memory_refresh_max_s, 3)
            ),
            "cpu_s_by_thread": {k: round(v, 3) for k, v in sorted(self.thread_cpu_s.items())},
            "memory_cpu_s_by_group": {
                k: round(v, 4) for k, v in sorted(self.memory_cpu_s_by_group.items())
            },
        }

    def get(self, key: str, default: Any = None) -> Any:
        value = getattr(self, key, None)
        return default if value is None else value

    def __getitem__(self, key: str) -> Any:
        if not hasattr(self, key):
            raise KeyError(key)
        return getattr(self, key)
