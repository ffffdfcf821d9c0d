"""One connections sample: counts per name × state × wait, its rows, and its `Latest` figures.

Pure functions of the query's result (see `server.CONNECTIONS_SQL`) and the backends' owners,
so the connection's thread (`core`) only runs the query, attributes the new untagged
backends first (`attribution.BackendOwners`), and writes what these return.
"""

from __future__ import annotations

from typing import Any

from poolbench.collector.attribution import BackendOwners
from poolbench.results.names import UNTAGGED
from poolbench.results.samples import Row, row

Counts = dict[tuple[str, str, str], int]  # (label, state, wait_event_type) -> connections


def untagged_backends(result: list[tuple[Any, ...]]) -> list[tuple[int, str]]:
    """The sample's untagged backends: (pid, client "address port")."""
    return [
        backend(item)
        for name, _, _, n, _, items in result
        if n and name == ""
        for item in items or ()
    ]


def backend(item: str) -> tuple[int, str]:
    """(backend pid, client "address port") from the query's "pid address port"."""
    pid, _, client = item.partition(" ")
    return int(pid), client


def count(result: list[tuple[Any, ...]], owners: BackendOwners) -> tuple[Counts, int]:
    """(connections per (label, state, wait event type), client backends of all databases)."""
    counts: Counts = {}
    all_clients = 0
    for name, state, wait, n, n_all, items in result:
        all_clients += n_all
        if not n:
            continue
        if name == "":
            for item in items or ():
                label = owners.label(*backend(item)) or UNTAGGED
                counts[(label, state, wait)] = counts.get((label, state, wait), 0) + 1
        else:
            counts[(name, state, wait)] = counts.get((name, state, wait), 0) + n
    return counts, all_clients


def rows(ts: float, counts: Counts, max_connections: int, slots_left: int) -> list[Row]:
    out = [
        row(ts, "connections", n, application_name=name, state=state, wait_event_type=wait)
        for (name, state, wait), n in sorted(counts.items())
    ]
    out.append(row(ts, "connections_total", sum(counts.values())))
    out.append(row(ts, "max_connections", max_connections))
    out.append(row(ts, "slots_left", slots_left))
    return out


def figures(
    previous: dict[str, Any], ts: float, counts: Counts, max_connections: int, slots_left: int
) -> dict[str, Any]:
    """The sample's fields of `Latest`, peaks carried over from `previous` (one new dict per
    sample, swapped in whole: `latest()` merges it from any thread)."""
    total = sum(counts.values())
    by_name: dict[str, int] = {}
    by_name_state: dict[tuple[str, str], int] = {}
    for (name, state, _), n in counts.items():
        by_name[name] = by_name.get(name, 0) + n
        by_name_state[(name, state)] = by_name_state.get((name, state), 0) + n
    peak_by_name = previous.get("peak_by_name", {})
    if any(n > peak_by_name.get(name, 0) for name, n in by_name.items()):
        peak_by_name = {**peak_by_name}
        for name, n in by_name.items():
            peak_by_name[name] = max(n, peak_by_name.get(name, 0))
    peak, peak_ts = previous.get("peak"), previous.get("peak_ts")
    if peak is None or total > peak:
        peak, peak_ts = total, ts
    return {
        "ts": ts,
        "total": total,
        "by_name": by_name,
        "by_name_state": by_name_state,
        "peak_by_name": peak_by_name,
        "peak": peak,
        "peak_ts": peak_ts,
        "max_connections": max_connections,
        "slots_left": slots_left,
        "samples": previous.get("samples", 0) + 1,
    }
