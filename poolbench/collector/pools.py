"""The app's own view of its connection pools, polled over HTTP from ``/debug/pools``."""

from __future__ import annotations

import time
from typing import Any

from poolbench.samples import Row, row

POOL_FIELDS = {
    "size": "app_pool_size",
    "checked_in": "app_pool_checked_in",
    "checked_out": "app_pool_checked_out",
    "overflow": "app_pool_overflow",
    "max_overflow": "app_pool_max_overflow",
}


async def read_pools(http: Any, url: str) -> tuple[list[Row], list[Any]]:
    """(rows, the engines as reported); raises whatever the endpoint or its JSON does."""
    ts = time.time()
    response = await http.get(url)
    response.raise_for_status()
    engines = response.json()["engines"]
    rows: list[Row] = []
    for engine in engines:
        name = str(engine["name"])
        for key, metric in POOL_FIELDS.items():
            rows.append(row(ts, metric, _number(engine.get(key)), application_name=name))
    return rows, engines


def _number(value: Any) -> float | None:
    """A count, or None for anything else (a bool is an int to Python, not a count)."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
