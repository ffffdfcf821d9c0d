"""run.json and variant.json read back as typed records (docs/results.md).

The run writes these files as JSON objects kept current at every phase boundary
(`run_folder.RunRecord`); everything that reads a run — the analysis, the report, the text
summary, `poolbench compare` — gets them through `RunEntry.from_json` and
`VariantEntry.from_json`, which check each field once, here, instead of every reader calling
`.get(...)` with its own fallback. A field of the wrong type is a one-line error naming the
file and the key; a field that is absent (an older run, a variant that failed to start) is
None or empty, as documented. `raw` keeps the whole object for the few sections no reader
needs typed yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from poolbench.errors import PoolbenchError
from poolbench.results.status import Status

SCHEMA = 1  # run.json's "schema": the version this reader (and the writer) agree on


@dataclass(frozen=True)
class Phase:
    """A phase of a variant: warm-up, load, idle (or `load 1`, … in a ui session)."""

    name: str
    start: float
    end: float | None  # None while it runs, or when the run was cut during it

    @property
    def seconds(self) -> float | None:
        return None if self.end is None else self.end - self.start


@dataclass(frozen=True)
class EngineEntry:
    """An engine the app creates, with its pool settings per process (census or declared)."""

    name: str
    pool_size: float | None
    max_overflow: float
    raw: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class VariantEntry:
    """One variant × repeat as run.json and its variant.json record it."""

    dir: str
    experiment: str
    variant: str
    repeat: int
    label: str
    status: Status | None
    error: str | None
    workers: int
    phases: tuple[Phase, ...]
    engines: tuple[EngineEntry, ...]
    app_processes_max: int | None  # app_processes.max_with_db_connections
    dbname: str | None  # database.dbname: the database the app used
    postgres_log_reason: str | None
    rows_written: int | None  # collector.rows_written: what samples.csv must hold
    collector: Mapping[str, Any]
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> VariantEntry:
        read = _Reader(data, where)
        variant = read.text("variant") or ""
        return cls(
            dir=read.text("dir") or "",
            experiment=read.text("experiment") or "",
            variant=variant,
            repeat=read.integer("repeat") or 1,
            label=read.text("label") or variant,
            status=read.status("status"),
            error=read.text("error") or None,
            workers=read.integer("workers") or 1,
            phases=tuple(_phase(p, f"{where}.phases") for p in read.items("phases")),
            engines=tuple(
                e for e in (_engine(p, f"{where}.engines") for p in read.items("engines")) if e
            ),
            app_processes_max=_Reader(read.section("app_processes"), where).integer(
                "max_with_db_connections"
            ),
            dbname=_Reader(read.section("database"), where).text("dbname"),
            postgres_log_reason=_Reader(read.section("postgres_log"), where).text("reason"),
            rows_written=_Reader(read.section("collector"), where).integer("rows_written"),
            collector=read.section("collector"),
            raw=data,
        )

    def phase(self, name: str) -> Phase | None:
        """The last phase of that name (a ui session can repeat names only as `load N`)."""
        return next((p for p in reversed(self.phases) if p.name == name), None)


@dataclass(frozen=True)
class ExperimentEntry:
    name: str
    description: str
    fail_if: tuple[str, ...]
    sweep: Mapping[str, Any]  # {"of", "pool_size"} for a `poolbench size` point, else empty
    variants: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True)
class RunEntry:
    """run.json: the run as a whole."""

    run_id: str
    status: Status
    error: str | None
    command: str | None
    started_at: float | None
    finished_at: float | None
    environment: Mapping[str, Any]
    experiments: tuple[ExperimentEntry, ...]
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> RunEntry:
        read = _Reader(data, where)
        for key in ("schema", "run_id", "status", "experiments"):
            if key not in data:
                raise PoolbenchError(f"{where} lacks the key {key!r}")
        if data["schema"] != SCHEMA:
            raise PoolbenchError(f"{where} has schema {data['schema']}, this poolbench reads {SCHEMA}")
        status = read.status("status")
        assert status is not None  # present: checked above
        command = data.get("command")
        return cls(
            run_id=read.text("run_id") or "",
            status=status,
            error=read.text("error") or None,
            command=" ".join(map(str, command)) if isinstance(command, list) else read.text("command"),
            started_at=read.number("started_at"),
            finished_at=read.number("finished_at"),
            environment=read.section("environment"),
            experiments=tuple(_experiment(e, f"{where}.experiments") for e in read.items("experiments")),
            raw=data,
        )

    def experiment(self, name: str) -> ExperimentEntry | None:
        return next((e for e in self.experiments if e.name == name), None)


# --------------------------------------------------------------------------- checked fields


class _Reader:
    """Typed access to one JSON object's fields, each mistake one line naming the key."""

    def __init__(self, data: Mapping[str, Any], where: str) -> None:
        self.data, self.where = data, where

    def _bad(self, key: str, wanted: str) -> PoolbenchError:
        value = self.data.get(key)
        return PoolbenchError(f"{self.where}: {key!r} must be {wanted}, got {value!r}")

    def text(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise self._bad(key, "a string")

    def number(self, key: str) -> float | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._bad(key, "a number")
        return float(value)

    def integer(self, key: str) -> int | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
            raise self._bad(key, "a whole number")
        return int(value)

    def status(self, key: str) -> Status | None:
        value = self.data.get(key)
        if value is None:
            return None
        try:
            return Status(value)
        except ValueError:
            raise PoolbenchError(f"{self.where} has unknown status {value!r}") from None

    def section(self, key: str) -> Mapping[str, Any]:
        value = self.data.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self._bad(key, "an object")
        return value

    def items(self, key: str) -> list[Mapping[str, Any]]:
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
            raise self._bad(key, "a list of objects")
        return value


def _phase(data: Mapping[str, Any], where: str) -> Phase:
    read = _Reader(data, where)
    start = read.number("start")
    if start is None or not read.text("name"):
        raise PoolbenchError(f"{where}: a phase needs a 'name' and a 'start', got {dict(data)!r}")
    return Phase(read.text("name") or "", start, read.number("end"))


def _engine(data: Mapping[str, Any], where: str) -> EngineEntry | None:
    read = _Reader(data, where)
    name = read.text("name")
    if not name:
        return None  # an engine nobody named cannot be matched to connections
    return EngineEntry(name, read.number("pool_size"), read.number("max_overflow") or 0.0, data)


def _experiment(data: Mapping[str, Any], where: str) -> ExperimentEntry:
    read = _Reader(data, where)
    fail_if = data.get("fail_if") or []
    if not isinstance(fail_if, list):
        raise read._bad("fail_if", "a list of expressions")
    return ExperimentEntry(
        name=read.text("name") or "",
        description=read.text("description") or "",
        fail_if=tuple(str(e) for e in fail_if),
        sweep=read.section("sweep"),
        variants=tuple(read.items("variants")),
    )
