"""The embedded server's postmaster as poolbench's own child, from start to stop.

`pg_ctl start` daemonizes the postmaster: it outlives whoever started it, so a poolbench
killed with SIGKILL left it running for good. Started directly instead, the postmaster is a
child of poolbench: the kernel sends it SIGQUIT (immediate shutdown: the data directory is
thrown away anyway) when poolbench dies (process_group.spawn), the run's ledger holds its
pid, and its exit status can be read.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil

from poolbench.errors import PoolbenchError
from poolbench.infra import ledger
from poolbench.infra.masked_log import log_tail
from poolbench.infra.process_group import spawn


def start_postmaster(
    bin_dir: Path, data: Path, log: Path, argv: list[str], user: str | None, timeout: float = 30
) -> subprocess.Popen[bytes]:
    """Start `postgres -D data ARGV` as `user`; return once postmaster.pid says "ready"
    (as `pg_ctl -w` waits), or raise with the log's tail."""
    log.touch()
    if user:  # the server's own user may reopen it (pg_ctl restart)
        shutil.chown(log, user)
    with log.open("ab") as out:
        proc = spawn(
            [str(bin_dir / "postgres"), "-D", str(data), *argv],
            what="postgres",
            death_signal=signal.SIGQUIT,
            user=user,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + timeout
    while _postmaster_status(data) != "ready":
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_postmaster(proc)
            tail = log_tail(log)
            raise PoolbenchError(
                "starting the embedded PostgreSQL failed"
                + (f": exit status {proc.returncode}" if proc.returncode else ": not ready in time")
                + (f": {tail}" if tail else "")
            )
        time.sleep(0.05)
    return proc


def _postmaster_status(data: Path) -> str | None:
    """The status line of postmaster.pid ("starting", "ready", "stopping"), if written yet."""
    try:
        lines = (data / "postmaster.pid").read_text().splitlines()
    except OSError:
        return None
    return lines[7].strip() if len(lines) > 7 else None


def stop_stray_postmaster(data: Path, timeout: float = 15) -> None:
    """A server restarted outside poolbench (pg_ctl restart) is no child of ours: stop the
    postmaster that postmaster.pid names, if that process really serves `data`."""
    try:
        proc = psutil.Process(int((data / "postmaster.pid").read_text().split("\n", 1)[0]))
        if str(data) not in " ".join(proc.cmdline()):
            return  # a stale file, its pid reused by another process
        proc.send_signal(signal.SIGQUIT)
        proc.wait(timeout)
    except psutil.TimeoutExpired:
        proc.kill()
    except (OSError, ValueError, psutil.Error):
        return


def stop_postmaster(
    proc: subprocess.Popen[bytes], fast_s: float = 5.0, timeout: float = 10.0
) -> None:
    """Fast shutdown (SIGINT: backends end and log it); immediate (SIGQUIT) if it takes more
    than `fast_s` (it waits for a crash recovery under way); SIGKILL last. Reaped always."""
    for sig, wait in ((signal.SIGINT, fast_s), (signal.SIGQUIT, timeout), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    ledger.released(f"process/{proc.pid}")
