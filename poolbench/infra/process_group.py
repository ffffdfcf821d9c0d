"""Starting a child and stopping it with everything it spawned, so no run leaves a process.

`spawn` starts each child (an app's uvicorn, Locust, the postmaster) in a session of its own,
so its workers share its process group; on Linux it also asks the kernel to signal the child
when poolbench dies, even by SIGKILL (`PR_SET_PDEATHSIG`), and notes the child in the run's
ledger (poolbench/infra/ledger.py) so `poolbench clean` can find what a hard kill left.

Stopping is SIGTERM to the group, a grace period, then SIGKILL — and any process psutil
still finds in the tree or the group (a worker that outlived its master) is killed one by
one. A zombie counts as gone: PID 1 does not reap orphans on every machine.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psutil

from poolbench.infra import ledger

PR_SET_PDEATHSIG = 1


def _libc_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _libc_prctl()  # resolved once, here: the hook below runs between fork and exec


def die_with_parent(sig: signal.Signals) -> Callable[[], None] | None:
    """A pre-exec hook: the child gets `sig` when the thread that started it ends.

    The kernel sends it when the parent *thread* exits, so start children from a thread that
    outlives them (the runner's main thread does). If the parent died between fork and the
    hook, the child exits at once. None where the OS has no such facility.
    """
    if _PRCTL is None:
        return None
    parent, prctl, number = os.getpid(), _PRCTL, int(sig)

    def hook() -> None:
        prctl(PR_SET_PDEATHSIG, number, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return hook


def tie_to_parent(parent: int, sig: signal.Signals = signal.SIGKILL) -> bool:
    """Make this process receive `sig` when `parent`, the process that forked it, dies: for
    Locust's `--processes` workers, which spawn's pre-exec hook never saw. If `parent` is
    already gone (this process was orphaned before it got here), exit now. Whether it took."""
    if _PRCTL is None:
        return False
    _PRCTL(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)
    return True


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block ends, then reach the handler that was there
    before (KeyboardInterrupt as usual; ignored if it was ignored; an enclosing block's own
    deferral).

    For teardown that must finish, such as removing a server's data directory: a second
    Ctrl-C a moment after the first would otherwise skip it. Outside the main thread (where
    Python delivers signals) the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[signal.Signals] = []
    wanted = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.getsignal(sig) for sig in wanted}
    for sig in wanted:
        signal.signal(sig, lambda signum, frame: caught.append(signal.Signals(signum)))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for sig in dict.fromkeys(caught):
        signal.raise_signal(sig)


def spawn(
    argv: list[str], *, what: str, death_signal: signal.Signals = signal.SIGTERM, **popen: Any
) -> subprocess.Popen[bytes]:
    """Popen in a new session that dies with poolbench, noted in the run's ledger.

    `death_signal` is what the child receives when poolbench dies: SIGTERM lets uvicorn and
    Locust stop their own workers; the throwaway postmaster takes SIGQUIT (immediate shutdown).
    """
    proc = subprocess.Popen(
        argv, start_new_session=True, preexec_fn=die_with_parent(death_signal), **popen
    )
    note_process(proc.pid, what, death_signal)
    return proc


def note_process(pid: int, what: str, stop_signal: signal.Signals = signal.SIGTERM) -> None:
    """Record a child in the run's ledger: pid, group and start time (pid reuse is told apart)."""
    with contextlib.suppress(psutil.Error, OSError):
        ledger.started(
            ledger.Kind.PROCESS,
            str(pid),
            pid=pid,
            pgid=os.getpgid(pid),
            create_time=psutil.Process(pid).create_time(),
            what=what,
            stop_signal=int(stop_signal),
        )


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


def stop_group(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM to the group, wait `timeout`, then SIGKILL; kill stragglers; reap `proc`.

    Ctrl-C and SIGTERM wait until it is done (signals_deferred): a second Ctrl-C must not
    leave the group half stopped and unreleased in the ledger."""
    with signals_deferred():
        _stop_group(proc, timeout)


def _stop_group(proc: subprocess.Popen[bytes], timeout: float) -> None:
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
    ledger.released(f"process/{proc.pid}")
