"""samples.csv: the collector's time series in tidy long form (see docs/results.md).

One row per timestamp × metric × label set::

    ts,metric,application_name,state,wait_event_type,component,value

`SamplesWriter` streams rows to ``<name>.part`` next to the final path, flushes them to the
operating system at least once a second, and renames the file into place on `close()`, so
a ``samples.csv`` that exists is whole; after a crash the ``.part`` file holds everything
up to the last flush (each flushed row is complete). `read_samples` gives the rows back as
a typed pandas DataFrame. An empty ``value`` means *unavailable* and reads as NaN; it is
never written for a zero.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from poolbench.errors import PoolbenchError
from poolbench.files import write_failed

if TYPE_CHECKING:  # pandas is imported by the readers only: the collector stays light
    import pandas as pd

COLUMNS: tuple[str, ...] = (
    "ts",
    "metric",
    "application_name",
    "state",
    "wait_event_type",
    "component",
    "value",
)
LABELS: tuple[str, ...] = COLUMNS[2:6]
PARTIAL_SUFFIX = ".part"

# (ts, metric, application_name, state, wait_event_type, component, value)
Row = tuple[float, str, str, str, str, str, float | int | None]


def row(
    ts: float,
    metric: str,
    value: float | int | None,
    *,
    application_name: str = "",
    state: str = "",
    wait_event_type: str = "",
    component: str = "",
) -> Row:
    """A row with named labels; unnamed labels are empty (not applicable)."""
    return (ts, metric, application_name, state, wait_event_type, component, value)


def format_value(value: float | int | None) -> str:
    """Integers as integers, floats to 4 decimals, None and NaN as empty (unavailable)."""
    if value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value) or math.isinf(value):
        return ""
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


class SamplesWriter:
    """Append-only CSV writer: header first, rows streamed, flushed ≥ 1/s, atomic close."""

    def __init__(self, path: str | os.PathLike[str], *, flush_interval: float = 1.0) -> None:
        self.path = Path(path)
        self.partial_path = self.path.with_name(self.path.name + PARTIAL_SUFFIX)
        self.flush_interval = flush_interval
        self.rows_written = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file: TextIO | None = open(self.partial_path, "w", newline="", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise write_failed(self.partial_path, exc) from None
        self._csv = csv.writer(self._file, lineterminator="\n")
        with self._writing():
            self._csv.writerow(COLUMNS)
            self._file.flush()
        self._last_flush = time.monotonic()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """A write that fails (a full disk) is a WriteFailed naming the file, not an OSError."""
        try:
            yield
        except OSError as exc:
            raise write_failed(self.partial_path, exc) from None

    @property
    def closed(self) -> bool:
        return self._file is None

    def write(self, rows: Iterable[Row]) -> None:
        """Write rows; flush to the OS when the last flush is a second old or more."""
        if self._file is None:
            raise ValueError(f"{self.path} is closed")
        n = 0
        lines = []
        for ts, metric, app, state, wait, component, value in rows:
            lines.append((f"{ts:.3f}", metric, app, state, wait, component, format_value(value)))
            n += 1
        with self._writing():
            self._csv.writerows(lines)
        self.rows_written += n
        self.maybe_flush()

    def maybe_flush(self) -> None:
        if self._file is not None and time.monotonic() - self._last_flush >= self.flush_interval:
            self.flush()

    def flush(self) -> None:
        if self._file is not None:
            with self._writing():
                self._file.flush()
            self._last_flush = time.monotonic()

    def close(self) -> None:
        """Flush, sync and rename into place. Idempotent."""
        if self._file is None:
            return
        file, self._file = self._file, None
        try:
            with self._writing():
                file.flush()
            with contextlib.suppress(OSError):
                os.fsync(file.fileno())
        finally:
            with contextlib.suppress(OSError):  # what a full disk kept is in the .part
                file.close()
        os.replace(self.partial_path, self.path)

    def __enter__(self) -> SamplesWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_samples(
    path: str | os.PathLike[str], *, allow_partial: bool = False, categorical: bool = False
) -> pd.DataFrame:
    """samples.csv as a DataFrame: ``ts`` and ``value`` float64 (NaN = unavailable), labels str.

    `path` may be the file or the directory holding ``samples.csv``. With `allow_partial`,
    a run still being written (or cut short by a crash) is read from ``samples.csv.part``
    when ``samples.csv`` does not exist; a last row cut mid-line there (the crash came while
    it was written) is dropped, since pandas would pad it into a sample that never was.
    `categorical` stores the label columns as pandas
    categories (much less memory for hour-long runs; group with ``observed=True``).
    """
    import pandas as pd

    path = Path(path)
    if path.is_dir():
        path = path / "samples.csv"
    partial = path.with_name(path.name + PARTIAL_SUFFIX)
    if not path.exists() and allow_partial and partial.exists():
        path = partial
    if not path.exists():
        raise PoolbenchError(f"no samples file at {path}")
    with open(path, encoding="utf-8", newline="") as f:
        header = f.readline().strip()
    if tuple(header.split(",")) != COLUMNS:
        raise PoolbenchError(f"{path} is not a poolbench samples file (header {header[:80]!r})")
    labels = "category" if categorical else str  # parsed straight into codes: no re-factorising
    frame = pd.read_csv(
        path,
        dtype={**dict.fromkeys(("metric", *LABELS), labels), "ts": "float64", "value": "float64"},
        keep_default_na=False,
        na_values={"value": [""], "ts": [""]},
        on_bad_lines="skip" if path.name.endswith(PARTIAL_SUFFIX) else "error",
    )
    if path.name.endswith(PARTIAL_SUFFIX):
        if len(frame) and not ends_with_newline(path):
            frame = frame.iloc[:-1]
        frame = frame.dropna(subset=["ts"])
    return frame


def ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return True
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def samples_damage(path: Path, rows_written: int | None) -> list[str]:
    """Why a closed samples.csv is not whole: a cut last line, or fewer (or more) complete
    rows than `rows_written`, the count the collector recorded (variant.json)."""
    damage = []
    if not ends_with_newline(path):
        damage.append(f"{path.name}: its last line is cut (the file was truncated)")
    if rows_written is not None:
        rows = _count_lines(path) - 1  # complete rows, without the header
        if rows != rows_written:
            damage.append(
                f"{path.name}: holds {max(rows, 0)} complete rows, the collector wrote "
                f"{rows_written}"
            )
    return damage


def _count_lines(path: Path) -> int:
    """Newlines in a file, read in 1 MiB blocks (a label never holds one: no quoted newlines)."""
    count = 0
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            count += block.count(b"\n")
    return count


def connections_wide(samples: pd.DataFrame, by: str = "application_name") -> pd.DataFrame:
    """Connections per sample (rows: ts) and `by` label (columns), absent groups filled with 0.

    The collector writes a `connections` row only for groups that exist; every sample has a
    `connections_total` row, so its timestamps define the samples and a missing group at
    one of them means zero connections.
    """
    ticks = samples.loc[samples.metric == "connections_total", "ts"].drop_duplicates()
    rows = samples[samples.metric == "connections"]
    wide = rows.groupby(["ts", by]).value.sum().unstack(fill_value=0)
    return wide.reindex(ticks.sort_values().to_numpy(), fill_value=0).rename_axis("ts")
