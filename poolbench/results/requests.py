"""Every request of a load phase, one fixed 16-byte record each: the writer and the reader.

Percentiles from Locust's rolling history are over overlapping 10-second windows; with one
record per request (start, response time, success, endpoint) p50/p95/p99 and goodput are exact
over any window. The format is described in docs/results.md:

- `requests.bin`: a 32-byte header (magic, base epoch, record size) and then records of
  `RECORD` (response time in ms as float32, start in ms after the base as int32, the virtual
  user that made it, endpoint code, ok, worker index). The user lets the analysis measure each
  user's think time (Little's law self-check). Version 1 files (float64 response time, no user)
  are still read. Written under `requests.bin.part`, whole records flushed at least once a
  second, renamed into place when Locust quits: a crash leaves a readable `.part`.
- `requests.names.json`: the endpoint table (the code is the index), rewritten atomically
  whenever a new endpoint appears and before any record that uses it is written; at the end it
  also holds the record count, so a closed file cut short is detected.

In a web UI session with several tests, `requests.bin` is the last test's and the earlier
tests' files are kept as `requests-1.bin`, `requests-2.bin`, … (each with its names table).

Load generators hand batches of `TRANSFER` rows (start as float64 epoch seconds) to
`RequestWriter.write`; in distributed mode they travel from Locust workers to the master.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from poolbench.errors import PoolbenchError
from poolbench.files import atomic_write

REQUESTS_FILE = "requests.bin"
NAMES_FILE = "requests.names.json"
PARTIAL_SUFFIX = ".part"
MAGIC = b"PBREQ\x00\x00\x02"  # format version 2 in the last byte
MAGIC_V1 = b"PBREQ\x00\x00\x01"
HEADER = struct.Struct("<8sdII8x")  # magic, base epoch (s), record size, record count hint (0)
RECORD = np.dtype(
    [("response_ms", "<f4"), ("start_ms", "<i4"), ("user", "<u4"), ("name", "<u2"),
     ("ok", "u1"), ("worker", "u1")]
)
RECORD_V1 = np.dtype(
    [("response_ms", "<f8"), ("start_ms", "<i4"), ("name", "<u2"), ("ok", "u1"), ("worker", "u1")]
)
TRANSFER = np.dtype(
    [("start", "<f8"), ("response_ms", "<f8"), ("name", "<u2"), ("ok", "?"), ("user", "<u4")]
)
MAX_NAMES = 65535
assert RECORD.itemsize == RECORD_V1.itemsize == 16 and HEADER.size == 32


@dataclass(frozen=True)
class RequestLog:
    """One load phase's requests as columns of equal length, in the order they were written.

    `name` indexes `names` (Locust's request name) and `methods` (its request type, e.g. GET);
    `worker` is the Locust worker that made the request (0 without workers).
    """

    start: np.ndarray  # float64, Unix epoch seconds when the request started (ms resolution)
    response_ms: np.ndarray  # float64, as Locust measured it (NaN when it gave none)
    ok: np.ndarray  # bool, the request event's exception was None
    name: np.ndarray  # int (uint16 codes)
    names: tuple[str, ...]
    methods: tuple[str, ...]
    worker: np.ndarray  # uint8
    user: np.ndarray | None = None  # uint32, per worker; None in a version 1 file

    def user_keys(self) -> np.ndarray | None:
        """One key per virtual user across workers (a user id is unique per worker only)."""
        if self.user is None:
            return None
        return self.worker.astype(np.uint64) << np.uint64(32) | self.user.astype(np.uint64)

    def __len__(self) -> int:
        return len(self.start)


def requests_file(variant_dir: Path) -> Path | None:
    """The variant's requests file: the closed one, else a `.part` left by a crash, else None."""
    path = Path(variant_dir) / REQUESTS_FILE
    partial = path.with_name(path.name + PARTIAL_SUFFIX)
    return path if path.is_file() else partial if partial.is_file() else None


def names_path(path: Path) -> Path:
    """The endpoint table beside a requests file (or its .part)."""
    stem = path.name.removesuffix(PARTIAL_SUFFIX).removesuffix(".bin")
    return path.with_name(f"{stem}.names.json")


def numbered(path: Path, number: int) -> Path:
    """`requests.bin` → `requests-<number>.bin`: an earlier test's file in a web UI session."""
    return path.with_name(f"{path.name.removesuffix('.bin')}-{number}.bin")


def move_requests(source: Path, target: Path) -> None:
    """Rename a closed requests file and its endpoint table together."""
    os.replace(names_path(source), names_path(target))
    os.replace(source, target)


# --------------------------------------------------------------------------- writing


class RequestWriter:
    """Appends batches of requests to `<path>.part`; `close()` renames it to `path`.

    Endpoint codes are the writer's own: each batch brings its (method, name) keys, mapped here,
    so batches from several Locust workers share one table.
    """

    def __init__(self, path: Path, base_epoch: float) -> None:
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + PARTIAL_SUFFIX)
        self.base = float(int(base_epoch))
        self.keys: list[tuple[str, str]] = []
        self._codes: dict[tuple[str, str], int] = {}
        self.count = 0
        self._handle: BinaryIO | None = self.partial.open("wb")
        self._handle.write(HEADER.pack(MAGIC, self.base, RECORD.itemsize, 0))
        self._handle.flush()
        self._write_names(final=False)

    def write(self, rows: np.ndarray, keys: list[tuple[str, str]], worker: int = 0) -> None:
        """Append TRANSFER rows whose `name` indexes `keys`, and flush them to disk."""
        if self._handle is None or len(rows) == 0:
            return
        mapping = np.array([self._code((key[0], key[1])) for key in keys] or [0], dtype="<u2")
        records = np.empty(len(rows), dtype=RECORD)
        records["response_ms"] = rows["response_ms"]
        records["start_ms"] = np.round((rows["start"] - self.base) * 1000.0)
        records["name"] = mapping[rows["name"]]
        records["ok"] = rows["ok"]
        records["user"] = rows["user"]
        records["worker"] = min(max(worker, 0), 255)
        self._handle.write(records.tobytes())
        self._handle.flush()
        self.count += len(records)

    def close(self) -> None:
        """Record the count beside the names, then rename the file into place."""
        if self._handle is None:
            return
        self._handle.close()
        self._handle = None
        self._write_names(final=True)
        os.replace(self.partial, self.path)

    def _code(self, key: tuple[str, str]) -> int:
        code = self._codes.get(key)
        if code is None:
            if len(self.keys) >= MAX_NAMES:
                raise PoolbenchError(f"more than {MAX_NAMES} request names: name your requests")
            code = self._codes[key] = len(self.keys)
            self.keys.append(key)
            self._write_names(final=False)  # before any record that uses the new code
        return code

    def _write_names(self, final: bool) -> None:
        data: dict[str, Any] = {
            "format": "poolbench.requests",
            "version": 2,
            "record": "response_ms <f4, start_ms <i4, user <u4, name <u2, ok u1, worker u1",
            "base_epoch": self.base,
            "methods": [method for method, _ in self.keys],
            "names": [name for _, name in self.keys],
            "count": self.count if final else None,
        }
        target = names_path(self.path)
        atomic_write(target, json.dumps(data) + "\n")


# --------------------------------------------------------------------------- reading


def _damaged(path: Path, why: str) -> PoolbenchError:
    return PoolbenchError(f"{path} is damaged: {why}")


def _read_names(path: Path) -> dict[str, Any]:
    side = names_path(path)
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _damaged(path, f"its endpoint table {side.name} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _damaged(path, f"{side.name} is not readable JSON ({exc})") from None
    names = data.get("names") if isinstance(data, dict) else None
    methods = data.get("methods") if isinstance(data, dict) else None
    if not (isinstance(names, list) and isinstance(methods, list) and len(names) == len(methods)):
        raise _damaged(path, f"{side.name} lacks equal 'names' and 'methods' lists")
    return dict(data)


def requests_damage(variant_dir: Path, expected: bool) -> list[str]:
    """Why a variant's requests file is not whole, without reading its records: missing (when
    `expected`: Locust ran with poolbench's plugin), shorter than its header, a cut last
    record, a record count other than the one written, a missing endpoint table. The same
    rule as samples.csv's (poolbench.results.samples.samples_damage): `report` exits 4 on any."""
    path = requests_file(variant_dir)
    if path is None:
        return [f"{REQUESTS_FILE} is missing (Locust ran)"] if expected else []
    if path.name.endswith(PARTIAL_SUFFIX):
        return []  # a crash's .part: read up to its last whole record, said by the reader
    size = path.stat().st_size
    if size < HEADER.size:
        return [
            f"{path.name} is {'empty' if size == 0 else f'{size} bytes'}, shorter than its header"
        ]
    damage = []
    body = size - HEADER.size
    if body % RECORD.itemsize:
        damage.append(f"{path.name}: its last record is cut ({body % RECORD.itemsize} stray bytes)")
    try:
        count = _read_names(path).get("count")
    except PoolbenchError as exc:
        return [*damage, str(exc).removeprefix(f"{path} is damaged: ")]
    if isinstance(count, int) and count != body // RECORD.itemsize:
        damage.append(f"{path.name}: {body // RECORD.itemsize} records where {count} were written")
    return damage


def read_requests(path: str | os.PathLike[str], *, damaged: bool = False) -> RequestLog:
    """A requests file (or its `.part`, whose cut last record is dropped) as a RequestLog.

    Anything else that does not add up (bad header, a closed file cut short or longer than its
    recorded count, an endpoint code outside the table) is a one-line PoolbenchError, unless
    `damaged` (the damage is already reported: requests_damage): then its whole records are
    read, as from a `.part`.
    """
    path = Path(path)
    partial = path.name.endswith(PARTIAL_SUFFIX) or damaged
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PoolbenchError(f"{path} cannot be read ({exc.strerror or exc})") from None
    if len(raw) < HEADER.size:
        raise _damaged(path, f"{len(raw)} bytes, shorter than its {HEADER.size}-byte header")
    magic, base, size, _ = HEADER.unpack_from(raw)
    record = {MAGIC: RECORD, MAGIC_V1: RECORD_V1}.get(magic)
    if record is None or size != record.itemsize or not np.isfinite(base):
        raise _damaged(path, "not a poolbench requests file (bad header)")
    body = len(raw) - HEADER.size
    whole = body // RECORD.itemsize
    if body % RECORD.itemsize and not partial:
        raise _damaged(path, f"its last record is cut ({body % RECORD.itemsize} stray bytes)")
    records = np.frombuffer(raw, dtype=record, count=whole, offset=HEADER.size)
    table = _read_names(path)
    if not partial and table.get("count") is not None and table["count"] != whole:
        raise _damaged(path, f"{whole} records where {table['count']} were written")
    if whole and int(records["name"].max()) >= len(table["names"]):
        raise _damaged(path, "an endpoint code outside its endpoint table")
    if whole and int(records["ok"].max()) > 1:
        raise _damaged(path, "an ok flag other than 0 or 1")
    return RequestLog(
        start=base + records["start_ms"].astype("f8") / 1000.0,
        response_ms=records["response_ms"].astype("f8"),
        ok=records["ok"].astype(bool),
        name=records["name"].astype(np.int64),
        names=tuple(str(n) for n in table["names"]),
        methods=tuple(str(m) for m in table["methods"]),
        worker=records["worker"].copy(),
        user=records["user"].copy() if "user" in (record.names or ()) else None,
    )
