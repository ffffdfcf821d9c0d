"""The stack under test for one variant: its database, its app, its collector, its record.

`poolbench run` (runner.py) and `poolbench ui` (ui/) bring up the same things the same way:
a PostgreSQL from the configured provider, the variant's app with the experiment's pool
settings, a collector on both, and a variant entry in run.json. These are the building blocks
both use, so a live session's results folder is laid out exactly like a run's.
"""

from __future__ import annotations

import contextlib
import math
import shlex
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from poolbench.analysis.model import ceiling
from poolbench.collector import CollectorConfig, CollectorThread
from poolbench.config.bench import BenchConfig, Experiment
from poolbench.config.kinds import Provider
from poolbench.config.variants import Variant
from poolbench.infra import app_launch, postgres
from poolbench.infra.app_server import RunningVariant
from poolbench.infra.environment import collect_environment
from poolbench.infra.postgres import Database
from poolbench.redact import mask_url
from poolbench.results.record import (
    CollectorRecord,
    Engine,
    PgBouncerRecord,
    Pids,
    PostgresLog,
    VariantRecord,
)
from poolbench.results.run_folder import POSTGRES_LOG_FILE, RunRecord, new_run_id, write_json
from poolbench.run.events import RunEvents, VariantRef


def engines_from_census(
    app_dir: Path, label: str, experiment: Experiment
) -> tuple[list[Engine], dict[str, object]]:
    """The app's long-lived engines as the collector will see them, from a static census."""
    from poolbench.lint import census as lint

    census = lint.census(app_dir)
    engines = [
        Engine(
            name=f"{label}:{site.module}" + (":sync" if site.kind == "sync" else ""),
            module=site.module,
            kind=site.kind,
            pool_size=experiment.app.pool_size,
            max_overflow=experiment.app.max_overflow,
            source="census",
        )
        for site in census.sites
        if site.scope in ("import", "lazy")
    ]
    return engines, lint.census_data(census)


def add_census(entry: VariantRecord, experiment: Experiment, variant: Variant, out: Path) -> None:
    """For an app directory: its engines into the entry, the full census into census.json.
    For a command variant with a `cwd`: the census of the code it runs from into census.json
    (its engines stay as the bench file declares them: a command may run code from elsewhere)."""
    if variant.app_dir:
        entry.engines, census = engines_from_census(Path(variant.app_dir), entry.label, experiment)
        write_json(out / "census.json", census)
    elif variant.cwd and Path(variant.cwd).is_dir():
        from poolbench.lint import census as lint

        write_json(out / "census.json", lint.census_data(lint.census(Path(variant.cwd))))


def psql_line(db: Database) -> str:
    """A psql command that reaches the variant's server while it runs (docs: README, "Looking
    at the server during a run"). The embedded server's password is random and masked, so it
    goes through its Unix socket, where the superuser needs none; another server by its URL,
    password masked (it is the one you gave)."""
    if db.socket_dir:
        return f'psql "host={db.socket_dir} port={db.port} user={db.admin_user} dbname={db.dbname}"'
    return f"psql {shlex.quote(mask_url(db.admin_url))}   # with the password you gave"


def connection_ceiling(entry: VariantRecord) -> int | None:
    """The model's most connections: workers × Σ(pool_size + max_overflow) over the engines.

    None when the engines are unknown (a command variant without a census). Behind PgBouncer
    PostgreSQL sees at most its server ceiling (default_pool_size + reserve), whatever the pools.
    """
    return entry.connection_ceiling(ceiling)


def check_binaries(config: BenchConfig, experiments: list[Experiment]) -> None:
    """Every binary a chosen variant needs (PgBouncer), before anything starts; else one line."""
    from poolbench.infra.pgbouncer import find_binary

    for name in dict.fromkeys(v for e in experiments for v in e.variants):
        settings = config.variants[name].pgbouncer
        if settings is not None:
            find_binary(settings, name)


def as_recorded(experiments: list[Experiment], database_url: str | None) -> list[Experiment]:
    """The experiments as they will run: --database-url overrides every provider."""
    if not database_url:
        return experiments
    return [replace(e, postgres=replace(e.postgres, provider=Provider.URL)) for e in experiments]


def create_record(
    config: BenchConfig,
    experiments: list[Experiment],
    out_root: Path,
    name: str,
    command: str,
    database_url: str | None,
) -> RunRecord:
    """A new results folder whose run.json holds the resolved configuration."""
    return RunRecord.create(
        out_root,
        new_run_id(name),
        command,
        {
            "config_file": config.path,
            "database_url": database_url,
            "variants": {k: asdict(v) for k, v in config.variants.items()},
            "experiments": [asdict(e) for e in experiments],
        },
        collect_environment(),
    )


def new_entry(experiment: Experiment, variant: Variant, repeat: int) -> VariantRecord:
    """A variant's entry of run.json (and its variant.json), before anything started."""
    workers, workers_source, engines = app_launch.declared(experiment, variant)
    return VariantRecord(
        experiment=experiment.name,
        variant=variant.name,
        repeat=repeat,
        dir=f"{experiment.name}/{variant.name}-{repeat}",
        label=variant.label or variant.name,
        app_dir=variant.app_dir,
        command=list(variant.command) if variant.command else None,
        app=asdict(experiment.app),
        load=asdict(experiment.load),
        postgres_settings=asdict(experiment.postgres),
        workers=workers,
        workers_source=workers_source,
        engines=engines,
    )


def provide_database(
    experiment: Experiment, database_url: str | None, keep_log: Path
) -> contextlib.AbstractContextManager[Database]:
    """A fresh server (or database) with the experiment's settings; an embedded server's log
    is kept at `keep_log`."""
    return postgres.provide(
        experiment.postgres.provider,
        database_url=database_url,
        settings={"max_connections": str(experiment.postgres.max_connections)},
        version=experiment.postgres.version,
        keep_log=keep_log,
        bindir=Path(experiment.postgres.bindir) if experiment.postgres.bindir else None,
    )


@contextlib.contextmanager
def database_and_app(
    record: RunRecord,
    experiment: Experiment,
    variant: Variant,
    entry: VariantRecord,
    out: Path,
    database_url: str | None,
    on_database: Callable[[Database], None] | None = None,
) -> Iterator[tuple[Database, RunningVariant]]:
    """A fresh database and the app on it, both recorded in the entry; both stopped after.
    `on_database(db)` runs before the app starts (the runner's check of free slots)."""
    with provide_database(experiment, database_url, out / POSTGRES_LOG_FILE) as db:
        entry.database = db.describe()
        entry.postgres_log = PostgresLog(
            POSTGRES_LOG_FILE if db.server_log else None, db.server_log_reason
        )
        record.note_server(db.describe())
        if on_database is not None:
            on_database(db)
        # PgBouncer if any; extensions, setup commands, the app itself, its processes watched
        with (
            pooler(variant, db, entry, out) as app_db,
            app_launch.launch(experiment, variant, entry, db, out, app_db) as app,
        ):
            bouncer = entry.pgbouncer.pid if entry.pgbouncer is not None else None
            entry.pids = Pids(app=app.pid, postmaster=db.postmaster_pid, pgbouncer=bouncer)
            yield db, app


@contextlib.contextmanager
def pooler(variant: Variant, db: Database, entry: VariantRecord, out: Path) -> Iterator[Database]:
    """The database as the app reaches it: `db` itself, or PgBouncer in front of it (started,
    described in the entry, its console sampled to pgbouncer.csv at the collector's rate)."""
    if variant.pgbouncer is None:
        yield db
        return
    from poolbench.collector.pgbouncer import PROBE_NAME, SAMPLES_FILE, PgBouncerSampler
    from poolbench.config.variants import COLLECTOR_PROFILES
    from poolbench.infra import pgbouncer
    from poolbench.results.names import APPLICATION_NAME

    with pgbouncer.running(variant.pgbouncer, db, out, variant.name) as bouncer:
        entry.pgbouncer = described = PgBouncerRecord(bouncer.describe())
        hz = COLLECTOR_PROFILES[variant.collector].get(
            "connections_hz", CollectorConfig.connections_hz
        )
        probe = (  # the hop: through the pooler as the app's role, and direct as an instrument
            f"{bouncer.app_database(db).app_url}?application_name={PROBE_NAME}",
            f"{db.admin_url}?application_name={APPLICATION_NAME}",
        )
        sampler = PgBouncerSampler(
            bouncer.admin_conninfo, db.dbname, out / SAMPLES_FILE, hz, probe=probe
        )
        with sampler:
            try:
                yield bouncer.app_database(db)
            finally:
                described.sampler = sampler.stop()


def collector_config(
    db: Database, app: RunningVariant, variant: Variant, out: Path
) -> CollectorConfig:
    """What the collector samples for one variant, written to out/samples.csv."""
    return CollectorConfig(
        admin_url=db.admin_url,
        dbname=db.dbname,
        out_path=out / "samples.csv",
        app_pids=app.pids,
        postmaster_pid=db.postmaster_pid,
        pools_url=f"{app.base_url}{variant.pools_path}" if variant.pools_path else None,
    ).with_profile(variant.collector)


def collector_entry(config: CollectorConfig, variant: Variant) -> CollectorRecord:
    """How the collector sampled, as variant.json records it (what it did is added at stop:
    `Latest.footprint`)."""
    return CollectorRecord({"profile": variant.collector, **config.describe()})


def fire_live(
    events: RunEvents, ref: VariantRef, collector: CollectorThread, load: dict[str, Any]
) -> None:
    """The live figures of a variant — the load's (users, rps, failures) and what the
    collector holds now — on the run's event hub (the display and the UI listen)."""
    latest = collector.latest()
    events.live.fire(
        ref=ref,
        users=load.get("users"),
        rps=load.get("rps"),
        failures=load.get("failures"),
        connections=latest.get("total", math.nan),
        peak=latest.get("peak", math.nan),
    )
