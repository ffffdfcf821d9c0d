"""Reading /proc: process state, CPU times, process trees and memory, cheaply and race-safely.

Processes come and go while they are read: every reader returns None (or skips) for a
process that is gone rather than raising. Off Linux, psutil stands in (fewer figures).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

_PROC = Path("/proc")
_HAS_PROC = (_PROC / str(os.getpid()) / "stat").exists()
HAS_PROC = _HAS_PROC  # Linux: every figure; elsewhere psutil stands in
_HAS_CHILDREN = (_PROC / str(os.getpid()) / "task" / str(os.getpid()) / "children").exists()
_CLK_TCK = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0


@dataclass(slots=True)
class Stat:
    """What a sweep needs of /proc/<pid>/stat."""

    pid: int
    ppid: int
    zombie: bool
    cpu: float  # seconds, user + system
    cpu_children: float  # seconds, reaped children (user + system)
    start: float  # an identity: pid + start time
    stopped: bool = False  # state T (SIGSTOP) or t (a tracer): alive, but running nothing


def _parse_stat(pid: int, data: bytes) -> Stat | None:
    if not data:
        return None
    fields = data[data.rindex(b")") + 2 :].split(None, 20)  # up to the start time
    return Stat(
        pid=pid,
        ppid=int(fields[1]),
        zombie=fields[0] in (b"Z", b"X"),
        cpu=(int(fields[11]) + int(fields[12])) / _CLK_TCK,
        cpu_children=(int(fields[13]) + int(fields[14])) / _CLK_TCK,
        start=float(fields[19]),
        stopped=fields[0] in (b"T", b"t"),
    )


def _read_stat(pid: int) -> Stat | None:
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
            return Stat(
                pid=pid,
                ppid=proc.ppid(),
                zombie=proc.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD),
                cpu=times.user + times.system,
                cpu_children=getattr(times, "children_user", 0.0)
                + getattr(times, "children_system", 0.0),
                start=proc.create_time(),
                stopped=proc.status() in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP),
            )
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


class HeldFiles:
    """One /proc/<pid>/<name> file per process, re-read through a descriptor held between
    sweeps: ~1-5 µs a read instead of ~6-20 µs for open + read + close.

    A descriptor keeps pointing at the process it was opened for: once that process is gone
    a read fails, and the pid (perhaps reused) is opened afresh. At most `max_fds` are held;
    beyond that a file is opened for each read.
    """

    def __init__(self, name: str, max_fds: int = 256) -> None:
        self.name = name
        self.max_fds = max_fds
        self._fds: dict[int, int] = {}
        self._seen: set[int] = set()

    def read(self, pid: int) -> bytes | None:
        """The file's content, or None when the process is gone (or not visible)."""
        self._seen.add(pid)
        fd = self._fds.get(pid)
        if fd is not None:
            data = _pread(fd)
            if data:
                return data
            os.close(self._fds.pop(pid))
        try:
            fd = os.open(f"/proc/{pid}/{self.name}", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        data = _pread(fd)
        if data and len(self._fds) < self.max_fds:
            self._fds[pid] = fd
        else:
            os.close(fd)
        return data or None

    def end_sweep(self) -> None:
        """Close the descriptors of processes this sweep did not look at."""
        for pid in [p for p in self._fds if p not in self._seen]:
            os.close(self._fds.pop(pid))
        self._seen = set()

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def _pread(fd: int, size: int = 4096) -> bytes:
    try:
        return os.pread(fd, size, 0)
    except OSError:
        return b""


class StatReader:
    """/proc/<pid>/stat of many processes, sweep after sweep, through held descriptors."""

    def __init__(self) -> None:
        self._files = HeldFiles("stat")

    def read(self, pid: int) -> Stat | None:
        if not _HAS_PROC:
            return _read_stat(pid)
        data = self._files.read(pid)
        return None if data is None else _parse_stat(pid, data)

    def end_sweep(self) -> None:
        self._files.end_sweep()

    def close(self) -> None:
        self._files.close()


def _children(pid: int) -> list[int]:
    """A process's children: read from /proc per thread, as a child's parent may be any thread."""
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


def tree(roots: Iterable[int], depth: int | None = None) -> list[int]:
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


class Unreadable(Exception):
    """A live process whose memory this host may not read."""


MemoryValues = tuple[int, int, int]  # (rss, pss, uss) in bytes
_SMAPS_FIELD = re.compile(rb"^(Rss|Pss|Private_Clean|Private_Dirty):\s+(\d+) kB", re.MULTILINE)


def _memory_values(data: bytes) -> MemoryValues:
    fields = {b"Rss": 0, b"Pss": 0, b"Private_Clean": 0, b"Private_Dirty": 0}
    for name, kib in _SMAPS_FIELD.findall(data):
        fields[name] = int(kib) * 1024
    return fields[b"Rss"], fields[b"Pss"], fields[b"Private_Clean"] + fields[b"Private_Dirty"]


class MemoryFiles:
    """`read_memory` through a smaps_rollup descriptor held per process (~30 µs less a read
    than open + read + close, of ~0.3-0.4 ms). A descriptor whose process is gone (or has
    exec'd) reads nothing: the pid is opened afresh. `forget` a pid when its process is gone."""

    def __init__(self, max_fds: int = 512) -> None:
        self.max_fds = max_fds
        self._fds: dict[int, int] = {}

    def read(self, pid: int) -> MemoryValues | None:
        """As `read_memory`: None when gone, Unreadable when denied."""
        if not _HAS_PROC:
            return read_memory(pid)
        fd = self._fds.get(pid)
        if fd is not None:
            data = _pread(fd, 8192)
            if data:
                return _memory_values(data)
            self.forget(pid)
        try:
            fd = os.open(f"/proc/{pid}/smaps_rollup", os.O_RDONLY | os.O_CLOEXEC)
        except PermissionError:
            raise Unreadable(pid) from None
        except OSError:
            return None
        data = _pread(fd, 8192)
        if data and len(self._fds) < self.max_fds:
            self._fds[pid] = fd
        else:
            os.close(fd)
        return _memory_values(data) if data else None

    def forget(self, pid: int) -> None:
        fd = self._fds.pop(pid, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        for pid in list(self._fds):
            self.forget(pid)


def read_memory(pid: int) -> MemoryValues | None:
    """(rss, pss, uss) in bytes; None when the process is gone; Unreadable when denied.

    The kernel walks the process's page tables to answer: the cost grows with its resident
    memory (~0.1 ms for an idle PostgreSQL backend, milliseconds for GiBs), so callers read
    it only when a process's memory may have changed (see `poolbench.collector.memory`).
    """
    if _HAS_PROC:
        try:
            with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
                data = f.read()
        except PermissionError:
            raise Unreadable(pid) from None
        except OSError:  # gone: ENOENT, ESRCH and friends on a dying process
            return None
        if not data:
            return None  # a zombie or kernel thread: nothing mapped
        return _memory_values(data)
    try:
        info = psutil.Process(pid).memory_full_info()
    except psutil.AccessDenied:
        raise Unreadable(pid) from None
    except psutil.NoSuchProcess:
        return None
    return info.rss, getattr(info, "pss", info.uss), info.uss


def thread_cpu(tids: Iterable[int]) -> dict[int, float]:
    """CPU seconds of each of some of this process's threads (tid -> seconds; off Linux, the
    whole process under the first tid); a thread that has ended is left out."""
    if not _HAS_PROC:
        times = psutil.Process().cpu_times()
        return {next(iter(tids), 0): times.user + times.system}
    cpu = {}
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2 :].split()
        cpu[tid] = (int(fields[11]) + int(fields[12])) / _CLK_TCK
    return cpu


def alive(pid: int) -> bool:
    """True for a running process; a zombie has exited, only its exit status is left."""
    stat = _read_stat(pid)
    return stat is not None and not stat.zombie


def read_stat(pid: int) -> Stat | None:
    """One process's state, CPU times and start time (its identity), or None when gone."""
    return _read_stat(pid)


def exit_status(pid: int) -> int | None:
    """A zombie's exit status, as Popen gives it (-N: killed by signal N); else None.

    Readable only until the parent reaps it (/proc/<pid>/stat field 52, Linux 3.5+).
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] not in (b"Z", b"X") or len(fields) < 50:
        return None
    status = int(fields[49])
    return -(status & 0x7F) if status & 0x7F else (status >> 8) & 0xFF


def cmdline(pid: int) -> str:
    """A process's command line, arguments joined by spaces; "" when gone or unreadable."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


class CpuMeter:
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
