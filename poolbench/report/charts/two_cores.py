"""Charts drawn on two cores: half of them in a forked copy of the process, half here.

Each chart is independent (its figure, its file), and drawing them is most of a report's
time: a default `make bench` run's 14 charts cost 1.7 s of CPU on a 2-core machine whose
`make test` costs ~240 s, most of what a person waits for `poolbench report`. A forked child
already holds the analysis and matplotlib, so it starts in milliseconds and needs nothing sent
to it; it writes its PNGs itself (each whole, by `files.atomic_file`) and tells the parent,
through a pipe, which of its charts it drew.

Forking is safe only from a single-threaded process (a lock another thread holds stays held
in the child), so with any other thread alive, one core, no `fork`, or few charts, every
chart is drawn here, one after another, as before. If the child fails or dies, the parent
draws the child's charts itself, so an error surfaces as it would without the child. Ctrl-C
reaches both (one process group); the parent kills and reaps the child on any way out, and a
child whose parent died stops before its next chart.
"""

from __future__ import annotations

import os
import signal
import struct
import threading
from collections.abc import Callable, Iterator, Sequence

Task = Callable[[], bool]  # draws one chart; False when the chart has nothing to show
MIN_TASKS = 4  # fewer charts than this are not worth a second process
TICKET = struct.Struct("<H")  # a task's number in the queue
REPORT = struct.Struct("<H?")  # the child drew task number ..., and whether it showed anything


def draw_all(tasks: Sequence[Task]) -> list[bool]:
    """Run every task (each draws one chart), on two cores when it is safe; their results in
    order."""
    if not _can_fork(len(tasks)):
        return [task() for task in tasks]
    return _shared(tasks)


def _can_fork(count: int) -> bool:
    return (
        count >= MIN_TASKS
        and hasattr(os, "fork")
        and (os.cpu_count() or 1) > 1
        and threading.active_count() == 1
        and count < 1 << 16
    )


def _shared(tasks: Sequence[Task]) -> list[bool]:
    """Both processes take the next chart from one queue, a pipe of task numbers (a read of
    one number is atomic), so neither waits while the other has several left; the child
    reports each chart it drew through a second pipe. What the child took and did not report
    (it failed, or died) is drawn here afterwards, where an error surfaces as usual."""
    tickets, results = os.pipe(), os.pipe()
    os.write(tickets[1], b"".join(TICKET.pack(i) for i in range(len(tasks))))
    os.close(tickets[1])  # an empty queue then reads as the end
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        os.close(results[0])
        _child(tasks, tickets[0], results[1], parent)
    os.close(results[1])
    drawn: list[bool | None] = [None] * len(tasks)
    reaped = False
    try:
        for i in _take(tickets[0]):
            drawn[i] = tasks[i]()
        for i, shown in REPORT.iter_unpack(_read_all(results[0])):
            drawn[i] = bool(shown)
        os.waitpid(pid, 0)
        reaped = True
    finally:
        os.close(tickets[0])
        os.close(results[0])
        if not reaped:
            _kill_and_reap(pid)
    return [tasks[i]() if shown is None else shown for i, shown in enumerate(drawn)]


def _child(tasks: Sequence[Task], tickets: int, results: int, parent: int) -> None:
    """Draw charts from the queue, reporting each; never returns (no parent's cleanup runs)."""
    code = 1
    try:
        for i in _take(tickets):
            if os.getppid() != parent:  # the parent died: its report is not coming
                break
            os.write(results, REPORT.pack(i, tasks[i]()))
        else:
            code = 0
    except BaseException:  # the parent draws what is missing and reports the error as usual
        code = 1
    finally:
        os._exit(code)


def _take(tickets: int) -> Iterator[int]:
    """Task numbers from the queue until it is empty."""
    while ticket := os.read(tickets, TICKET.size):
        yield TICKET.unpack(ticket)[0]


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks)


def _kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
