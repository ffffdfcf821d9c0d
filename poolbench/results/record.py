"""run.json and variant.json read back as typed records (docs/results.md).

The run writes these files as JSON objects kept current at every phase boundary
(`run_folder.RunRecord`); everything that reads a run — the analysis, the report, the text
summary, `poolbench compare` — gets them through `RunEntry.from_json` and
`VariantEntry.from_json`, which check each field once, here, instead of every reader calling
`.get(...)` with its own fallback. A field of the wrong type is a one-line error naming the
file and the key; a field that is absent (an older run, a variant that failed to start) is
None or empty, as documented.

The writer's side is here too (`VariantRecord`, `ExperimentRecord`, `RunState`, below): the
run builds run.json from typed records, never by key, and reads back what it wrote.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
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

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "start": self.start, "end": self.end}


@dataclass(frozen=True)
class EngineEntry:
    """An engine the app creates, with its pool settings per process (census or declared)."""

    name: str
    pool_size: float | None
    max_overflow: float
    source: str | None = None  # "census", "bench file" (or "probe": measured, not declared)


@dataclass(frozen=True)
class PreflightEntry:
    """variant.json's `preflight`: the server's free connection slots before the app started
    (numbers as recorded; `error` when the check could not run)."""

    max_connections: int | float | None
    reserved: int | float | None
    other_clients: int | float | None
    poolbench_clients: int | float | None
    free_slots: int | float | None
    ceiling: int | float | None
    warning: str | None
    error: str | None

    @classmethod
    def failed(cls, ceiling: int | None, error: str) -> PreflightEntry:
        """The check could not run (no monitoring connection): only the ceiling is known."""
        return cls(None, None, None, None, None, ceiling, None, error)

    def to_json(self) -> dict[str, object]:
        if self.error is not None:
            return {"ceiling": self.ceiling, "error": self.error, "warning": self.warning}
        return {
            "max_connections": self.max_connections,
            "reserved": self.reserved,
            "other_clients": self.other_clients,
            "poolbench_clients": self.poolbench_clients,
            "free_slots": self.free_slots,
            "ceiling": self.ceiling,
            "warning": self.warning,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> PreflightEntry:
        read = _Reader(data, where)

        def number(key: str) -> int | float | None:
            return _json_number(read, key)

        return cls(
            max_connections=number("max_connections"),
            reserved=number("reserved"),
            other_clients=number("other_clients"),
            poolbench_clients=number("poolbench_clients"),
            free_slots=number("free_slots"),
            ceiling=number("ceiling"),
            warning=read.text("warning"),
            error=read.text("error"),
        )


@dataclass(frozen=True)
class PgBouncerEntry:
    """variant.json's `pgbouncer`: the pooler's version, mode and the pool sizes it had."""

    version: str | None
    pool_mode: str | None
    default_pool_size: int | None
    reserve_pool_size: int | None
    max_client_conn: int | None
    server_ceiling: int | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> PgBouncerEntry:
        read = _Reader(data, where)

        def whole(key: str) -> int | None:
            value = read.number(key)
            return None if value is None else int(value)

        sizes = ("default_pool_size", "reserve_pool_size", "max_client_conn", "server_ceiling")
        return cls(read.text("version"), read.text("pool_mode"), *(whole(key) for key in sizes))


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
    app_dir: str | None = None
    listening_warning: str | None = None  # the app listened beyond loopback, as allowed
    preflight: PreflightEntry | None = None
    pgbouncer: PgBouncerEntry | None = None  # None: no pooler between the app and PostgreSQL
    server_settings: Mapping[str, str] = field(default_factory=dict)  # database.settings

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
            app_dir=read.text("app_dir") or None,
            listening_warning=read.text("listening_warning") or None,
            preflight=_optional(PreflightEntry.from_json, data, "preflight", where),
            pgbouncer=_optional(PgBouncerEntry.from_json, data, "pgbouncer", where),
            server_settings=_settings(read.section("database"), where),
        )

    def phase(self, name: str) -> Phase | None:
        """The last phase of that name (a ui session can repeat names only as `load N`)."""
        return next((p for p in reversed(self.phases) if p.name == name), None)


@dataclass(frozen=True)
class SweepMark:
    """An experiment's `sweep`: it is one point (`pool_size`) of `poolbench size`'s sweep of
    `variant` in `group` (the experiment it was made from)."""

    group: str
    variant: str
    pool_size: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> SweepMark | None:
        if not data:
            return None
        size = _Reader(data, where).number("pool_size")
        return cls(str(data.get("group")), str(data.get("variant")), int(size or 0))


@dataclass(frozen=True)
class ExperimentEntry:
    name: str
    description: str
    fail_if: tuple[str, ...]
    sweep: SweepMark | None  # a point of `poolbench size`'s sweep, else None
    variants: tuple[Mapping[str, Any], ...]
    claims: Mapping[str, Any] = field(default_factory=dict)  # claim name → its declaration


@dataclass(frozen=True)
class Owner:
    """run.json's `owner`: the process that runs it (its start time tells a reused pid apart)."""

    pid: int
    create_time: float
    hostname: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Owner | None:
        """None when it cannot be told (an older run.json, a field missing or malformed)."""
        try:
            return cls(int(data["pid"]), float(data["create_time"]), str(data.get("hostname")))
        except (KeyError, TypeError, ValueError):
            return None


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
    owner: Owner | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> RunEntry:
        read = _Reader(data, where)
        for key in ("schema", "run_id", "status", "experiments"):
            if key not in data:
                raise PoolbenchError(f"{where} lacks the key {key!r}")
        if data["schema"] != SCHEMA:
            raise PoolbenchError(
                f"{where} has schema {data['schema']}, this poolbench reads {SCHEMA}"
            )
        status = read.status("status")
        assert status is not None  # present: checked above
        command = data.get("command")
        return cls(
            run_id=read.text("run_id") or "",
            status=status,
            error=read.text("error") or None,
            command=" ".join(map(str, command))
            if isinstance(command, list)
            else read.text("command"),
            started_at=read.number("started_at"),
            finished_at=read.number("finished_at"),
            environment=read.section("environment"),
            owner=Owner.from_json(data["owner"])
            if isinstance(data.get("owner"), Mapping)
            else None,
            experiments=tuple(
                _experiment(e, f"{where}.experiments") for e in read.items("experiments")
            ),
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
    return EngineEntry(
        name, read.number("pool_size"), read.number("max_overflow") or 0.0, read.text("source")
    )


def _optional(
    make: Callable[[Mapping[str, Any], str], Any], data: Mapping[str, Any], key: str, where: str
) -> Any:
    """A section read by `make`, or None when it is absent (or not an object, as before)."""
    value = data.get(key)
    return make(value, f"{where}.{key}") if isinstance(value, Mapping) else None


def _settings(database: Mapping[str, Any], where: str) -> dict[str, str]:
    """database.settings (pg_settings values, with their units) as text."""
    settings = database.get("settings")
    return {str(k): str(v) for k, v in settings.items()} if isinstance(settings, Mapping) else {}


def _experiment(data: Mapping[str, Any], where: str) -> ExperimentEntry:
    read = _Reader(data, where)
    fail_if = data.get("fail_if") or []
    if not isinstance(fail_if, list):
        raise read._bad("fail_if", "a list of expressions")
    return ExperimentEntry(
        name=read.text("name") or "",
        description=read.text("description") or "",
        fail_if=tuple(str(e) for e in fail_if),
        sweep=SweepMark.from_json(read.section("sweep"), f"{where}.sweep"),
        variants=tuple(read.items("variants")),
        claims=read.section("claims"),
    )


# --------------------------------------------------------------------------- the writer
#
# While a variant runs, its entry is a `VariantRecord`: the runner, the stack and `poolbench
# ui` set its typed attributes as things happen (the database is up, PgBouncer started, the
# collector stopped), and `RunRecord` (run_folder.py) persists `to_json()` at each phase
# boundary. `to_json()` writes the keys in the order a run reaches them and leaves out the
# sections not reached yet, so run.json reads as it always did; `from_json()` reads it back
# (`VariantRecord.from_json(r.to_json()) == r`). The sections other modules describe
# (db.describe(), the collector's settings, Locust's figures) stay JSON objects: their keys
# are theirs (docs/results.md).

JsonObject = Mapping[str, object]  # a section whose keys the module that describes it owns


def _object(data: Mapping[str, Any], key: str, where: str) -> dict[str, object] | None:
    """A section that must be a JSON object when present (copied: the record owns it)."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _Reader(data, where)._bad(key, "an object")
    return dict(value)


def _present(pairs: Mapping[str, object | None]) -> dict[str, object]:
    return {key: value for key, value in pairs.items() if value is not None}


@dataclass
class Pids:
    """variant.json's `pids`: the processes of the variant, as each started."""

    app: int | None = None
    postmaster: int | None = None
    pgbouncer: int | None = None
    load: int | None = None

    def to_json(self) -> dict[str, object]:
        return _present(
            {
                "app": self.app,
                "postmaster": self.postmaster,
                "pgbouncer": self.pgbouncer,
                "load": self.load,
            }
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> Pids:
        read = _Reader(data, where)
        return cls(
            read.integer("app"),
            read.integer("postmaster"),
            read.integer("pgbouncer"),
            read.integer("load"),
        )


@dataclass(frozen=True)
class PostgresLog:
    """variant.json's `postgres_log`: the server's log file, or why there is none."""

    file: str | None
    reason: str | None

    def to_json(self) -> dict[str, object]:
        return {"file": self.file, "reason": self.reason}


@dataclass(frozen=True)
class Probe:
    """variant.json's `probe`: whether the pool probe ran in the app, and its folder."""

    enabled: bool
    dir: str | None

    def to_json(self) -> dict[str, object]:
        return {"enabled": self.enabled, "dir": self.dir}


@dataclass
class Setup:
    """variant.json's `setup`: the variant's setup commands, their log, how long they took."""

    commands: list[list[str]]
    log: str
    seconds: float | None = None

    def to_json(self) -> dict[str, object]:
        return _present({"commands": self.commands, "log": self.log, "seconds": self.seconds})


@dataclass(frozen=True)
class Engine:
    """An engine of `engines`: declared in the bench file, or found by the census."""

    name: str
    pool_size: int | float | None
    max_overflow: int | float | None
    per_process: bool = True
    source: str = "bench file"
    module: str | None = None  # census: the module that creates it
    kind: str | None = None  # census: "async" or "sync"

    def to_json(self) -> dict[str, object]:
        head = {"name": self.name, "module": self.module, "kind": self.kind}
        return {
            **_present(head),
            "pool_size": self.pool_size,
            "max_overflow": self.max_overflow,
            "per_process": self.per_process,
            "source": self.source,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> Engine:
        read = _Reader(data, where)
        return cls(
            name=read.text("name") or "",
            pool_size=_json_number(read, "pool_size"),
            max_overflow=_json_number(read, "max_overflow"),
            per_process=bool(data.get("per_process", True)),
            source=read.text("source") or "bench file",
            module=read.text("module"),
            kind=read.text("kind"),
        )


def _json_number(read: _Reader, key: str) -> int | float | None:
    """A number as JSON held it (an int stays an int, so it is written back the same)."""
    value = read.number(key)
    raw = read.data.get(key)
    return raw if isinstance(raw, int) and not isinstance(raw, bool) else value


@dataclass
class PgBouncerRecord:
    """variant.json's `pgbouncer`: what PgBouncer was (its describe()) and, once it stopped,
    what its console sampler did."""

    described: JsonObject
    sampler: JsonObject | None = None

    @property
    def pid(self) -> int | None:
        pid = self.described.get("pid")
        return pid if isinstance(pid, int) else None

    def to_json(self) -> dict[str, object]:
        return {**self.described, **_present({"sampler": self.sampler})}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> PgBouncerRecord:
        sampler = _object(data, "sampler", where)
        return cls({k: v for k, v in data.items() if k != "sampler"}, sampler)


@dataclass
class CollectorRecord:
    """variant.json's `collector`: how it sampled, then (at stop) the rows it wrote and its
    footprint (`Latest.footprint`)."""

    settings: JsonObject
    rows_written: int | None = None
    footprint: JsonObject = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {**self.settings, **_present({"rows_written": self.rows_written}), **self.footprint}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> CollectorRecord:
        keys = list(data)
        cut = keys.index("rows_written") if "rows_written" in keys else len(keys)
        return cls(
            {k: data[k] for k in keys[:cut]},
            _Reader(data, where).integer("rows_written"),
            {k: data[k] for k in keys[cut + 1 :]},
        )


@dataclass(kw_only=True)
class VariantRecord:
    """A variant's entry of run.json (and its variant.json), kept current while it runs."""

    experiment: str
    variant: str
    repeat: int
    dir: str
    status: Status = Status.RUNNING
    error: str | None = None
    label: str
    app_dir: str | None
    command: list[str] | None
    app: dict[str, object]
    load: JsonObject
    postgres_settings: JsonObject
    workers: int
    workers_source: str
    engines: list[Engine]
    phases: list[Phase] = field(default_factory=list)
    pids: Pids = field(default_factory=Pids)
    database: JsonObject | None = None
    postgres_log: PostgresLog | None = None
    preflight: PreflightEntry | None = None
    pgbouncer: PgBouncerRecord | None = None
    env: JsonObject | None = None
    probe: Probe | None = None
    setup: Setup | None = None
    listening: list[str] | None = None
    listening_warning: str | None = None
    collector: CollectorRecord | None = None
    locust: JsonObject | None = None
    watchdog: JsonObject | None = None
    app_processes: JsonObject | None = None

    def end(self, status: Status, error: str | None) -> None:
        self.status, self.error = status, error

    def phase_started(self, name: str, ts: float) -> None:
        self.phases.append(Phase(name, ts, None))

    def phase_ended(self, name: str, ts: float) -> None:
        """The last open phase of that name ends at `ts`."""
        for i in reversed(range(len(self.phases))):
            if self.phases[i].name == name and self.phases[i].end is None:
                self.phases[i] = replace(self.phases[i], end=ts)
                return

    def renumber_phases(self, names: tuple[str, ...], number: int) -> None:
        """`load` and `idle` become `load N` and `idle N` (a ui session's earlier tests)."""
        self.phases = [
            replace(p, name=f"{p.name} {number}") if p.name in names else p for p in self.phases
        ]

    def connection_ceiling(self, ceiling: Callable[[int, float, float], float]) -> int | None:
        """The model's most connections: workers × Σ(pool_size + max_overflow) over the
        engines (`ceiling` is the model's formula). None when the engines are unknown. Behind
        PgBouncer PostgreSQL sees at most its server ceiling (default_pool_size + reserve)."""
        if self.pgbouncer is not None:
            server = self.pgbouncer.described.get("server_ceiling")
            if isinstance(server, int | float):
                return int(server)
        if not self.engines:
            return None
        return int(
            sum(
                ceiling(self.workers or 1, e.pool_size or 0, e.max_overflow or 0)
                for e in self.engines
            )
        )

    def to_json(self) -> dict[str, object]:
        def section(value: Any) -> object:
            return None if value is None else value.to_json()

        return {
            "experiment": self.experiment,
            "variant": self.variant,
            "repeat": self.repeat,
            "dir": self.dir,
            "status": self.status,
            "error": self.error,
            "label": self.label,
            "app_dir": self.app_dir,
            "command": self.command,
            "app": self.app,
            "load": self.load,
            "postgres_settings": self.postgres_settings,
            "workers": self.workers,
            "workers_source": self.workers_source,
            "engines": [e.to_json() for e in self.engines],
            "phases": [p.to_json() for p in self.phases],
            "pids": self.pids.to_json(),
            **_present(
                {
                    "database": self.database,
                    "postgres_log": section(self.postgres_log),
                    "preflight": section(self.preflight),
                    "pgbouncer": section(self.pgbouncer),
                    "env": self.env,
                    "probe": section(self.probe),
                    "setup": section(self.setup),
                    "listening": self.listening,
                    "listening_warning": self.listening_warning,
                    "collector": section(self.collector),
                    "locust": self.locust,
                    "watchdog": self.watchdog,
                    "app_processes": self.app_processes,
                }
            ),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> VariantRecord:
        """A variant entry as the writer wrote it (`poolbench clean` rewrites one)."""
        read = _Reader(data, where)
        for key in ("experiment", "variant", "dir", "label"):
            if not isinstance(data.get(key), str):
                raise read._bad(key, "a string")
        status = read.status("status")
        command = data.get("command")
        sub = {key: _object(data, key, where) for key in _SECTIONS}
        log, probe, setup = sub["postgres_log"], sub["probe"], sub["setup"]
        return cls(
            experiment=data["experiment"],
            variant=data["variant"],
            repeat=read.integer("repeat") or 1,
            dir=data["dir"],
            status=status or Status.RUNNING,
            error=read.text("error"),
            label=data["label"],
            app_dir=read.text("app_dir"),
            command=[str(c) for c in command] if isinstance(command, list) else None,
            app=sub["app"] or {},
            load=sub["load"] or {},
            postgres_settings=sub["postgres_settings"] or {},
            workers=read.integer("workers") or 1,
            workers_source=read.text("workers_source") or "experiment",
            engines=[Engine.from_json(e, f"{where}.engines") for e in read.items("engines")],
            phases=[_phase(p, f"{where}.phases") for p in read.items("phases")],
            pids=Pids.from_json(sub["pids"] or {}, f"{where}.pids"),
            database=sub["database"],
            postgres_log=None
            if log is None
            else PostgresLog(_str(log.get("file")), _str(log.get("reason"))),
            preflight=_optional(PreflightEntry.from_json, data, "preflight", where),
            pgbouncer=None
            if sub["pgbouncer"] is None
            else PgBouncerRecord.from_json(sub["pgbouncer"], where),
            env=sub["env"],
            probe=None
            if probe is None
            else Probe(bool(probe.get("enabled")), _str(probe.get("dir"))),
            setup=None if setup is None else _setup(setup, where),
            listening=[str(x) for x in data["listening"]]
            if isinstance(data.get("listening"), list)
            else None,
            listening_warning=read.text("listening_warning"),
            collector=None
            if sub["collector"] is None
            else CollectorRecord.from_json(sub["collector"], where),
            locust=sub["locust"],
            watchdog=sub["watchdog"],
            app_processes=sub["app_processes"],
        )


_SECTIONS = (
    "app", "load", "postgres_settings", "pids", "database", "postgres_log", "preflight",
    "pgbouncer", "env", "probe", "setup", "collector", "locust", "watchdog", "app_processes",
)


def _str(value: object) -> str | None:
    return None if value is None else str(value)


def _setup(data: Mapping[str, Any], where: str) -> Setup:
    commands = data.get("commands") or []
    seconds = _Reader(data, f"{where}.setup").number("seconds")
    return Setup([[str(a) for a in c] for c in commands], str(data.get("log") or ""), seconds)


@dataclass
class ExperimentRecord:
    """An experiment of run.json: its name, what it claims or sweeps, and its variants."""

    name: str
    description: str
    fields: JsonObject = field(default_factory=dict)  # claims, sweep, fail_if: when set
    variants: list[VariantRecord] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "description": self.description,
            **self.fields,
            "variants": [v.to_json() for v in self.variants],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> ExperimentRecord:
        read = _Reader(data, where)
        fields = {k: v for k, v in data.items() if k not in ("name", "description", "variants")}
        variants = [VariantRecord.from_json(v, f"{where}.variants") for v in read.items("variants")]
        return cls(read.text("name") or "", read.text("description") or "", fields, variants)


@dataclass(kw_only=True)
class RunState:
    """run.json while the run goes on (and after): the run's own fields and its experiments."""

    run_id: str = ""
    status: Status = Status.RUNNING
    error: str | None = None
    command: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    owner: JsonObject = field(default_factory=dict)  # pid, create_time, hostname
    config: JsonObject = field(default_factory=dict)  # the resolved bench configuration
    environment: dict[str, object] = field(default_factory=dict)
    experiments: list[ExperimentRecord] = field(default_factory=list)
    cleaned: JsonObject | None = None  # set by `poolbench clean`

    @property
    def variants(self) -> list[VariantRecord]:
        return [v for e in self.experiments for v in e.variants]

    def to_json(self) -> dict[str, object]:
        return {
            "schema": SCHEMA,
            "run_id": self.run_id,
            "status": self.status,
            "error": self.error,
            "command": self.command,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "owner": self.owner,
            "config": self.config,
            "environment": self.environment,
            "experiments": [e.to_json() for e in self.experiments],
            **_present({"cleaned": self.cleaned}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> RunState:
        """run.json as written; its schema and fields are checked as `RunEntry` checks them."""
        entry = RunEntry.from_json(data, where)
        read = _Reader(data, where)
        return cls(
            run_id=entry.run_id,
            status=entry.status,
            error=read.text("error"),
            command=read.text("command"),
            started_at=entry.started_at,
            finished_at=entry.finished_at,
            owner=read.section("owner"),
            config=read.section("config"),
            environment=dict(read.section("environment")),
            experiments=[
                ExperimentRecord.from_json(e, f"{where}.experiments")
                for e in read.items("experiments")
            ],
            cleaned=_object(data, "cleaned", where),
        )


def abandoned(
    data: Mapping[str, Any], error: str, cleaned: Mapping[str, object]
) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    """run.json as `poolbench clean` leaves it: a run still `running` is `abandoned` (with
    `error`), `cleaned` says what clean did, and every variant still running is abandoned.
    Everything else stays as written, whatever version of poolbench wrote it (so this edits
    the JSON rather than rebuilding it from records). Returns run.json and the variant
    entries it changed, each with its `dir` (its variant.json is rewritten from it)."""
    run = dict(data)
    if run.get("status") == Status.RUNNING:
        run.update(status=Status.ABANDONED, error=error)
    run["cleaned"] = dict(cleaned)
    changed: list[tuple[str, dict[str, Any]]] = []
    experiments = []
    for experiment in run.get("experiments") or []:
        variants = []
        for entry in experiment.get("variants") or []:
            if entry.get("status") == Status.RUNNING:
                entry = {**entry, "status": Status.ABANDONED, "error": "the run was abandoned"}
                changed.append((str(entry.get("dir", "")), entry))
            variants.append(entry)
        experiments.append(
            {**experiment, "variants": variants} if "variants" in experiment else experiment
        )
    run["experiments"] = experiments
    return run, changed
