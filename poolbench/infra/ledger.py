"""What a run started, written down as it starts it, so a run killed hard can be cleaned up.

A run that dies by SIGKILL (or a power cut of its terminal) unwinds nothing: its children
may outlive it, the embedded server's data directory stays in /tmp, and a private role and
database stay on the user's server. So every run keeps `started.jsonl` in its results
folder: one JSON line, flushed at once, per thing it starts —

- ``{"kind": "process", "id": "process/<pid>", "pid", "pgid", "create_time", "what",
  "stop_signal"}`` — a child (uvicorn, Locust, the postmaster), its process group and its
  start time, so that a reused pid is never taken for it;
- ``{"kind": "data_dir", "id": "data_dir/<path>", "path"}`` — the embedded server's files;
- ``{"kind": "database", "id": "database/<host>:<port>/<dbname>", "host", "port", "user",
  "dbname", "role"}`` — a private database and role on a server someone else runs. Its
  admin password is never written anywhere: cleaning it needs the URL again.

and ``{"released": "<id>", "ts"}`` once it is gone. `poolbench clean` (poolbench/run/clean.py)
undoes what an abandoned run did not release. The starters (process_group.spawn, the
PostgreSQL providers) call the module functions below; outside a run (tests, `watch`) no
ledger is open and they do nothing.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator, Mapping
from enum import StrEnum
from pathlib import Path
from typing import TextIO, TypedDict, cast

from poolbench.files import write_failed

LEDGER_FILE = "started.jsonl"
UI_FEED_DIR_PREFIX = "poolbench-ui-"  # a ui session's feed folder (a `data_dir` entry)

_active: Ledger | None = None


class Kind(StrEnum):
    """What a ledger line records (its `kind`): how `poolbench clean` undoes it."""

    PROCESS = "process"
    DATA_DIR = "data_dir"
    DATABASE = "database"


class Entry(TypedDict, total=False):
    """A line of the ledger as read back: the fields its `kind` has (see above). Read from a
    file a killed run wrote, so the undoers check what they use."""

    kind: str
    id: str
    ts: float
    pid: int  # process
    pgid: int
    create_time: float
    what: str
    stop_signal: int
    path: str  # data_dir
    host: str  # database
    port: int
    user: str
    dbname: str
    role: str


class Ledger:
    """An append-only, line-flushed record of what one run started and released."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            self._file: TextIO | None = path.open("a", encoding="utf-8")
        except OSError as exc:
            raise write_failed(path, exc) from None

    def write(self, line: Mapping[str, object]) -> None:
        """Append a line; a full disk is a WriteFailed (what is not recorded is not started:
        the starters note before they start)."""
        with self._lock:
            if self._file is None:
                return
            try:
                self._file.write(json.dumps({"ts": time.time(), **line}) + "\n")
                self._file.flush()
            except OSError as exc:
                raise write_failed(self.path, exc) from None

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                with contextlib.suppress(OSError):
                    self._file.close()
                self._file = None


@contextlib.contextmanager
def recording(run_dir: Path) -> Iterator[Ledger]:
    """Record into run_dir/started.jsonl everything started inside the block.

    A run uses infra/undo.recording, which also undoes what the block did not release.
    """
    global _active
    ledger = Ledger(run_dir / LEDGER_FILE)
    previous, _active = _active, ledger
    try:
        yield ledger
    finally:
        _active = previous
        ledger.close()


def started(kind: Kind, key: str, **fields: object) -> str:
    """Note that something was started (or is about to be); returns its id for `released`."""
    item_id = f"{kind}/{key}"
    if _active is not None:
        _active.write({"kind": kind, "id": item_id, **fields})
    return item_id


def released(item_id: str) -> None:
    """Note that something noted by `started` is gone."""
    if _active is not None:
        _active.write({"released": item_id})


def leftovers(path: Path) -> list[Entry]:
    """The entries of a ledger file never released, oldest first; a cut last line is dropped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    entries: dict[str, Entry] = {}
    for line in lines:
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(item, dict):
            continue
        if isinstance(item.get("released"), str):
            entries.pop(item["released"], None)
        elif isinstance(item.get("id"), str):
            entries[item["id"]] = cast(Entry, item)  # as written; the undoers check it
    return list(entries.values())


def append(path: Path, line: Mapping[str, object]) -> None:
    """Add a line to a ledger file that no run has open (`clean` releasing what it undid)."""
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"ts": time.time(), **line}) + "\n")
