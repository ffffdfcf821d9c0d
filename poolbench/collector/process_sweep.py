"""The process sweep: CPU, process counts and memory of each component, in a worker thread.

A sweep reads /proc for every process of the app, the load generator, PostgreSQL and the
collector itself; that is blocking work of up to milliseconds, so the event loop only plans
it (`Plan`) and a worker thread runs it (`ProcessSweeper.sweep`). Memory figures come from
a `MemoryTracker`, which re-reads a process's smaps_rollup only when it may have changed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from poolbench.collector.memory import MemoryStats, MemorySum, MemoryTracker
from poolbench.collector.procfs import CpuMeter, Stat, StatReader, thread_cpu, tree
from poolbench.collector.settings import PidSource
from poolbench.errors import first_line
from poolbench.results.samples import Row, row

MEMORY_METRICS = ("mem_uss_bytes", "mem_pss_bytes", "mem_rss_bytes")
# A function giving the app's pids may be costly (psutil walks every process of the host to
# find children): it is asked again only when one of its pids dies, or after this long.
APP_PIDS_REFRESH_S = 30.0


@dataclass
class Plan:
    """What one process sweep looks at (built on the event loop, run in a worker)."""

    ts: float
    app_pids: PidSource | None
    load_pid: int | None
    postmaster: int | None  # None: not visible or not connected
    backends: dict[int, str]  # pid -> label, client backends of the target database
    unavailable_labels: list[str] | None  # connected but not visible: write empty values
    memory: bool


@dataclass
class SweepResult:
    """One sweep's rows, and the same figures keyed for `Latest`."""

    ts: float
    rows: list[Row] = field(default_factory=list)
    memory: dict[tuple[str, str, str], float | None] = field(default_factory=dict)
    processes: dict[tuple[str, str], float | None] = field(default_factory=dict)
    cpu: dict[str, float | None] = field(default_factory=dict)
    postgres_visible: bool | None = None
    memory_stats: MemoryStats | None = None  # what the memory part did and cost
    thread_cpu_s: dict[str, float] = field(default_factory=dict)  # the collector's, by thread
    wall_ms: float = 0.0
    # for the memory part: processes that share memory (per group), and each component's
    groups: dict[str, list[Stat]] = field(default_factory=dict)
    parts: list[tuple[str, str, list[Stat]]] = field(default_factory=list)  # (comp, app, …)

    def emit_memory(self, component: str, mem: MemorySum | None, app: str = "") -> None:
        values = (None, None, None) if mem is None else mem.values()
        for metric, value in zip(MEMORY_METRICS, values, strict=True):
            self.rows.append(row(self.ts, metric, value, component=component, application_name=app))
            self.memory[(metric, component, app)] = value

    def emit_processes(self, component: str, n: int | None, app: str = "") -> None:
        self.rows.append(row(self.ts, "processes", n, component=component, application_name=app))
        self.processes[(component, app)] = n

    def emit_cpu(self, component: str, value: float | None) -> None:
        self.rows.append(row(self.ts, "cpu_percent", value, component=component))
        self.cpu[component] = value


def _cpu_seconds(stats: Iterable[Stat]) -> float:
    """A tree's CPU time: its live processes' own, plus their reaped children's."""
    return sum(s.cpu + s.cpu_children for s in stats)


class ProcessSweeper:
    """Sweeps one at a time (the stat descriptors, CPU baselines and memory are not shared)."""

    def __init__(
        self,
        tids: Mapping[int, str],
        warn_once: Callable[[str, str], None],
        memory: MemoryTracker | None = None,
    ) -> None:
        self._tids = tids  # the collector's threads (tid -> name), for its own CPU
        self._warn_once = warn_once
        self._cpu = CpuMeter()
        self._stats = StatReader()
        self._memory = memory  # None: no memory figures at all
        self._app_pids: tuple[list[int], float] | None = None  # last answer, and when

    def forget_postgres(self) -> None:
        """After a reconnection the server may be another one: no CPU delta across it."""
        self._cpu.forget("postgres")

    def close(self) -> None:
        self._stats.close()
        if self._memory is not None:
            self._memory.close()

    def sweep(self, plan: Plan) -> SweepResult:
        """Runs in a worker thread: CPU and process counts, and memory when planned."""
        t0 = time.perf_counter()
        out = SweepResult(ts=plan.ts)
        now = time.monotonic()
        if plan.app_pids is not None:
            app = self._sweep_app(plan.app_pids, out, now)
            if app:
                out.groups["app"] = app
                out.parts.append(("app", "", app))
        if plan.load_pid:
            self._sweep_load(plan.load_pid, out, now)
        out.postgres_visible = self._sweep_postgres(plan, out, now)
        by_thread = thread_cpu(list(self._tids))
        out.thread_cpu_s = {self._tids.get(tid, str(tid)): s for tid, s in by_thread.items()}
        collector_cpu = self._cpu.percent("collector", "self", sum(by_thread.values()), now)
        out.emit_cpu("collector", collector_cpu)
        self._stats.end_sweep()
        if plan.memory and self._memory is not None:
            out.memory_stats = self._memory.update(out.groups, now)
            self._emit_memory(out)
        out.wall_ms = (time.perf_counter() - t0) * 1000.0
        return out

    def _emit_memory(self, out: SweepResult) -> None:
        """Each component's sum of its processes' latest figures; PostgreSQL's whole too."""
        assert self._memory is not None
        whole: MemorySum | None = None
        for component, app, members in out.parts:
            mem = self._memory.sum(s.pid for s in members)
            out.emit_memory(component, mem, app)
            if component.startswith("postgres_"):
                whole = whole or MemorySum()
                whole.merge(mem)
        if whole is not None:
            out.emit_memory("postgres", whole)

    def _tree_stats(self, roots: Iterable[int], depth: int | None = None) -> tuple[list[Stat], Any]:
        """The tree's processes, and its identity: its roots' (pid, start time)."""
        stats = [s for s in map(self._stats.read, tree(roots, depth)) if s is not None]
        members = {s.pid for s in stats}
        identity = frozenset((s.pid, s.start) for s in stats if s.ppid not in members)
        return stats, identity

    def _sweep_app(self, app_pids: PidSource, out: SweepResult, now: float) -> list[Stat]:
        """The app's tree: CPU and process count; its live processes for memory."""
        stats, identity = self._tree_stats(self._app_roots(app_pids, now))
        live = [s for s in stats if not s.zombie]
        out.emit_processes("app", len(live))
        if not live:
            self._cpu.forget("app")
            return []
        out.emit_cpu("app", self._cpu.percent("app", identity, _cpu_seconds(stats), now))
        return live

    def _app_roots(self, source: PidSource, now: float) -> list[int]:
        """The app's pids (its tree is walked from them): a function is asked again only
        when one of the pids it gave has died, or every APP_PIDS_REFRESH_S."""
        cached = self._app_pids
        fresh = cached is not None and now - cached[1] < APP_PIDS_REFRESH_S
        if callable(source) and cached is not None and fresh and self._all_alive(cached[0]):
            return cached[0]
        try:
            pids = [int(p) for p in (source() if callable(source) else source)]
        except Exception as exc:  # the caller's function: never let it stop sampling
            self._warn_once("app_pids", f"app_pids failed ({first_line(exc)}); app not sampled")
            return []
        self._app_pids = (pids, now) if pids else None
        return pids

    def _all_alive(self, pids: list[int]) -> bool:
        return all((s := self._stats.read(pid)) is not None and not s.zombie for pid in pids)

    def _sweep_load(self, load_pid: int, out: SweepResult, now: float) -> None:
        """The load generator: CPU only."""
        stats, identity = self._tree_stats([load_pid])
        if any(not s.zombie for s in stats):
            out.emit_cpu("load", self._cpu.percent("load", identity, _cpu_seconds(stats), now))
        else:
            self._cpu.forget("load")

    def _sweep_postgres(self, plan: Plan, out: SweepResult, now: float) -> bool | None:
        """PostgreSQL's processes; True/False = visible or not, None = not connected."""
        visible: bool | None = None
        if plan.postmaster is not None:
            visible = self._sweep_visible_postgres(plan, out, now)
        if visible is False or (plan.postmaster is None and plan.unavailable_labels is not None):
            self._postgres_unavailable(plan, out)
            return False
        return visible

    def _sweep_visible_postgres(self, plan: Plan, out: SweepResult, now: float) -> bool:
        postmaster = plan.postmaster
        if postmaster is None:  # the caller sweeps it only when visible
            return False
        stats, identity = self._tree_stats([postmaster], depth=1)
        if not (stats and stats[0].pid == postmaster and not stats[0].zombie):
            return False
        by_part: dict[tuple[str, str], list[Stat]] = {}
        for s in stats:
            if s.zombie:
                continue
            if s.pid == postmaster:
                key = ("postgres_postmaster", "")
            elif s.pid in plan.backends:
                key = ("postgres_backends", plan.backends[s.pid])
            else:
                key = ("postgres_other", "")
            by_part.setdefault(key, []).append(s)
        by_part.setdefault(("postgres_other", ""), [])
        out.emit_processes("postgres", sum(len(g) for g in by_part.values()))
        for (component, app), members in sorted(by_part.items()):
            out.emit_processes(component, len(members), app)
            out.parts.append((component, app, members))
        out.emit_cpu("postgres", self._cpu.percent("postgres", identity, _cpu_seconds(stats), now))
        out.groups["postgres"] = [s for members in by_part.values() for s in members]
        return True

    def _postgres_unavailable(self, plan: Plan, out: SweepResult) -> None:
        """Empty values, never zeros: the processes exist, this host cannot see them."""
        self._cpu.forget("postgres")
        labels = plan.unavailable_labels or sorted(set(plan.backends.values()))
        components = [("postgres", ""), ("postgres_postmaster", ""), ("postgres_other", "")]
        components += [("postgres_backends", label) for label in labels]
        for component, app in components:
            out.emit_processes(component, None, app)
            if plan.memory:
                out.emit_memory(component, None, app)
        out.emit_cpu("postgres", None)
