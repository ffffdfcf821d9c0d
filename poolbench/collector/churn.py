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
from typing import TYPE_CHECKING

from poolbench.collector.server import churn_sql
from poolbench.results.samples import row

if TYPE_CHECKING:
    from poolbench.collector.core import Collector

CHURN_METRICS = (
    "sessions_new",
    "sessions_abandoned",
    "sessions_fatal",
    "xact_commit",
    "xact_rollback",
)

ChurnValues = tuple[float | None, ...]


class ChurnReader:
    """The previous read of the counters, and our own transactions at that read."""

    def __init__(self, collector: Collector) -> None:
        self._collector = collector
        self._prev: tuple[ChurnValues, float, float | None] | None = None
        self._own_prev: tuple[int, int] | None = None
        self._unseen = [0.0, 0.0]  # our own commits and rollbacks counted but not yet seen

    def reset(self) -> None:
        """After a (re)connection: the next read is a baseline."""
        self._prev = None
        self._own_prev = None
        self._unseen = [0.0, 0.0]

    def tick(self) -> None:
        c = self._collector
        c.flush_soon()
        server = c.server
        if not c.connected or server is None:
            return
        params = {"db": c.config.dbname}
        sql = churn_sql(server.version_num)
        own: tuple[int, int] | None = None
        ts = time.time()
        if server.in_target and server.version_num >= 150000:
            # Our own statements count in this database: publish them (the flush happens
            # before the server answers), read, and subtract what we ran since the last read.
            # Only this thread runs statements, so none of ours slips between the two.
            results = c.queries([("SELECT pg_stat_force_next_flush()", None), (sql, params)])
            got = None if results is None else results[1]
            own = (c.own_xacts - 1, c.own_rollbacks)  # minus this read itself
        else:
            results = c.queries([(sql, params)])
            got = None if results is None else results[0]
        if not got:
            return
        *values, reset = got[0]
        values = tuple(None if v is None else float(v) for v in values)
        prev, self._prev = self._prev, (values, ts, reset)
        own_prev, self._own_prev = self._own_prev, own
        if prev is None or prev[2] != reset:
            return  # a baseline: start, reconnect, or a statistics reset
        deltas = _churn_deltas(prev[0], values)
        if deltas is None:
            return  # counters went backwards: stats reset without stats_reset moving
        if server.in_target:
            self._unseen = subtract_own(deltas, own, own_prev, self._unseen)
        c.write([row(ts, m, d) for m, d in zip(CHURN_METRICS, deltas, strict=True)])
        interval = ts - prev[1]
        c.publish(
            churn={
                m: None if d is None else d / interval
                for m, d in zip(CHURN_METRICS, deltas, strict=True)
            }
        )


def _churn_deltas(before: ChurnValues, after: ChurnValues) -> list[float | None] | None:
    """Counter deltas (None where a counter is unavailable); None when any went backwards."""
    pairs = list(zip(before, after, strict=True))
    if any(a is not None and b is not None and b < a for a, b in pairs):
        return None
    return [None if a is None or b is None else b - a for a, b in pairs]


def subtract_own(
    deltas: list[float | None],
    own: tuple[int, int] | None,
    own_prev: tuple[int, int] | None,
    unseen: list[float],
) -> list[float]:
    """Monitoring from the target database: take our own transactions out of xact_*; what
    would go below zero is ours not yet seen, carried to the next read. Returns the carry."""
    if own is None or own_prev is None:
        deltas[3] = deltas[4] = None  # cannot separate our own transactions
        return [0.0, 0.0]
    carry = []
    for slot, ran in ((3, own[0] - own_prev[0]), (4, own[1] - own_prev[1])):
        owed = ran + unseen[slot - 3]
        value = deltas[slot]
        if value is None:
            carry.append(0.0)
            continue
        deltas[slot] = max(0.0, value - owed)
        carry.append(max(0.0, owed - value))
    return carry
