"""The results directory: the contract between a run and everything that reads it.

Layout and file formats are described in docs/results.md. Writers put each file under a
temporary name and rename it into place, so a file that exists is whole; run.json is
rewritten at every phase boundary and says `partial` or `failed` unless the run ended
well. Readers reject a malformed directory with a one-line message.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from poolbench.errors import PoolbenchError, first_line
from poolbench.files import WriteFailed, atomic_write, inside, rewrite_in_place, write_failed
from poolbench.redact import mask_tree
from poolbench.results import applog
from poolbench.results.events import EVENTS_FILE, LIFECYCLE_KINDS, read_events
from poolbench.results.record import (
    ExperimentRecord,
    RunEntry,
    RunState,
    VariantEntry,
    VariantRecord,
)
from poolbench.results.requests import RequestLog, read_requests, requests_damage, requests_file
from poolbench.results.status import Status

if TYPE_CHECKING:
    import pandas as pd

    from poolbench.results.pglog import ServerLog

EXIT_DAMAGED = 4  # `poolbench report` when a samples file is damaged (docs/results.md)
LOCUST_FILES = {
    "stats": "locust_stats.csv",
    "history": "locust_stats_history.csv",
    "failures": "locust_failures.csv",
    "exceptions": "locust_exceptions.csv",
}


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename), secrets masked."""
    atomic_write(path, json.dumps(mask_tree(data), indent=2, sort_keys=False, default=str) + "\n")


# Free space a run needs, estimated before it starts (check_free_space): measured on a quick
# run here, a variant wrote ~470 kB over 14 s of phases (samples.csv 220 kB, app.log 125 kB,
# requests.bin 25 kB, postgres.log 30 kB); the rate grows with connections and requests, so
# the estimate takes 64 KiB per second of phases and 1 MiB per variant, plus 4 MiB for the
# report and its charts: generous, so that a run refused is one that would not have fitted.
BYTES_PER_PHASE_SECOND = 64 * 1024
BYTES_PER_VARIANT = 1024 * 1024
BYTES_FOR_REPORT = 4 * 1024 * 1024


def check_results_root(root: Path) -> None:
    """Refuse, in one line and before anything starts, a results root poolbench cannot use:
    an existing file (or /dev/null), a folder it cannot write in, a path under a file."""
    if root.exists() and not root.is_dir():
        raise PoolbenchError(f"--out {root} is not a folder (it is a file)")
    existing = next((p for p in (root, *root.absolute().parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        raise PoolbenchError(f"--out {root}: {existing} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".poolbench-probe-"):
            pass
    except OSError as exc:
        raise PoolbenchError(
            f"--out {root}: cannot write in {existing}: {exc.strerror or type(exc).__name__}"
        ) from None


def estimate_bytes(experiments: list[Any]) -> int:
    """What a run of these experiments writes, at most (see BYTES_PER_PHASE_SECOND)."""
    total = BYTES_FOR_REPORT
    for experiment in experiments:
        phases = experiment.phases
        seconds = phases.warmup_s + phases.load_s + phases.soak_s + phases.idle_s
        runs = experiment.repeats * len(experiment.variants)
        total += runs * (BYTES_PER_VARIANT + int(seconds * BYTES_PER_PHASE_SECOND))
    return total


def check_free_space(root: Path, experiments: list[Any]) -> None:
    """Refuse a run the results root has no room for (a one-line error with both figures)."""
    from poolbench.format import mib

    existing = next(p for p in (root, *root.absolute().parents) if p.exists())
    need = estimate_bytes(experiments)
    free = shutil.disk_usage(existing).free
    if free < need:
        raise PoolbenchError(
            f"--out {root}: {mib(free)} free, this run needs about {mib(need)} "
            "(phases × 64 KiB/s per variant, 1 MiB per variant, 4 MiB for the report): "
            "free some space or choose another --out"
        )


def write_json_in_place(path: Path, data: Any) -> bool:
    """The fallback of write_json when the disk is full: `path` overwritten in place, compact
    (smaller than the indented text it replaces). Whether it worked."""
    return rewrite_in_place(path, json.dumps(mask_tree(data), default=str) + "\n")


def new_run_id(name: str = "") -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime())
    return f"{stamp}-{name}" if name else stamp


def claim_run_dir(root: Path, run_id: str, attempts: int = 1000) -> Path:
    """Create root/run_id, or run_id-2, -3, … when another run took it (same second).

    mkdir is atomic: of two runs racing for a name exactly one gets it.
    """
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_failed(root, exc) from None
    for n in range(1, attempts + 1):
        run_dir = root / (run_id if n == 1 else f"{run_id}-{n}")
        if not inside(root, run_dir) or run_dir.parent != root:
            raise PoolbenchError(f"run folder {run_dir.name!r} would not be a folder of {root}")
        try:
            run_dir.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise write_failed(run_dir, exc) from None
        return run_dir
    raise PoolbenchError(f"no free results directory name for {root / run_id}")


# --------------------------------------------------------------------------- writing


@dataclass
class RunRecord:
    """run.json kept current on disk while the run goes on: `state` (results/record.py) is
    the typed record the runner updates; `save()` writes its JSON."""

    run_dir: Path
    state: RunState = field(default_factory=RunState)

    @classmethod
    def create(
        cls,
        root: Path,
        run_id: str,
        command: str,
        config: Mapping[str, object],
        environment: Mapping[str, object],
    ) -> RunRecord:
        run_dir = claim_run_dir(root, run_id)
        state = RunState(
            run_id=run_dir.name,
            command=command,
            started_at=time.time(),
            owner=owner(),
            config=config,
            environment=dict(environment),
        )
        record = cls(run_dir, state)
        record.save()
        point_latest(root, run_dir)
        return record

    @property
    def data(self) -> dict[str, object]:
        """run.json as it is written."""
        return self.state.to_json()

    def save(self) -> None:
        write_json(self.run_dir / "run.json", self.data)

    def experiment(self, name: str, description: str, **fields: object) -> list[VariantRecord]:
        """The (new) variant list of an experiment entry; `fields` (claims, sweep, fail_if…)
        are recorded with it when they hold something."""
        for experiment in self.state.experiments:
            if experiment.name == name:
                return experiment.variants
        kept = {key: value for key, value in fields.items() if value}
        self.state.experiments.append(ExperimentRecord(name, description, kept))
        return self.state.experiments[-1].variants

    def variant_dir(self, entry: VariantRecord) -> Path:
        """The variant's folder, created; a `dir` that would lead out of the run is refused."""
        path = self.run_dir / entry.dir
        if not inside(self.run_dir, path):
            raise PoolbenchError(f"variant folder {entry.dir!r} would be outside {self.run_dir}")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_failed(path, exc) from None
        return path

    def save_variant(self, entry: VariantRecord) -> None:
        """Persist one variant's entry both in its folder and in run.json."""
        write_json(self.variant_dir(entry) / "variant.json", entry.to_json())
        self.save()

    def entry_for(self, variant_dir: Path) -> VariantRecord:
        """The run.json entry of the variant whose folder is `variant_dir`."""
        for entry in self.state.variants:
            if self.run_dir / entry.dir == variant_dir:
                return entry
        raise KeyError(variant_dir)

    def note_server(self, described: Mapping[str, object]) -> None:
        """environment.postgres: the first server the run used."""
        self.state.environment.setdefault("postgres", described)

    def finish(self, status: Status, error: str | None = None) -> None:
        """Record the run's end. When run.json cannot be rewritten whole (a full disk), it is
        overwritten in place, compact: the space its old text held is enough for the status
        a reader needs; if even that fails, the error that ended the run is not hidden."""
        state = self.state
        state.status, state.error, state.finished_at = Status(status), error, time.time()
        try:
            self.save()
        except WriteFailed as exc:
            if status in (
                Status.COMPLETE,
                Status.DEGRADED,
            ):  # a run that cannot record itself failed
                state.status, state.error = Status.FAILED, str(exc)
                write_json_in_place(self.run_dir / "run.json", self.data)
                raise
            if not write_json_in_place(self.run_dir / "run.json", self.data):
                raise


def owner() -> dict[str, object]:
    """Who runs this: pid, its start time (so a reused pid is not taken for it), host."""
    return {
        "pid": os.getpid(),
        "create_time": psutil.Process().create_time(),
        "hostname": socket.gethostname(),
    }


def point_latest(root: Path, run_dir: Path) -> None:
    """Make root/latest a symlink to run_dir, replacing the old one atomically."""
    link = root / "latest"
    tmp = root / f".latest.{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        tmp.symlink_to(run_dir.name)
        os.replace(tmp, link)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise write_failed(link, exc) from None


# --------------------------------------------------------------------------- reading
#
# The one reader of a results directory: analysis, the report and the text summary all go
# through load_run(). It validates run.json (a malformed one is a one-line PoolbenchError),
# keeps going past a variant that has nothing to read (a warning, not an error: a failed start
# leaves no samples), and never follows a variant `dir` out of the run directory.

SAMPLES_FILE = "samples.csv"
POSTGRES_LOG_FILE = "postgres.log"


@dataclass
class VariantResult:
    """One variant × repeat, loaded: its metadata and its frames.

    `meta` is the variant's entry in run.json, updated by its variant.json on disk.
    `samples` is empty (with the usual columns) when the variant left no samples file;
    `samples_path` says which file was read, if any. `locust` maps stats, history, failures
    and exceptions to frames (empty when absent; Locust's "N/A" reads as NaN).
    `postgres_log` is the server's own connection log when it was readable (embedded
    server); `server_log()` parses it, `postgres_log_reason` says why it is absent.
    """

    meta: dict[str, Any]
    path: Path
    samples: pd.DataFrame
    locust: dict[str, pd.DataFrame]
    samples_path: Path | None = None
    census: Any = None  # census.json (poolbench lint of the app), when present
    app_log: Path | None = None
    events: list[dict[str, Any]] = field(default_factory=list)  # events.jsonl, oldest first
    postgres_log: Path | None = None  # the embedded server's log (poolbench.results.pglog reads it)
    damage: list[str] = field(default_factory=list)  # why samples.csv or requests.bin is not whole
    requests_damaged: bool = False
    _entry: VariantEntry | None = field(default=None, repr=False, compare=False)
    _server_log: ServerLog | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def entry(self) -> VariantEntry:
        """`meta` read as a typed record (results/record.py), checked once."""
        if self._entry is None:
            self._entry = VariantEntry.from_json(self.meta, f"{self.path}/variant.json")
        return self._entry

    @functools.cached_property
    def refusals(self) -> dict[str, int | None]:
        """Requests refused with SQLSTATE 53300: {"app_log", "locust", "count"} (applog)."""
        return applog.refusals(self.app_log, self.locust.get("failures"))

    @property
    def lifecycle(self) -> list[dict[str, Any]]:
        """The watchdog's events (process exits and starts, restarts, user drops)."""
        return [e for e in self.events if e["event"] in LIFECYCLE_KINDS]

    @property
    def key(self) -> str:
        return self.entry.dir

    @property
    def experiment(self) -> str:
        return self.entry.experiment or self.path.parent.name

    @property
    def variant(self) -> str:
        return self.entry.variant or self.path.name

    @property
    def repeat(self) -> int:
        return self.entry.repeat

    @property
    def has_samples(self) -> bool:
        return self.samples_path is not None

    def requests(self) -> RequestLog | None:
        """Every request of the load phase (requests.bin, or the .part a crash left), read on
        demand (a long run holds millions); None when the variant recorded none. A damaged
        file (listed in `damage`) gives its whole records, or None when none can be read."""
        path = requests_file(self.path)
        if path is None:
            return None
        if not self.requests_damaged:
            return read_requests(path)
        try:
            return read_requests(path, damaged=True)
        except PoolbenchError:
            return None

    @property
    def postgres_log_reason(self) -> str | None:
        """Why there is no postgres.log (None when there is one): connections sampled only."""
        if self.postgres_log is not None:
            return None
        return (
            self.entry.postgres_log_reason
            or "no postgres.log in the variant folder: connections are sampled only"
        )

    def server_log(self) -> ServerLog | None:
        """postgres.log parsed into sessions and refusals (None without the file); read once."""
        if self.postgres_log is None:
            return None
        if self._server_log is None:
            from poolbench.results.pglog import read_log

            self._server_log = read_log(self.postgres_log)
        return self._server_log


@dataclass
class RunResult:
    path: Path
    meta: dict[str, Any]
    variants: list[VariantResult]
    warnings: list[str] = field(default_factory=list)
    _run: RunEntry | None = field(default=None, repr=False, compare=False)

    def experiment(self, name: str) -> list[VariantResult]:
        return [v for v in self.variants if v.experiment == name]

    @property
    def run(self) -> RunEntry:
        """`meta` (run.json) read as a typed record (results/record.py)."""
        if self._run is None:
            self._run = RunEntry.from_json(self.meta, f"{self.path}/run.json")
        return self._run

    @property
    def damaged(self) -> bool:
        """Some samples file is cut or incomplete (`poolbench report` exits EXIT_DAMAGED)."""
        return any(v.damage for v in self.variants)

    @property
    def experiment_names(self) -> list[str]:
        """Experiment names in run.json order."""
        return [e.name for e in self.run.experiments]


def _json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        # poolbench writes JSON atomically, so a broken file was damaged or edited by hand
        raise PoolbenchError(
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}): invalid JSON is never "
            "written by poolbench, so the file was damaged or edited"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PoolbenchError(f"{path} cannot be read ({exc})") from None


def read_run_json(run_dir: Path) -> tuple[dict[str, Any], RunEntry]:
    """run.json as written, and read as a typed record (its schema and fields checked)."""
    path = run_dir / "run.json"
    if not run_dir.exists():
        raise PoolbenchError(f"{run_dir} is not a results directory: no such results directory")
    if not run_dir.is_dir():
        raise PoolbenchError(f"{run_dir} is not a results directory (it is a file)")
    if not path.is_file():
        raise PoolbenchError(f"{run_dir} has no run.json: not a poolbench results directory")
    meta = _json_file(path)
    if not isinstance(meta, dict):
        raise PoolbenchError(f"{path} holds a JSON {type(meta).__name__}, not an object")
    return meta, RunEntry.from_json(meta, str(path))  # a mistake is one line


def _read_csv(path: Path) -> pd.DataFrame:
    """A Locust CSV; absent or empty is an empty frame. Only "N/A" and "" are missing values,
    so an endpoint or error message that reads "None" or "null" stays a string."""
    import pandas as pd  # here, not at the top: checking a results root before a run needs none

    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame()
    try:
        return pd.read_csv(path, na_values=["N/A", ""], keep_default_na=False)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise PoolbenchError(f"{path} is not a readable CSV: {first_line(exc)}") from None


def _no_samples() -> pd.DataFrame:
    import pandas as pd

    from poolbench.results.samples import COLUMNS

    frame = pd.DataFrame({c: pd.Series(dtype=str) for c in COLUMNS})
    return frame.astype({"ts": "float64", "value": "float64"})


def read_samples_file(
    path: Path, rows_written: int | None = None
) -> tuple[pd.DataFrame, Path | None, list[str]]:
    """samples.csv as a typed frame (poolbench.results.samples.read_samples), the file read, damage.

    When only samples.csv.part exists (the collector never closed it: a crash), it is read up
    to its last complete row. Neither file: an empty frame and None (a failed start). A closed
    file whose last line is cut, or whose row count differs from `rows_written` (what the
    collector recorded in variant.json), is damaged: its complete rows are read, and the
    damage is described, never hidden.
    """
    import pandas as pd

    from poolbench.results.samples import (
        PARTIAL_SUFFIX,
        ends_with_newline,
        read_samples,
        samples_damage,
    )

    partial = path.with_name(path.name + PARTIAL_SUFFIX)
    source = path if path.is_file() else partial if partial.is_file() else None
    if source is None:
        return _no_samples(), None, []
    if source.stat().st_size == 0:
        return _no_samples(), None, [f"{source.name} is empty (0 bytes)"]
    damage = samples_damage(source, rows_written) if source == path else []
    try:
        frame = read_samples(path, allow_partial=True, categorical=True)  # fast groupbys
    except (OSError, ValueError, KeyError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise PoolbenchError(f"{source} is malformed: {first_line(exc)}") from None
    if damage and not ends_with_newline(source) and len(frame):
        frame = frame.iloc[:-1]  # the cut row would read as a sample that never was
    return frame, source, damage


def _inside(run_dir: Path, relative: str) -> Path | None:
    """run_dir / relative, or None when it would lead out of run_dir (.., absolute, symlink)."""
    root = run_dir.resolve()
    candidate = (run_dir / relative).resolve()
    return run_dir / relative if root in candidate.parents else None


def _variant_entries(run_dir: Path, run: RunEntry) -> list[dict[str, Any]]:
    """Each variant's run.json entry, with its experiment's name."""
    entries = []
    for experiment in run.experiments:
        for entry in experiment.variants:
            if "dir" not in entry:
                raise PoolbenchError(
                    f"{run_dir}/run.json: a variant of {experiment.name!r} has no 'dir'"
                )
            entries.append({"experiment": experiment.name, **entry})
    return entries


def load_variant(run_dir: Path, entry: Mapping[str, Any], path: Path) -> VariantResult:
    """One variant directory: variant.json over its run.json entry, samples, Locust, census."""
    meta = dict(entry)
    if (path / "variant.json").is_file():
        on_disk = _json_file(path / "variant.json")
        if isinstance(on_disk, dict):
            meta = {**entry, **on_disk, "dir": entry["dir"]}
    typed = VariantEntry.from_json(meta, f"{path}/variant.json")
    samples, samples_path, damage = read_samples_file(path / SAMPLES_FILE, typed.rows_written)
    if samples_path is None and not damage and typed.collector:
        damage = [f"{SAMPLES_FILE} is missing (the collector ran: variant.json says how)"]
    requests_damage_ = requests_damage(path, expected=(path / "load.json").is_file())
    locust = {key: _read_csv(path / name) for key, name in LOCUST_FILES.items()}
    census = _json_file(path / "census.json") if (path / "census.json").is_file() else None
    app_log = path / "app.log" if (path / "app.log").is_file() else None
    events = read_events(path / EVENTS_FILE)
    pg_log = path / POSTGRES_LOG_FILE if (path / POSTGRES_LOG_FILE).is_file() else None
    result = VariantResult(
        meta,
        path,
        samples,
        locust,
        samples_path,
        census,
        app_log,
        events,
        pg_log,
        [*damage, *requests_damage_],
        _entry=typed,
    )
    result.requests_damaged = bool(requests_damage_)
    return result


def load_run(run_dir: str | os.PathLike[str]) -> RunResult:
    """Everything a report needs, read from disk only, with warnings about what is missing.

    Every variant listed in run.json is returned, in order, except one whose `dir` leads out
    of the run directory (a warning). A variant without samples is returned with an empty
    samples frame and a warning; the caller decides whether it can use it.
    """
    run_dir = Path(run_dir)
    meta, run = read_run_json(run_dir)
    variants: list[VariantResult] = []
    warnings: list[str] = []
    for entry in _variant_entries(run_dir, run):
        relative = str(entry["dir"] or "")
        path = _inside(run_dir, relative) if relative else None
        if path is None:
            name = f"{entry.get('experiment') or '?'}/{entry.get('variant') or '?'}"
            warnings.append(f"{name}: variant directory {relative!r} is missing or outside the run")
            continue
        variant = load_variant(run_dir, entry, path)
        status = variant.entry.status or "unknown"
        if variant.samples_path is None and not variant.damage:
            warnings.append(
                f"{relative}: no samples.csv (variant status: {status}): nothing to analyse"
            )
        elif variant.damage:
            warnings.extend(
                f"{relative}: damaged data, read up to its last complete row: {item}"
                for item in variant.damage
            )
        elif variant.samples_path is not None and variant.samples_path.name != SAMPLES_FILE:
            warnings.append(
                f"{relative}: only {variant.samples_path.name} (the collector did not finish); "
                "read up to its last complete row"
            )
        variants.append(variant)
    return RunResult(run_dir, meta, variants, warnings, _run=run)
