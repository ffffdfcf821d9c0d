"""What the collector asks PostgreSQL: its SQL, and the checks of the monitoring connection.

The monitoring connection must see every session (superuser or ``pg_read_all_stats``) and
the target database must exist: `check_server` says which is wrong before any sampling.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import psycopg
import psycopg.errors
from psycopg import conninfo, pq

from poolbench.collector.settings import CollectorConfig
from poolbench.errors import PoolbenchError
from poolbench.redact import mask_url
from poolbench.results.names import APPLICATION_NAME

QUERY_TIMEOUT_S = 10.0  # a monitoring query that takes longer is abandoned (connection lost)

_SETUP_SQL = """
SELECT current_user, r.rolsuper, pg_has_role(current_user, 'pg_read_all_stats', 'USAGE'),
       current_setting('server_version_num')::int,
       current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int,
       coalesce(current_setting('reserved_connections', true), '0')::int,
       pg_backend_pid(), current_database(),
       EXISTS (SELECT 1 FROM pg_database WHERE datname = %(db)s)
FROM pg_roles r WHERE r.rolname = current_user
"""

# Run through libpq directly (`sample_connections`): positional parameters ($1 the target
# database, $2 the collector's application_name), untagged backends as one text.
CONNECTIONS_SQL = """
SELECT coalesce(application_name, ''), coalesce(state, ''),
       CASE WHEN state = 'active' THEN coalesce(wait_event_type, '') ELSE '' END,
       count(*) FILTER (WHERE counted)::int,
       count(*)::int,
       CASE WHEN coalesce(application_name, '') = '' THEN
         string_agg(pid || ' ' || coalesce(host(client_addr), '') || ' '
                    || coalesce(client_port, -1),
                    ',') FILTER (WHERE counted)
       END
FROM (SELECT pid, application_name, state, wait_event_type, client_addr, client_port,
             datname = $1 AND pid <> pg_backend_pid()
             AND application_name IS DISTINCT FROM $2 AS counted
      FROM pg_stat_activity WHERE backend_type = 'client backend') a
GROUP BY 1, 2, 3
"""
_CONNECTIONS_PQ = CONNECTIONS_SQL.encode()


def sample_connections(conn: psycopg.Connection, params: list[bytes]) -> list[tuple[Any, ...]]:
    """CONNECTIONS_SQL's rows: (name, state, wait, counted, all, untagged "pid address port"
    items or None). Through libpq directly: at 10 Hz a cursor's execute and fetch cost twice
    the CPU (~0.11 ms against ~0.05 ms a sample at 120 backends). Raises psycopg's errors as
    a cursor would: OperationalError (or a subclass) when the connection is lost."""
    res = conn.pgconn.exec_params(_CONNECTIONS_PQ, list(params))
    encoding = conn.info.encoding
    if res.status != pq.ExecStatus.TUPLES_OK:
        if conn.pgconn.status == pq.ConnStatus.BAD:
            message = res.get_error_message(encoding) or "the connection was lost"
            raise psycopg.OperationalError(message)
        raise psycopg.errors.error_from_result(res, encoding=encoding)
    value = res.get_value
    rows = []
    for i in range(res.ntuples):
        name, state, wait, n, n_all, items = (value(i, j) or b"" for j in range(6))
        untagged = items.decode(encoding).split(",") if items else None
        rows.append(
            (
                name.decode(encoding),
                state.decode(encoding),
                wait.decode(encoding),
                int(n or 0),
                int(n_all or 0),
                untagged,
            )
        )
    return rows


BACKENDS_SQL = """
SELECT pid, coalesce(application_name, ''),
       coalesce(host(client_addr), '') || ' ' || coalesce(client_port, -1)
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND datname = %(db)s AND pid <> pg_backend_pid()
  AND application_name IS DISTINCT FROM %(me)s
"""

_CHURN_SQL = """
SELECT {sessions}, xact_commit, xact_rollback, extract(epoch FROM stats_reset)
FROM pg_stat_database WHERE datname = %(db)s
"""
_SESSIONS_14 = "sessions, sessions_abandoned, sessions_fatal"
_SESSIONS_13 = "NULL::bigint, NULL::bigint, NULL::bigint"


def churn_sql(version_num: int) -> str:
    """The pg_stat_database read; ``sessions*`` exist from PostgreSQL 14 (empty before)."""
    return _CHURN_SQL.format(sessions=_SESSIONS_14 if version_num >= 140000 else _SESSIONS_13)


@dataclass
class Server:
    """What the collector learned about the server at (re)connection."""

    version_num: int
    max_connections: int
    reserved: int  # superuser_reserved_connections + reserved_connections
    backend_pid: int  # the backend serving the monitoring connection
    in_target: bool  # the monitoring connection is to the target database itself


def candidate_conninfos(config: CollectorConfig) -> list[str]:
    """Where to connect, best first: the maintenance database keeps our traffic out of the
    target's statistics; the admin URL's own database is the fallback."""
    url = config.admin_url
    out = []
    if config.monitor_dbname:
        with contextlib.suppress(psycopg.ProgrammingError):
            out.append(conninfo.make_conninfo(url, dbname=config.monitor_dbname))
    out.append(url)
    return list(dict.fromkeys(out))


def connect(info: str, timeout: float) -> psycopg.Connection:
    """The monitoring connection: blocking calls, each ended after QUERY_TIMEOUT_S by the
    server (statement_timeout, set by `check_server`) or by the kernel (a dead network).

    No server-side prepared statements: psycopg prepares a query on its fifth run, and that
    Parse is a transaction of its own, which would count in the target database's
    xact_commit without being one of the statements `churn` subtracts."""
    return psycopg.connect(
        info,
        autocommit=True,
        prepare_threshold=None,
        connect_timeout=max(1, math.ceil(timeout)),
        application_name=APPLICATION_NAME,
        keepalives=1,
        keepalives_idle=5,
        keepalives_interval=2,
        keepalives_count=3,
        tcp_user_timeout=int(QUERY_TIMEOUT_S * 1000),
    )


def check_server(conn: psycopg.Connection, config: CollectorConfig) -> Server:
    """The server's limits and our backend; PoolbenchError when the role or database won't do."""
    where = mask_url(config.admin_url)
    conn.execute(f"SET statement_timeout = {int(QUERY_TIMEOUT_S * 1000)}")
    got = conn.execute(_SETUP_SQL, {"db": config.dbname}).fetchone()
    if got is None:
        raise PoolbenchError(f"cannot read the role of the connection to {where}")
    user, is_super, read_stats, vnum, maxc, su_res, res, pid, current_db, db_ok = got
    if not (is_super or read_stats):
        raise PoolbenchError(
            f"role {user!r} at {where} cannot read other sessions in pg_stat_activity: "
            f"GRANT pg_monitor TO {user} (or use a superuser URL)"
        )
    if not db_ok:
        raise PoolbenchError(f"database {config.dbname!r} does not exist at {where}")
    return Server(
        version_num=vnum,
        max_connections=maxc,
        reserved=su_res + res,
        backend_pid=pid,
        in_target=current_db == config.dbname,
    )
