"""`poolbench clean [RESULTS_ROOT]`: undo what runs killed hard left behind, and say so.

A run that dies by SIGKILL unwinds nothing. Its children mostly die with it (the kernel
signals them: process_group.spawn), but the embedded server's data directory, a private role
and database on the user's server, and any grandchild that outlived its parent stay. Every
run wrote down what it started (poolbench/infra/ledger.py, `started.jsonl`) and who owns it
(run.json `owner`: pid, start time, host). A run is **abandoned** when run.json still says
`running` and its owner is gone — the pid no longer exists, or belongs to a process that
started at another time (a reused pid), on this host. A run that ended (`partial`, `failed`)
with something in its ledger never released, its owner gone, is cleaned the same way and
keeps its status. For each abandoned run, `clean`:

1. stops every recorded process still alive, with what is left of its process group
   (the signal the ledger names: SIGTERM, SIGQUIT for the throwaway postmaster; SIGKILL
   after 10 s);
2. removes the embedded server's data directory (only a `poolbench-pg-*` directory) and a
   ui session's feed folder (`poolbench-ui-*`);
3. drops the private role and database on a `--database-url` server. The admin password
   was never written down, so this needs the URL again (`--database-url` or
   `DATABASE_URL`), for the same host and port; without it the run lists them as left;
4. marks the run `abandoned` (run.json and its running variants), with what was done and
   what is left, and masks the logs it left.

`poolbench run` does the same for its results root before it starts. What cannot be undone
is reported, and a later `clean` (with the URL) tries again.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from poolbench.errors import PoolbenchError, first_line
from poolbench.files import WriteFailed
from poolbench.infra import ledger, postgres
from poolbench.infra.undo import ORDER, UNDO, live_process
from poolbench.redact import mask_file, mask_text, mask_url
from poolbench.results.record import Owner, abandoned
from poolbench.results.run_folder import read_run_json, write_json, write_json_in_place
from poolbench.results.status import Status


@dataclass
class Cleaned:
    """What `clean` did for one run, and what it could not do."""

    run_dir: Path
    done: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    status: str = "abandoned"  # the run's status after cleaning (an ended run keeps its own)

    def lines(self) -> list[str]:
        done = "; ".join(self.done) or ("nothing more undone" if self.left else "nothing was left")
        return [f"{self.run_dir}: {self.status}: {done}", *(f"  left: {i}" for i in self.left)]


# --------------------------------------------------------------------------- finding runs


def owner_gone(owner: Owner | None) -> bool:
    """The run's own process has ended; False when that cannot be told (another host)."""
    if owner is None or owner.hostname != socket.gethostname():
        return False
    return live_process(owner.pid, owner.create_time) is None


def abandoned_runs(root: Path) -> list[Path]:
    """Run folders under root (or root itself) abandoned, or abandoned with things left."""
    own = root / "run.json"
    candidates = [own] if own.is_file() else sorted(root.glob("*/run.json"))
    found = []
    for run_json in candidates:
        run_dir = run_json.parent
        if run_dir.is_symlink() and run_dir != root:  # results/latest: seen by its own name
            continue
        try:
            _, run = read_run_json(run_dir)
        except PoolbenchError:
            continue
        left = ledger.leftovers(run_dir / ledger.LEDGER_FILE)
        running = run.status == Status.RUNNING and owner_gone(run.owner)
        unfinished = run.status == Status.ABANDONED and left
        # a run that ended (interrupted twice, failed) but did not release all it started
        ended_with_leftovers = run.status not in (Status.RUNNING, Status.ABANDONED) and left
        if running or unfinished or (ended_with_leftovers and owner_gone(run.owner)):
            found.append(run_dir)
    return found


def drop_database(item: ledger.Entry, database_url: str | None) -> str:
    """Drop a private database and role on the user's server; needs its URL again."""
    where = f"{item.get('host')}:{item.get('port')}"
    what = f"database {item.get('dbname')} and role {item.get('role')} on {where}"
    if not str(item.get("dbname", "")).startswith(postgres.APP_DATABASE + "_") or not str(
        item.get("role", "")
    ).startswith(postgres.APP_ROLE + "_"):
        raise PoolbenchError(f"{what}: not names poolbench makes; left alone")
    hint = f"{what} (run `poolbench clean --database-url postgresql://{item.get('user')}@{where}/postgres`)"
    if not database_url:
        raise PoolbenchError(hint)
    url = postgres.validate_url(database_url)
    params = postgres.url_params(url)
    if (params.get("host") or "127.0.0.1", int(params.get("port") or 5432)) != (
        item.get("host"),
        int(item.get("port") or 0),
    ):
        raise PoolbenchError(f"{hint}; {mask_url(database_url)} is another server")
    with postgres.connect(url) as admin:
        postgres.drop_app_database(admin, str(item["dbname"]), str(item["role"]))
    return f"dropped {what}"


def clean_run(run_dir: Path, database_url: str | None = None) -> Cleaned:
    """Undo what an abandoned run left, release it in its ledger, mark the run abandoned."""
    result = Cleaned(run_dir)
    for tmp in _temporary_files(run_dir):  # half-written files a killed run left (disk room too)
        with contextlib.suppress(OSError):
            tmp.unlink()
            result.done.append(f"removed {tmp.relative_to(run_dir)}")
    path = run_dir / ledger.LEDGER_FILE
    for item in sorted(ledger.leftovers(path), key=lambda i: ORDER.get(str(i.get("kind")), 9)):
        done: str | None
        try:
            if item.get("kind") == "database":
                done = drop_database(item, database_url)
            elif item.get("kind") in UNDO:
                done = UNDO[item["kind"]](item)
            else:
                continue
        except (PoolbenchError, OSError, psutil.Error) as exc:
            result.left.append(mask_text(first_line(exc)))
            continue
        except Exception as exc:  # a driver error: keep going, report it
            result.left.append(mask_text(f"{item.get('id')}: {first_line(exc)}"))
            continue
        if done:
            result.done.append(done)
        try:
            ledger.append(path, {"released": item["id"], "by": "clean"})
        except OSError as exc:  # undone all the same; a later clean finds nothing to undo
            result.left.append(f"{path}: cannot record that {item['id']} is gone ({exc.strerror})")
    try:
        mark_abandoned(run_dir, result)
    except (PoolbenchError, OSError) as exc:
        result.left.append(mask_text(first_line(exc)))
    return result


def _temporary_files(run_dir: Path) -> list[Path]:
    """Files poolbench.files writes before renaming them into place (`.NAME.PID.tmp`), and
    those of older versions (`.NAME.tmp`): never whole, never read."""
    return [p for p in run_dir.rglob(".*.tmp") if p.is_file() and not p.is_symlink()]


def mark_abandoned(run_dir: Path, result: Cleaned) -> None:
    """run.json and every variant still `running` say `abandoned`; the logs are masked."""
    meta, run = read_run_json(run_dir)
    pid = run.owner.pid if run.owner is not None else None
    error = (
        f"abandoned: its poolbench process (pid {pid}) ended without "
        "finishing the run (killed?); found by poolbench clean"
    )
    cleaned = {"at": time.time(), "done": result.done, "left": result.left}
    meta, changed = abandoned(meta, error, cleaned)
    result.status = Status.ABANDONED if run.status == Status.RUNNING else run.status
    for relative, written in changed:
        variant_dir = run_dir / relative
        if (variant_dir / "variant.json").is_file():
            _write_json_anyhow(variant_dir / "variant.json", written)
        for log in ("app.log", "locust.log"):  # masked as written since; not by older
            mask_file(variant_dir / log)  # versions of poolbench
    _write_json_anyhow(run_dir / "run.json", meta)


def _write_json_anyhow(path: Path, data: dict[str, Any]) -> None:
    """write_json, or in place when the disk is full; WriteFailed when neither works."""
    try:
        write_json(path, data)
    except WriteFailed:
        if not write_json_in_place(path, data):
            raise


def clean_root(root: Path, database_url: str | None = None) -> list[Cleaned]:
    return [clean_run(run_dir, database_url) for run_dir in abandoned_runs(root)]


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "root",
        metavar="RESULTS_ROOT",
        type=Path,
        nargs="?",
        default=Path("results"),
        help="results root (default: results/) or one run's folder",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="the server a --database-url run used: needed to drop its private role and database",
    )


def run(args: argparse.Namespace) -> int:
    """0 when nothing is left behind; 1 when something could not be undone (listed)."""
    if not args.root.is_dir():
        raise PoolbenchError(f"{args.root} is not a directory")
    results = clean_root(args.root, args.database_url)
    for result in results:
        for line in result.lines():
            print(line)
    if not results:
        print(f"nothing to clean under {args.root}")
    return 1 if any(r.left for r in results) else 0


def clean_before_run(root: Path, database_url: str | None) -> None:
    """What `poolbench run` does first: clean its results root, and say so on stderr."""
    if not root.is_dir():
        return
    for result in clean_root(root, database_url):
        for line in result.lines():
            print(f"poolbench: cleaned {line}" if line[0] != " " else line, file=sys.stderr)
