"""events.jsonl: what happened to a variant, when — its kinds and its reader.

The run writes it (poolbench/run/events.py, `EventLog`); the analysis and the report read it.
Each line is `{"ts", "event", ...details}`. `EventKind` is the closed set of `event` values;
an older or newer file may hold others, which readers keep and show as they are.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any

EVENTS_FILE = "events.jsonl"


class EventKind(StrEnum):
    # the run's routine
    VARIANT_STARTED = "variant_started"
    VARIANT_ENDED = "variant_ended"
    PHASE_STARTED = "phase_started"
    PHASE_ENDED = "phase_ended"
    LOAD_STARTED = "load_started"
    LOCUST_WORKERS_AWAITED = "locust_workers_awaited"
    # lifecycle: what the watchdog saw happen to a process the variant depends on
    APP_PROCESS_STARTED = "app_process_started"
    APP_PROCESS_EXITED = "app_process_exited"
    POSTGRES_EXITED = "postgres_exited"
    POSTGRES_RESTARTED = "postgres_restarted"
    PGBOUNCER_EXITED = "pgbouncer_exited"
    LOCUST_EXITED = "locust_exited"
    USERS_DROPPED = "users_dropped"
    STALLED = "stalled"  # a span (ts to `end`) in which the app or PostgreSQL did no work


ROUTINE = frozenset(
    {
        EventKind.VARIANT_STARTED,
        EventKind.VARIANT_ENDED,
        EventKind.PHASE_STARTED,
        EventKind.PHASE_ENDED,
        EventKind.LOAD_STARTED,
        EventKind.LOCUST_WORKERS_AWAITED,
    }
)
# The causes a `stalled` event may name, in words.
STALL_CAUSES = {  # why a span is a `stalled` event's, in words (its `causes`)
    "app_stopped": "the app's processes were stopped (state T)",
    "postgres_stopped": "PostgreSQL's processes were stopped (state T)",
    "no_requests": "no request completed while users were active",
    "postgres_silent": "PostgreSQL did not answer the collector",
}

# The kinds of `lifecycle` events the watchdog fires (poolbench/run/watchdog.py).
LIFECYCLE_KINDS = tuple(kind for kind in EventKind if kind not in ROUTINE)


def read_events(path: Path) -> list[dict[str, Any]]:
    """events.jsonl as a list of dicts, oldest first; a line cut by a crash is dropped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(item, dict) and isinstance(item.get("event"), str):
            out.append(item)
    return sorted(out, key=lambda e: float(e.get("ts") or 0.0))
