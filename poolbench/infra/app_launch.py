"""From a variant of the bench file to a running, measured app, without a wrapper script.

For each fresh database: the placeholder values (`{database_url}`, `{db_password}`, `{port}`,
…) are fixed, every secret among them is registered for masking, the variant's extensions
are created, its setup commands run, the app starts with its `env` in its `cwd`, and its
process tree is watched while it runs. What the bench file declares about the app's pools
and workers, and what was measured, go into variant.json for the model.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from poolbench.config.bench import Experiment
from poolbench.config.placeholders import env_refs, expand
from poolbench.config.variants import Variant
from poolbench.infra.app_server import PoolSettings, RunningVariant, VariantSpec, VariantStartError
from poolbench.infra.app_setup import (
    SETUP_LOG,
    SetupError,
    create_extensions,
    extension_problem,
    run_setup,
)
from poolbench.infra.app_tree import AppProcessWatch
from poolbench.infra.postgres import Database, free_port
from poolbench.probe import PROBE_DIRNAME
from poolbench.redact import add_secret, looks_secret, mask_text
from poolbench.results.record import Engine, Probe, Setup, VariantRecord


def declared(experiment: Experiment, variant: Variant) -> tuple[int, str, list[Engine]]:
    """variant.json's declared figures: workers (and where from) and the engines per process."""
    engines = [Engine(e.name, e.pool_size, e.max_overflow) for e in variant.engines]
    workers_source = "variant" if variant.workers else "experiment"
    return variant.workers or experiment.app.workers, workers_source, engines


def pool_settings(experiment: Experiment, variant: Variant) -> PoolSettings:
    """What the app is handed as DB_POOL_SIZE/… and {pool_size}/…: a single declared engine's
    sizes when there is one (the app's own figures), else the experiment's app settings."""
    app = experiment.app
    if len(variant.engines) == 1:
        engine = variant.engines[0]
        return PoolSettings(engine.pool_size, engine.max_overflow, app.pool_timeout)
    return PoolSettings(app.pool_size, app.max_overflow, app.pool_timeout)


def placeholder_values(db: Database, pools: PoolSettings) -> dict[str, str]:
    """`{name}` values known once the database exists; `{port}`/`{host}`/`{workers}` come
    from the VariantSpec."""
    return {
        "database_url": db.app_url,
        "db_host": db.host,
        "db_port": str(db.port),
        "db_user": db.app_user,
        "db_password": db.app_password,
        "db_name": db.dbname,
        "pool_size": str(pools.pool_size),
        "max_overflow": str(pools.max_overflow),
    }


def register_secrets(db: Database, variant: Variant, values: dict[str, str]) -> None:
    """Mask the passwords, every `${VAR}` value and every secret-named env value from now on.

    A `${VAR}` whose value is an existing absolute path (`${PYTHON}`, `${HOME}`) is the one
    exception: it is not secret, and masking it would mask every path under it.
    """
    for secret in (db.app_password, db.admin_password):
        if secret:
            add_secret(secret)
    for _, text in variant.texts():
        for var in env_refs(text):
            value = os.environ.get(var, "")
            if not (os.path.isabs(value) and os.path.exists(value)):  # a path is no secret, and
                add_secret(value)  # masking it would garble every log line that names a file
    for key, template in variant.env.items():
        if looks_secret(key):
            add_secret(expand(template, values))


@contextlib.contextmanager
def launch(
    experiment: Experiment,
    variant: Variant,
    entry: VariantRecord,
    db: Database,
    out: Path,
    app_db: Database | None = None,
) -> Iterator[RunningVariant]:
    """Prepare the database, start the app, watch its processes; stop it all on exit.

    `app_db`: the database as the app reaches it when that is not `db` itself (PgBouncer in
    between): the app's URL and placeholders, and the port its connections are counted on."""
    app_db = app_db or db
    pools = pool_settings(experiment, variant)
    values = placeholder_values(app_db, pools)
    register_secrets(db, variant, values)
    spec = VariantSpec(
        name=variant.name,
        app_dir=Path(variant.app_dir) if variant.app_dir else None,
        command=list(variant.command) if variant.command else None,
        health_path=variant.health_path,
        workers=entry.workers,
        label=entry.label,
        env=variant.env,
        cwd=Path(variant.cwd) if variant.cwd else None,
        values=values,
        probe_dir=out / PROBE_DIRNAME if variant.probe else None,
    )
    app = RunningVariant(
        spec, database_url=app_db.app_url, log_path=out / "app.log", pools=pools, port=free_port()
    )
    entry.app = {**entry.app, **vars(pools), "workers": entry.workers}
    entry.env = {k: mask_text(v) for k, v in app.env().items() if k in variant.env}
    entry.probe = Probe(variant.probe, PROBE_DIRNAME if variant.probe else None)
    where = (experiment.name, variant.name)
    _prepare(experiment, variant, entry, db, app, out)
    # from the first pid: start-up deaths too
    watch = AppProcessWatch(app.pids, app_db.port).start()
    try:
        try:
            app.start()
        except VariantStartError as exc:
            problem = extension_problem(out / "app.log", db, *where)
            raise SetupError(problem) if problem else exc from None
        yield app
    finally:
        entry.app_processes = watch.stop()
        app.stop()


def _prepare(
    experiment: Experiment,
    variant: Variant,
    entry: VariantRecord,
    db: Database,
    app: RunningVariant,
    out: Path,
) -> None:
    """Extensions (as superuser), then the setup commands, on the fresh database."""
    create_extensions(db, variant.extensions, experiment.name)
    if not variant.setup:
        return
    log = out / SETUP_LOG
    entry.setup = setup = Setup([list(c) for c in variant.setup], SETUP_LOG)
    assert app.port is not None  # launch() gives the app its port before preparing
    try:
        setup.seconds = run_setup(
            [[expand(a, app.spec.placeholder_values(app.port)) for a in c] for c in variant.setup],
            cwd=app.spec.app_dir or app.spec.cwd,
            env=app.env(),
            log_path=log,
            timeout_s=variant.setup_timeout_s,
        )
    except SetupError as exc:
        problem = extension_problem(log, db, experiment.name, variant.name)
        raise SetupError(problem) if problem else exc from None
