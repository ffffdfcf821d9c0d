"""Read what the pool probe wrote in a variant's `probe/` folder: engines, gauges, checkouts.

Each Python process of the app that created an engine wrote two files (docs/results.md):
`<pid>.jsonl` (its process, its engines by creation site, their application_name, and the
gauges and counters whenever they changed, at most every 0.1 s) and `<pid>.bin` (one 20-byte
record per checkout, timeout, failed checkout and new connection). They are streamed while the
app runs, so a process killed hard leaves a last line or record cut short: it is dropped, and
the process is marked `ended=False` (no `end` line).

Here the reader sits at the root (poolbench/results/run_folder.py is still a module at this branch point;
the lead's layout move puts it under `results/`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from poolbench.probe import PROBE_DIRNAME

RECORD_DTYPE = np.dtype(
    [("t", "<f8"), ("a", "<f4"), ("b", "<f4"), ("engine", "<u2"), ("kind", "<u2")]
)
KINDS = {0: "checkout", 1: "timeout", 2: "error", 3: "connect"}
OPENED = 0x100  # a checkout that opened a new connection
SAMPLE_COLUMNS = (
    "out", "idle", "open", "overflow", "pending", "connecting", "out_max", "pending_max", "checkouts",
    "connects", "closes", "closes_detached", "detaches", "invalidations", "soft_invalidations",
    "pre_ping_failures", "timeouts", "errors", "engines",
)


class ProbeFileError(Exception):
    """A probe file that is not what the probe writes (not JSON lines of its schema)."""


@dataclass(frozen=True)
class ProbeEngine:
    """One creation site in one process: where, against what, and its pool's settings."""

    pid: int
    engine: int  # the process's own number for it
    site: str  # module:line, as `poolbench lint` names it
    file: str
    pool_class: str
    pool_size: int | None
    max_overflow: int | None
    ceiling: int | None  # pool_size + max_overflow; None when unbounded (NullPool, -1)
    pool_timeout: float | None
    pool_recycle: float | None
    pool_pre_ping: bool
    driver: str
    database: str | None
    user: str | None
    application_name: str | None  # what its connections are named, once one was opened
    name_source: str | None  # "app" (its own) or "probe" (the creation site)


@dataclass(frozen=True)
class ProbeProcess:
    pid: int
    ppid: int
    started: float
    python: str
    sqlalchemy: str
    interval_s: float
    ended: bool  # wrote its `end` line (exited normally)
    damaged_lines: int = 0  # lines that were not JSON (skipped)


@dataclass(frozen=True)
class ProbeData:
    """A variant's probe files, joined: `samples` and `checkouts` carry `pid` and `site`."""

    processes: tuple[ProbeProcess, ...]
    engines: tuple[ProbeEngine, ...]
    samples: pd.DataFrame  # t, pid, engine, site, SAMPLE_COLUMNS
    checkouts: pd.DataFrame  # t, pid, engine, site, kind, wait_s / use_s / create_s
    skipped: tuple[str, ...] = ()  # files left out: not the probe's, or damaged at the head

    def sites(self) -> list[str]:
        return sorted({e.site for e in self.engines})


def read_probe(variant_dir: Path) -> ProbeData | None:
    """The probe's data for a variant folder; None when the probe wrote nothing there."""
    folder = Path(variant_dir) / PROBE_DIRNAME
    files = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    if not files:
        return None
    processes, engines, samples, checkouts = [], [], [], []
    skipped = []
    for path in files:
        try:
            process, found, rows = _read_lines(path)
        except (ProbeFileError, KeyError, TypeError, ValueError):
            skipped.append(path.name)  # not the probe's (or its head is damaged): left out
            continue
        processes.append(process)
        engines += found
        samples += rows
        checkouts.append(_read_records(path.with_suffix(".bin"), process.pid))
    if not processes:
        return None
    return _join(processes, engines, samples, checkouts, skipped)


def _read_lines(path: Path) -> tuple[ProbeProcess, list[ProbeEngine], list[dict[str, Any]]]:
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    if lines and lines[-1] and not text.endswith("\n"):
        lines = lines[:-1]  # cut short by a kill: dropped
    objs, bad = [], 0
    for line in filter(None, lines):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            bad += 1  # a damaged line: counted, the rest still read
            continue
        if isinstance(obj, dict):
            objs.append(obj)
    heads = [o for o in objs if o.get("type") == "process"]
    if not heads:
        raise ProbeFileError(f"{path}: no process line (not a probe file)")
    head = heads[0]
    process = ProbeProcess(
        pid=int(head["pid"]), ppid=int(head.get("ppid", 0)), started=float(head["t"]),
        python=str(head.get("python", "?")), sqlalchemy=str(head.get("sqlalchemy", "?")),
        interval_s=float(head.get("interval_s", 0.1)),
        ended=any(o.get("type") == "end" for o in objs), damaged_lines=bad,
    )
    names = {o["engine"]: o for o in objs if o.get("type") == "application_name"}
    engines = [
        _engine(process.pid, o, names.get(o["engine"])) for o in objs if o.get("type") == "engine"
    ]
    rows = [{"pid": process.pid, **o} for o in objs if o.get("type") == "sample"]
    return process, engines, rows


def _engine(pid: int, o: dict[str, Any], name: dict[str, Any] | None) -> ProbeEngine:
    return ProbeEngine(
        pid=pid, engine=int(o["engine"]), site=str(o["site"]), file=str(o.get("file", "")),
        pool_class=str(o.get("pool_class", "?")), pool_size=o.get("pool_size"),
        max_overflow=o.get("max_overflow"), ceiling=o.get("ceiling"),
        pool_timeout=o.get("pool_timeout"), pool_recycle=o.get("pool_recycle"),
        pool_pre_ping=bool(o.get("pool_pre_ping")), driver=str(o.get("driver", "?")),
        database=o.get("database"), user=o.get("user"),
        application_name=name["name"] if name else None,
        name_source=name["source"] if name else None,
    )


def _read_records(path: Path, pid: int) -> pd.DataFrame:
    data = path.read_bytes() if path.exists() else b""
    whole = len(data) - len(data) % RECORD_DTYPE.itemsize  # a cut last record is dropped
    arr = np.frombuffer(data[:whole], dtype=RECORD_DTYPE)
    kinds = arr["kind"].astype(int)
    frame = pd.DataFrame(
        {
            "t": arr["t"],
            "pid": pid,
            "engine": arr["engine"].astype(int),
            "kind": _kinds(kinds & 0xFF),
            "opened": (kinds & OPENED) != 0,  # the checkout's wait includes opening a connection
            "wait_s": arr["a"].astype(float),
            "use_s": arr["b"].astype(float),
        }
    )
    connect = frame["kind"] == "connect"
    frame["create_s"] = np.where(connect, frame["wait_s"], np.nan)
    frame.loc[connect, ["wait_s", "use_s"]] = np.nan
    return frame


def _kinds(codes: np.ndarray) -> "pd.Categorical[str]":
    """Each record's kind by name ("?" for a code the reader does not know), one array lookup
    rather than a dict lookup per record (an hour holds millions)."""
    categories = [*KINDS.values(), "?"]
    table = np.full(256, len(KINDS), dtype=np.int8)  # codes are one byte
    for position, code in enumerate(KINDS):
        table[code] = position
    positions: npt.NDArray[np.int8] = table[codes]
    kinds: pd.Categorical[str] = pd.Categorical.from_codes(positions, categories=pd.Index(categories))
    return kinds


def _join(
    processes: list[ProbeProcess],
    engines: list[ProbeEngine],
    samples: list[dict[str, Any]],
    checkouts: list[pd.DataFrame],
    skipped: list[str],
) -> ProbeData:
    sites = pd.DataFrame(
        [(e.pid, e.engine, e.site) for e in engines], columns=["pid", "engine", "site"]
    )
    frame = pd.DataFrame(samples, columns=["t", "pid", "engine", *SAMPLE_COLUMNS])
    frame = frame.merge(sites, on=["pid", "engine"], how="left").sort_values("t")
    records = pd.concat(checkouts, ignore_index=True) if checkouts else pd.DataFrame()
    if len(records):
        records = records.merge(sites, on=["pid", "engine"], how="left").sort_values("t")
    else:
        records = pd.DataFrame(
            columns=["t", "pid", "engine", "kind", "wait_s", "use_s", "create_s", "site"]
        )
    return ProbeData(
        processes=tuple(sorted(processes, key=lambda p: p.pid)),
        engines=tuple(engines),
        samples=frame.reset_index(drop=True),
        checkouts=records.reset_index(drop=True),
        skipped=tuple(skipped),
    )


class ProbeTail:
    """The probe's newest gauges while the app runs (for the UI's live Database tab).

    Reads only the bytes appended to each `<pid>.jsonl` since the last call; keeps each
    engine's description and last sample. `pools()` sums them per engine over the processes:
    checked out, ceiling (the pools' sum; None when one is unbounded), waiting."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._offsets: dict[Path, int] = {}
        self._rest: dict[Path, bytes] = {}
        self._engines: dict[tuple[int, int], dict[str, Any]] = {}
        self._last: dict[tuple[int, int], dict[str, Any]] = {}
        self._names: dict[tuple[int, int], str] = {}

    def poll(self) -> None:
        for path in sorted(self.folder.glob("*.jsonl")) if self.folder.is_dir() else []:
            try:
                with path.open("rb") as handle:
                    handle.seek(self._offsets.get(path, 0))
                    data = handle.read()
            except OSError:
                continue
            self._offsets[path] = self._offsets.get(path, 0) + len(data)
            *lines, self._rest[path] = (self._rest.get(path, b"") + data).split(b"\n")
            pid = int(path.stem) if path.stem.isdigit() else 0
            for line in lines:
                self._take(pid, line)

    def _take(self, pid: int, line: bytes) -> None:
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            return
        kind, key = item.get("type"), (pid, item.get("engine"))
        if kind == "engine":
            self._engines[key] = item
        elif kind == "sample":
            self._last[key] = item
        elif kind == "application_name":
            self._names[key] = str(item.get("name"))

    def pools(self) -> list[dict[str, Any]]:
        by_site: dict[str, dict[str, Any]] = {}
        for key, engine in self._engines.items():
            sample = self._last.get(key, {})
            site = str(engine.get("site"))
            row = by_site.setdefault(
                site,
                {"site": site, "name": self._names.get(key), "pool_class": engine.get("pool_class"),
                 "out": 0, "ceiling": 0, "waiting": 0, "processes": 0},
            )
            row["name"] = row["name"] or self._names.get(key)
            row["out"] += int(sample.get("out") or 0)
            queued = int(sample.get("pending") or 0) - int(sample.get("connecting") or 0)
            row["waiting"] += max(0, queued)
            row["processes"] += 1
            ceiling = engine.get("ceiling")
            row["ceiling"] = (
                None if ceiling is None or row["ceiling"] is None else row["ceiling"] + ceiling
            )
        return sorted(by_site.values(), key=lambda r: r["site"])
