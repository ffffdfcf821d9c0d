"""Before the load: can the server give the app as many connections as its pools may open?

A server whose slots are mostly held by other clients refuses the app's connections
(SQLSTATE 53300) and turns the comparison into a measurement of those refusals. So before
each variant's load the runner compares the pool model's ceiling — workers ×
Σ(pool_size + max_overflow) over the variant's engines (variant.json `engines`) — with the
slots free for it: max_connections − superuser_reserved_connections − reserved_connections
(PostgreSQL 16+) − every client backend that is not the app's (other clients, and
poolbench's own collector). The result goes to variant.json `preflight` and, when the
ceiling does not fit, to the terminal.
"""

from __future__ import annotations

import psycopg
from psycopg.conninfo import make_conninfo

from poolbench.collector import APPLICATION_NAME
from poolbench.errors import PoolbenchError, first_line
from poolbench.infra.postgres import connect
from poolbench.results.record import PreflightEntry, VariantRecord
from poolbench.run.stack import connection_ceiling

SLOTS_SQL = """
SELECT current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int,
       coalesce(current_setting('reserved_connections', true)::int, 0),
       count(*) FILTER (WHERE application_name IS DISTINCT FROM %(collector)s),
       count(*) FILTER (WHERE application_name = %(collector)s)
FROM pg_stat_activity
WHERE backend_type = 'client backend'
  AND datname IS DISTINCT FROM %(db)s
  AND pid <> pg_backend_pid()
"""


def check_slots(admin_url: str, dbname: str, entry: VariantRecord) -> PreflightEntry:
    """The `preflight` record of variant.json; `warning` is None when the ceiling fits."""
    ceiling = connection_ceiling(entry)
    try:
        with _monitoring_connection(admin_url) as conn:
            row = conn.execute(SLOTS_SQL, {"db": dbname, "collector": APPLICATION_NAME}).fetchone()
            if row is None:  # an aggregate without GROUP BY: always one row
                raise PoolbenchError("pg_stat_activity returned no row")
    except (PoolbenchError, psycopg.Error, OSError) as exc:
        return PreflightEntry.failed(ceiling, first_line(exc))
    max_connections, superuser_reserved, reserved, others, own = row
    free = max(0, max_connections - superuser_reserved - reserved - others - own)
    fits = ceiling is None or ceiling <= free
    return PreflightEntry(
        max_connections=max_connections,
        reserved=superuser_reserved + reserved,
        other_clients=others,
        poolbench_clients=own,
        free_slots=free,
        ceiling=ceiling,
        warning=None if fits else slots_warning(ceiling or 0, free, others, max_connections),
        error=None,
    )


def _monitoring_connection(admin_url: str) -> psycopg.Connection:
    """Connected as the collector is (its application_name, which every count leaves out),
    to the maintenance database when it can: never a session of the app's own database."""
    as_collector = {"application_name": APPLICATION_NAME}
    try:
        return connect(make_conninfo(admin_url, dbname="postgres", **as_collector))
    except PoolbenchError:  # no maintenance database there, or no right to it
        return connect(make_conninfo(admin_url, **as_collector))


def slots_warning(ceiling: int, free: int, others: int, max_connections: int) -> str:
    """Why refusals are to be expected, in one line."""
    if ceiling <= free + others:
        return (
            f"other clients hold {others} of the server's {max_connections} connection slots: "
            f"{free} are free for the app, whose pools may open {ceiling}; expect refusals "
            "(SQLSTATE 53300) that say nothing about the app"
        )
    return (
        f"only {free} of the server's {max_connections} connection slots are free for the "
        f"app, whose pools may open {ceiling}: expect refusals (SQLSTATE 53300)"
        + (f"; other clients hold {others}" if others else "")
    )
