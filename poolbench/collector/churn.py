"""Session and transaction churn: deltas of ``pg_stat_database`` for the target database.

Read once a second by the connection's thread (see `core`). When the collector monitors
from the target database itself, its own transactions count there too: on PostgreSQL 15+
it forces its statistics out before each read and subtracts what it ran since the last.
Now and then one of its commits shows in the counter a read later than it ran (seen about
once in 10 s): what is subtracted but not yet seen is carried to the next read, never
written as a negative count.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from poolbench.collector.server import Server, churn_sql

CHURN_METRICS = (
    "sessions_new",
    "sessions_abandoned",
    "sessions_fatal",
    "xact_commit",
    "xact_rollback",
)
OWN_METRICS = ("xact_commit", "xact_rollback")  # where the collector's own statements count

ChurnValues = tuple[float | None, ...]
Deltas = dict[str, float | None]


class OwnStatements(NamedTuple):
    """The collector's own statements so far: committed and rolled back."""

    commits: float
    rollbacks: float


class StatsSession(Protocol):
    """What the reader needs of the monitoring connection, and nothing more."""

    own_xacts: int
    own_rollbacks: int

    @property
    def server(self) -> Server | None: ...

    def queries(
        self, statements: Sequence[tuple[str, Mapping[str, Any] | None]]
    ) -> list[list[tuple[Any, ...]]] | None: ...


@dataclass(frozen=True)
class ChurnRead:
    """One read's counter deltas since the previous read, and the time between them."""

    ts: float
    interval: float
    deltas: Deltas

    def rates(self) -> dict[str, float | None]:
        return {m: None if d is None else d / self.interval for m, d in self.deltas.items()}


class ChurnReader:
    """The previous read of the counters, and our own statements at that read."""

    def __init__(self, dbname: str) -> None:
        self._dbname = dbname
        self._prev: tuple[ChurnValues, float, Any] | None = None
        self._own_prev: OwnStatements | None = None
        self._unseen = OwnStatements(0, 0)  # ours counted but not yet seen by the server

    def reset(self) -> None:
        """After a (re)connection: the next read is a baseline."""
        self._prev = None
        self._own_prev = None
        self._unseen = OwnStatements(0, 0)

    def read(self, session: StatsSession) -> ChurnRead | None:
        """Read the counters; the deltas since the last read, or None for a baseline."""
        server = session.server
        if server is None:
            return None
        ts = time.time()
        got, own = self._query(session, server)
        if not got:
            return None
        *raw, reset = got[0]
        values = tuple(None if v is None else float(v) for v in raw)
        prev, self._prev = self._prev, (values, ts, reset)
        own_prev, self._own_prev = self._own_prev, own
        if prev is None or prev[2] != reset:
            return None  # a baseline: start, reconnect, or a statistics reset
        deltas = _churn_deltas(prev[0], values)
        if deltas is None:
            return None  # counters went backwards: stats reset without stats_reset moving
        if server.in_target:
            self._unseen = subtract_own(deltas, own, own_prev, self._unseen)
        return ChurnRead(ts, ts - prev[1], deltas)

    def _query(
        self, session: StatsSession, server: Server
    ) -> tuple[list[tuple[Any, ...]] | None, OwnStatements | None]:
        params = {"db": self._dbname}
        sql = churn_sql(server.version_num)
        if server.in_target and server.version_num >= 150000:
            # Our own statements count in this database: publish them (the flush happens
            # before the server answers), read, and subtract what we ran since the last read.
            # Only this thread runs statements, so none of ours slips between the two.
            results = session.queries([("SELECT pg_stat_force_next_flush()", None), (sql, params)])
            own = OwnStatements(session.own_xacts - 1, session.own_rollbacks)  # minus this read
            return (None if results is None else results[1]), own
        results = session.queries([(sql, params)])
        return (None if results is None else results[0]), None


def _churn_deltas(before: ChurnValues, after: ChurnValues) -> Deltas | None:
    """Counter deltas (None where a counter is unavailable); None when any went backwards."""
    pairs = list(zip(before, after, strict=True))
    if any(a is not None and b is not None and b < a for a, b in pairs):
        return None
    return {
        m: None if a is None or b is None else b - a
        for m, (a, b) in zip(CHURN_METRICS, pairs, strict=True)
    }


def subtract_own(
    deltas: Deltas,
    own: OwnStatements | None,
    own_prev: OwnStatements | None,
    unseen: OwnStatements,
) -> OwnStatements:
    """Monitoring from the target database: take our own statements out of xact_*; what
    would go below zero is ours not yet seen, carried to the next read. Returns the carry."""
    if own is None or own_prev is None:
        for metric in OWN_METRICS:
            deltas[metric] = None  # cannot separate our own transactions
        return OwnStatements(0, 0)
    ran = (own.commits - own_prev.commits, own.rollbacks - own_prev.rollbacks)
    carry: list[float] = []
    for metric, count, late in zip(OWN_METRICS, ran, unseen, strict=True):
        owed = count + late
        value = deltas[metric]
        if value is None:
            carry.append(0)
            continue
        deltas[metric] = max(0.0, value - owed)
        carry.append(max(0.0, owed - value))
    return OwnStatements(*carry)
