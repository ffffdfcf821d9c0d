"""PSS/USS of many processes, kept fresh for a fraction of what re-reading them all costs.

``/proc/<pid>/smaps_rollup`` is the only honest source of PSS and USS, and the kernel walks
the process's page tables to answer it: ~0.1-0.4 ms for a PostgreSQL backend, milliseconds
for an app with GiBs mapped. ``/proc/<pid>/statm`` (its memory counters: size, resident,
shared, ...) costs ~1 µs through a held descriptor. `MemoryTracker` therefore keeps the
latest smaps_rollup figures of every process, checks every process's statm at every sweep,
and re-reads a process only when its figures may have moved, by a deadline:

- a process not read yet (new, or a reused pid): at once, and again within ``refresh_s``;
- a process whose statm moved: within ``refresh_s`` (2 s) of the move;
- the parent of a new process (a fork shares the parent's pages with the child): within
  ``refresh_s``;
- every process of a group of processes that share memory (PostgreSQL's server processes:
  shared_buffers, the postmaster's copy-on-write pages; the app's processes) when another
  one maps or unmaps shared pages (its statm's *shared* count moves), starts or ends:
  within ``SHARED_REFRESH_S`` (10 s), or within ``refresh_s`` once the PSS so moved between
  them may exceed ``DRIFT`` (1 %) of the group's. PSS of a shared page is split among its
  sharers: what a process that moved (re-read) gained or lost of it, or a process that
  ended held of it, its sharers lost or gained, so the group's PSS sum is off by at most
  that much while they wait. In real runs (~110-120 PostgreSQL processes under a ramp of
  load, and under a steady load with sessions coming and going; compared every second with
  a fresh read of all of them) the PostgreSQL PSS sum was within 0.2 % of the truth at the
  median second, 2.8 % at the 95th percentile, 7 % at the worst (USS: 0.06 %, 1 %, 7.5 %),
  with 26-28 reads a second; re-reading every process within 2 s of any move took 40-50
  and was no closer;
- every process, whatever statm says, within ``VERIFY_S`` (30 s) of its last read: a
  copy-on-write page written by a sibling is replaced without any resident count moving.

Re-reads are spread over sweeps (at least an even share of the waiting ones each time), so
the cost does not come in bursts, and a group where nothing moved costs nothing but its
statm checks. They stay within a CPU budget (a fraction of one core, on average over
``BURST_S``: a whole pass may be spent at once and repaid after). The urgent ones (due
within ``refresh_s``: moved, new, forked, drifted) are read first, the longest waiting
first, and may spend the whole bucket; the others (a sharer moved, the 30 s check) leave
``URGENT_RESERVE`` of it to them. When a group is too large to meet its deadlines within
the budget, values wait longer, and `MemoryStats.refresh_max_s` says how long.

What a before variant of `make bench` costs (120 backends, a slow 2-core machine, traced):
~20 re-reads a second at ~0.4 ms of CPU each (the kernel's page-table walk; ~0.03 ms less
through the held descriptor): ~45 % passes over every process after the group's PSS
drifted past 1 %, ~40 % processes that moved themselves (or new ones' second reads), ~15 %
first reads, sharers' and checks': about the budget's 1 % of a core, spent.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from poolbench.collector.procfs import (
    HAS_PROC,
    HeldFiles,
    MemoryFiles,
    MemoryValues,
    Stat,
    Unreadable,
)

JITTER = 0.25  # of a sweep period: a sweep a little late does not force an early read
SHARED_REFRESH_S = 10.0  # another process of the group mapped or unmapped shared pages
DRIFT = 0.01  # ... unless that may have moved the group's PSS sum by more than this share
VERIFY_S = 30.0  # every process is re-read at least this often, whatever statm says
# The CPU budget is a bucket of this many seconds' worth, full at start: a pass over every
# process (the first sweep's, the one after the group's PSS drifted) is spent at once and
# repaid over the following seconds. A smaller bucket (2 refresh periods) could not hold one
# pass at 120 backends: the reads lagged, the lag moved more PSS between the processes
# (drift), which made every process due again: values waited 8-10 s for the same CPU.
BURST_S = 20.0
# Reads that are not urgent (a sharer moved: within 10 s; the 30 s check) leave this share of
# the bucket to the urgent ones (a process that moved itself, is new, forked, or a group that
# drifted): a drift's pass over every process (~55 ms at 120 backends) is always paid at once.
# Under a `make bench` ramp the reads for sharers spent the whole bucket before full load, and
# then, ordered by deadline, stood in front of the urgent ones: values waited 5-7 s.
URGENT_RESERVE = 0.5


class MemorySum:
    """Sums of (rss, pss, uss) over a component; `None` once any process was unreadable."""

    __slots__ = ("pss", "readable", "rss", "uss")

    def __init__(self) -> None:
        self.rss = self.pss = self.uss = 0
        self.readable = True

    def add(self, values: MemoryValues | None) -> None:
        """One process's figures; None = unreadable (the sum is then unavailable)."""
        if values is None:
            self.readable = False
        elif self.readable:
            self.rss += values[0]
            self.pss += values[1]
            self.uss += values[2]

    def merge(self, other: MemorySum) -> None:
        self.readable = self.readable and other.readable
        self.rss += other.rss
        self.pss += other.pss
        self.uss += other.uss

    def values(self) -> tuple[int | None, int | None, int | None]:
        if not self.readable:
            return None, None, None
        return self.uss, self.pss, self.rss


@dataclass(slots=True, eq=False)
class _Entry:
    pid: int
    start: float  # with the pid, the process's identity
    group: str
    statm: bytes
    read_at: float  # the last smaps_rollup read
    values: MemoryValues | None = None  # None: unreadable (or not read yet)
    deadline: float | None = None  # re-read by then; None: its figures hold
    since: float = 0.0  # the sweep after which its figures may have moved (for `deadline`)
    urgent: bool = False  # its deadline is refresh_s after it may have moved
    moved_itself: bool = False  # due for its own move (not for another's): a source of drift


@dataclass
class _Group:
    members: frozenset[tuple[int, float]] = frozenset()
    # PSS that moved between its processes since they were all re-read: what a process
    # gains in shared pages' PSS (re-read, it moved itself) its sharers lose (not re-read)
    drift: int = 0


@dataclass
class MemoryStats:
    """What one `MemoryTracker.update` did."""

    reads: int = 0  # smaps_rollup reads
    urgent: int = 0  # of which re-reads due within refresh_s (moved, forked, new, drifted)
    changed: int = 0  # processes whose statm moved since the previous sweep
    cpu_s: float = 0.0  # their CPU time (this thread)
    wall_s: float = 0.0
    processes: int = 0  # processes whose figures are held
    stale: int = 0  # of which may have moved since, waiting for their turn
    # the longest a value due within refresh_s (the process moved, forked, is new, or its
    # group's PSS drifted past DRIFT) went unread: at most refresh_s while the budget allows
    refresh_max_s: float = 0.0
    cpu_s_by_group: dict[str, float] = field(default_factory=dict)  # reads' CPU, since start


class MemoryTracker:
    """The latest (rss, pss, uss) of every process of some groups; see the module docstring."""

    def __init__(
        self, refresh_s: float = 2.0, cpu_budget: float | None = None, drift: float = DRIFT
    ) -> None:
        self.refresh_s = refresh_s
        self.cpu_budget = cpu_budget  # fraction of one core for smaps_rollup reads
        self.drift = drift  # of a group's PSS, moved between its processes: re-read them all
        self._entries: dict[int, _Entry] = {}
        self._groups: dict[str, _Group] = {}
        self._statm = HeldFiles("statm")
        self._smaps = MemoryFiles()
        self._last: float | None = None
        self._allowance = 0.0  # CPU seconds the budget still allows
        self._cpu_by_group: dict[str, float] = {}  # the reads' CPU seconds since start

    def sum(self, pids: Iterable[int]) -> MemorySum:
        """The latest figures of these processes, summed; those gone (unknown) are skipped."""
        total = MemorySum()
        for pid in pids:
            entry = self._entries.get(pid)
            if entry is not None:
                total.add(entry.values)
        return total

    def close(self) -> None:
        self._statm.close()
        self._smaps.close()

    def update(self, groups: dict[str, list[Stat]], now: float | None = None) -> MemoryStats:
        """Check every live process of `groups` (name -> its processes) and re-read what may
        have moved. `now` is a monotonic time (a parameter for tests)."""
        now = time.monotonic() if now is None else now
        first = self._last is None
        previous = now - self.refresh_s if self._last is None else min(self._last, now - 1e-3)
        period, self._last = now - previous, now
        if self.cpu_budget is not None:
            cap = self.cpu_budget * BURST_S
            self._allowance = cap if first else min(cap, self._allowance + self.cpu_budget * period)
        out = MemoryStats()
        fresh: list[_Entry] = []
        held: list[_Entry] = []
        seen: set[int] = set()
        for name, stats in groups.items():
            self._check(now, previous, name, stats, fresh, held, seen, out)
        for pid in [p for p in self._entries if p not in seen]:
            del self._entries[pid]  # gone
            self._smaps.forget(pid)
        self._statm.end_sweep()
        c0, w0 = time.thread_time(), time.perf_counter()
        for entry in fresh:  # a process never read has no figures: always read
            self._read(entry, now, out)
            # ... and once more soon: a new process writes most of the pages it shares with
            # its parent just after it starts, and copying them moves no statm count
            self._due_by(entry, now, self.refresh_s, moved_itself=True)
        waiting = [e for e in held if e.deadline is not None]
        for entry in self._due(waiting, now, period):
            if not self._affordable(entry):
                break
            self._note_wait(entry, now, out)
            out.urgent += entry.urgent
            self._read(entry, now, out)
        for entry in waiting:
            if entry.deadline is not None:
                out.stale += 1
                self._note_wait(entry, now, out)
        out.processes = len(self._entries)
        out.cpu_s_by_group = dict(self._cpu_by_group)
        out.cpu_s = time.thread_time() - c0
        out.wall_s = time.perf_counter() - w0
        return out

    def _affordable(self, entry: _Entry) -> bool:
        """Whether the budget allows this re-read now; one not urgent leaves the reserve."""
        if self.cpu_budget is None:
            return True
        reserve = 0.0 if entry.urgent else URGENT_RESERVE * self.cpu_budget * BURST_S
        return self._allowance > reserve

    def _note_wait(self, entry: _Entry, now: float, out: MemoryStats) -> None:
        if entry.urgent:
            out.refresh_max_s = max(out.refresh_max_s, now - entry.since)

    def _check(
        self,
        now: float,
        previous: float,  # the previous sweep: what moved since, moved after it
        name: str,
        stats: Iterable[Stat],
        fresh: list[_Entry],
        held: list[_Entry],
        seen: set[int],
        out: MemoryStats,
    ) -> None:
        """Read every process's statm; set the deadlines of those that may have moved."""
        group = self._groups.setdefault(name, _Group())
        live = [s for s in stats if not s.zombie and s.pid not in seen]  # one group each
        members = frozenset((s.pid, s.start) for s in live)
        left = group.members - members
        parents = {s.ppid for s in live if (s.pid, s.start) not in group.members}
        for pid, start in left:  # the PSS it held of shared pages is its sharers' now
            entry = self._entries.get(pid)
            if entry is not None and entry.start == start and entry.values is not None:
                group.drift += max(0, entry.values[1] - entry.values[2])
        group.members = members
        shared_moved = False  # a process's statm *shared* count moved, or a process is new
        mine: list[_Entry] = []
        read = self._statm.read
        for s in live:
            statm = read(s.pid) if HAS_PROC else b""
            if statm is None:
                continue  # gone since its stat was read
            seen.add(s.pid)
            entry = self._entries.get(s.pid)
            if entry is None or entry.start != s.start:
                entry = self._entries[s.pid] = _Entry(s.pid, s.start, name, statm, now)
                fresh.append(entry)
                shared_moved = True
                continue
            if statm != entry.statm or not statm:  # no statm off Linux: always "moved"
                shared_moved = shared_moved or _shared(statm) != _shared(entry.statm)
                entry.statm = statm
                self._due_by(entry, previous, self.refresh_s, moved_itself=True)
                out.changed += 1
            mine.append(entry)
        pss = sum(e.values[1] for e in mine if e.values is not None)
        drifted = group.drift > self.drift * pss
        if drifted:
            group.drift = 0
        for entry in mine:
            if drifted or entry.pid in parents:
                self._due_by(entry, previous, self.refresh_s)
            elif shared_moved or parents or left:
                self._due_by(entry, previous, SHARED_REFRESH_S)
            elif now - entry.read_at >= VERIFY_S:
                self._due_by(entry, now, self.refresh_s, urgent=False)
        held.extend(mine)

    def _due_by(
        self,
        entry: _Entry,
        since: float,
        allowed: float,
        urgent: bool = True,
        moved_itself: bool = False,
    ) -> None:
        """Re-read `entry` within `allowed` seconds of `since` (unless due earlier already).
        One already due, not urgently, by an earlier deadline (a sharer moved, the 30 s
        check) keeps it and becomes urgent: its wait counts from `since`, and it goes first."""
        deadline = since + allowed
        urgent = urgent and allowed <= self.refresh_s
        if entry.deadline is None or deadline < entry.deadline:
            entry.deadline, entry.since, entry.urgent = deadline, since, urgent
        elif urgent and not entry.urgent:
            entry.since, entry.urgent = since, True
        entry.moved_itself = entry.moved_itself or moved_itself

    def _due(self, waiting: list[_Entry], now: float, period: float) -> list[_Entry]:
        """What to read now: every process whose deadline would pass before the next
        sweep, and at least an even share of all that wait (each needs `period / its allowed
        wait` of a read per sweep), urgent ones first, then the earliest deadlines; read in
        the order of `_urgency`, so that a budget running out leaves what may wait longer."""
        if not waiting:
            return []
        horizon = now + period * (1 - JITTER)  # a sweep may come a little late
        due = [(e.deadline, e) for e in waiting if e.deadline is not None]  # all of them
        must = [e for deadline, e in due if deadline <= horizon]
        share = sum(period / max(period, deadline - e.since) for deadline, e in due)
        rest = [(not e.urgent, deadline, e) for deadline, e in due if deadline > horizon]
        spread = [e for _, _, e in sorted(rest, key=lambda r: r[:2])]
        chosen = must + spread[: max(0, math.ceil(share - 1e-9) - len(must))]
        return sorted(chosen, key=_urgency)

    def _read(self, entry: _Entry, now: float, out: MemoryStats) -> None:
        c0 = time.thread_time()
        try:
            values = self._smaps.read(entry.pid)
            gone = values is None
        except Unreadable:
            values, gone = None, False
        spent = time.thread_time() - c0
        self._allowance -= spent
        self._cpu_by_group[entry.group] = self._cpu_by_group.get(entry.group, 0.0) + spent
        out.reads += 1
        if gone:  # since its statm was read: no figures to keep
            if self._entries.get(entry.pid) is entry:
                del self._entries[entry.pid]
                self._smaps.forget(entry.pid)
            return
        if values is not None and (entry.moved_itself or entry.values is None):
            # PSS of shared pages is conserved among their sharers: what this process
            # gained or lost of it, the others lost or gained, unseen until re-read
            before = 0 if entry.values is None else entry.values[1] - entry.values[2]
            self._groups[entry.group].drift += abs(values[1] - values[2] - before)
        entry.values = values
        entry.read_at = now
        entry.deadline, entry.urgent, entry.moved_itself = None, False, False


def _urgency(entry: _Entry) -> tuple[bool, float]:
    """Urgent re-reads (due within refresh_s) first, the longest waiting first among them."""
    return (not entry.urgent, entry.since if entry.urgent else entry.deadline or 0.0)


def _shared(statm: bytes) -> bytes:
    """statm's third field: resident pages backed by a file or shared memory."""
    fields = statm.split()
    return fields[2] if len(fields) > 2 else b""
