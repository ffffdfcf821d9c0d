"""How many processes the app really ran, measured from its process tree.

Pools are per process: `uvicorn --workers 4` holds four sets of pools. The bench file may
declare `workers`, but a declaration can be wrong (a `--workers` the command ignores, a
gunicorn config file, a worker that died and was replaced). So from the moment the app is
started until it is stopped, its process tree is sampled about twice a second: which pids
exist, and which of them hold TCP connections to the database server. The processes that held
database connections at the same moment are the workers whose pools the model must count;
variant.json records them as `app_processes` (docs/results.md).
"""

from __future__ import annotations

import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil

from poolbench.redact import mask_text

INTERVAL_S = 0.5
CMDLINE_CHARS = 200


@dataclass
class Seen:
    """One pid of the app's tree over the run."""

    pid: int
    ppid: int
    name: str
    cmdline: str  # masked, cut: enough to tell a master from a worker or a helper
    first_seen: float
    last_seen: float
    db_connections_max: int = 0


class AppProcessWatch:
    """Samples `pids()` (the app's live tree) in a thread from start() to stop()."""

    def __init__(
        self, pids: Callable[[], list[int]], db_port: int, interval_s: float = INTERVAL_S
    ) -> None:
        self._pids = pids
        self._db_port = db_port
        self._interval = interval_s
        self._seen: dict[int, Seen] = {}
        self._max_alive = 0
        self._max_with_db = 0
        self._samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="app-processes", daemon=True)

    def start(self) -> AppProcessWatch:
        self._thread.start()
        return self

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)
        return self.summary()

    def _loop(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self._interval):
                return

    def sample(self) -> None:
        """One look at the tree: every live pid, and its connections to the database port."""
        now = time.time()
        alive = with_db = 0
        for pid in self._pids():
            try:
                proc = psutil.Process(pid)
                held = sum(
                    1
                    for c in proc.net_connections(kind="inet")
                    if c.raddr and c.raddr.port == self._db_port
                )
            except (psutil.Error, OSError):
                continue
            seen = self._seen.get(pid) or self._first_sight(proc, now)
            if seen is None:
                continue
            seen.last_seen = now
            seen.db_connections_max = max(seen.db_connections_max, held)
            alive += 1
            with_db += held > 0
        self._samples += 1
        self._max_alive = max(self._max_alive, alive)
        self._max_with_db = max(self._max_with_db, with_db)

    def _first_sight(self, proc: psutil.Process, now: float) -> Seen | None:
        try:
            with proc.oneshot():
                cmdline = mask_text(shlex.join(proc.cmdline()))[:CMDLINE_CHARS]
                seen = Seen(proc.pid, proc.ppid(), proc.name(), cmdline, now, now)
        except (psutil.Error, OSError):
            return None
        self._seen[proc.pid] = seen
        return seen

    def summary(self) -> dict[str, Any]:
        """What variant.json records as `app_processes`."""
        return {
            "interval_s": self._interval,
            "samples": self._samples,
            "max_alive": self._max_alive,
            "max_with_db_connections": self._max_with_db,
            "pids": [
                vars(seen) for seen in sorted(self._seen.values(), key=lambda s: s.first_seen)
            ],
        }
