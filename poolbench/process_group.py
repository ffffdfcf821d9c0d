"""Stopping a child and everything it spawned, so no run leaves a process behind.

The harness starts each child (an app's uvicorn, Locust) in a session of its own, so its
workers share its process group. Stopping is SIGTERM to the group, a grace period, then
SIGKILL — and any process psutil still finds in the tree or the group (a worker that
outlived its master) is killed one by one. A zombie counts as gone: PID 1 does not reap
orphans on every machine.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

import psutil


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def tree(pid: int) -> list[psutil.Process]:
    """The process, its descendants, and whatever else is in its process group (orphans)."""
    found: dict[int, psutil.Process] = {}
    with contextlib.suppress(psutil.NoSuchProcess):
        master = psutil.Process(pid)
        found = {p.pid: p for p in [master, *master.children(recursive=True)]}
    for p in psutil.process_iter():
        with contextlib.suppress(OSError):  # gone meanwhile, or not ours to inspect
            if p.pid not in found and os.getpgid(p.pid) == pid:
                found[p.pid] = p
    return list(found.values())


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def wait_gone(procs: list[psutil.Process], deadline: float) -> list[psutil.Process]:
    """Poll until every process is gone or the deadline passes; return those still alive."""
    while True:
        remaining = [p for p in procs if alive(p)]
        if not remaining or time.monotonic() >= deadline:
            return remaining
        time.sleep(0.05)


def stop_group(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """SIGTERM to the group, wait `timeout`, then SIGKILL; kill stragglers; reap `proc`."""
    members = tree(proc.pid)
    signal_group(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)
    remaining = wait_gone(members, deadline)
    if remaining or proc.poll() is None:
        signal_group(proc.pid, signal.SIGKILL)
        for straggler in remaining:  # also those that left the process group
            with contextlib.suppress(psutil.NoSuchProcess):
                straggler.kill()
        wait_gone(remaining, time.monotonic() + timeout)
    proc.wait()
