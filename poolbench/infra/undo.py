"""Undoing what a ledger records: stopping a process group, removing a data directory.

`poolbench clean` undoes what a run killed hard left (poolbench/run/clean.py); `recording`
undoes, at the end of a run's block, what a teardown cut short did not release. Both go
through the same functions, so a process is stopped and a folder removed one way.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil

from poolbench.errors import PoolbenchError
from poolbench.infra import ledger, postgres
from poolbench.infra.process_group import alive, signals_deferred, wait_gone

STOP_GRACE_S = 10.0
SAME_START_S = 1.0  # create times this close are the same process (psutil rounds them)


def live_process(pid: int, create_time: float | None) -> psutil.Process | None:
    """The live process with that pid and start time, or None (gone, zombie, or reused)."""
    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > SAME_START_S:
            return None
    except (psutil.Error, OSError):
        return None
    return proc if alive(proc) else None


def _group(pgid: int, since: float) -> list[psutil.Process]:
    """Live processes of a process group that started no earlier than its leader did."""
    members = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if (
                os.getpgid(proc.pid) == pgid
                and proc.create_time() >= since - SAME_START_S
                and alive(proc)
            ):
                members.append(proc)
    return members


def stop_process(item: ledger.Entry) -> str | None:
    """Stop a recorded child and what is left of its group; None when nothing was left."""
    pid, since = int(item["pid"]), float(item.get("create_time") or 0.0)
    pgid = int(item.get("pgid") or pid)
    leader = live_process(pid, since)
    if leader is None and live_process(pgid, None) is not None:
        return None  # the pid (and so the group id) now belongs to another process
    members = {p.pid: p for p in _group(pgid, since)}
    if leader is not None:
        with contextlib.suppress(psutil.Error):
            members.update({p.pid: p for p in [leader, *leader.children(recursive=True)]})
    if not members:
        return None
    sig = signal.Signals(int(item.get("stop_signal") or signal.SIGTERM))
    # the postmaster shuts its own processes down; any other group is signalled whole
    postmaster = item.get("what") == "postgres"
    targets = [leader] if leader is not None and postmaster else list(members.values())
    for proc in targets:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)
    remaining = wait_gone(list(members.values()), time.monotonic() + STOP_GRACE_S)
    for proc in remaining:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    if wait_gone(remaining, time.monotonic() + STOP_GRACE_S):
        raise PoolbenchError(f"could not stop {item.get('what')} (pid {pid})")
    count = len(members)
    return f"stopped {item.get('what', 'a process')} (pid {pid}, {count} process" + (
        "es)" if count != 1 else ")"
    )


def remove_data_dir(item: ledger.Entry) -> str | None:
    """Remove an embedded server's directory, after stopping a postmaster still serving it."""
    path = Path(str(item["path"]))
    if not path.name.startswith((postgres.EMBEDDED_DIR_PREFIX, ledger.UI_FEED_DIR_PREFIX)):
        raise PoolbenchError(f"{path} is not a poolbench data directory: left alone")
    if not path.exists():
        return None
    with contextlib.suppress(OSError, ValueError):
        pid = int((path / "data" / "postmaster.pid").read_text().split("\n", 1)[0])
        if live_process(pid, None) is not None:
            stop_process({"pid": pid, "what": "postgres", "stop_signal": int(signal.SIGQUIT)})
    shutil.rmtree(path)
    return f"removed {path}"


# by a ledger line's kind (a file's word: a Kind or not): stop before removing files
ORDER: dict[str, int] = {ledger.Kind.PROCESS: 0, ledger.Kind.DATA_DIR: 1, ledger.Kind.DATABASE: 2}
UNDO: dict[str, Callable[[ledger.Entry], str | None]] = {
    ledger.Kind.PROCESS: stop_process,
    ledger.Kind.DATA_DIR: remove_data_dir,
}


@contextlib.contextmanager
def recording(run_dir: Path) -> Iterator[ledger.Ledger]:
    """The run's ledger (ledger.recording) and, when the block ends, what it did not release
    undone (`settle`, with Ctrl-C held): a teardown cut short by a second Ctrl-C in code that
    is not itself protected leaves neither a process nor a data directory, nor a line for
    `clean`."""
    try:
        with ledger.recording(run_dir) as book:
            yield book
    finally:
        settle(run_dir)


def settle(run_dir: Path) -> list[str]:
    """At the end of a run (ledger.recording): stop and remove what it started and did not
    release, and release it. Best effort and silent (what it could not undo stays listed for
    `clean`); a database on the user's server is left to `clean --database-url`."""
    path = run_dir / ledger.LEDGER_FILE
    done = []
    with signals_deferred():
        for item in sorted(ledger.leftovers(path), key=lambda i: ORDER.get(str(i.get("kind")), 9)):
            if item.get("kind") not in UNDO:
                continue
            try:
                if outcome := UNDO[item["kind"]](item):
                    done.append(outcome)
                ledger.append(path, {"released": item["id"], "by": "settle"})
            except (PoolbenchError, OSError, psutil.Error):
                continue
    return done
