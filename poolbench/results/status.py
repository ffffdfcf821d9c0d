"""The status of a variant and of a run (docs/results.md, "Statuses").

`running` while it runs; `complete`; `degraded` (it ran to its end, but something happened
that spoils some figures: a worker died, PostgreSQL restarted, Locust lost users); `failed`
(it could not go on, or did not start); `partial` (interrupted); `abandoned` (its owner
process died without a word; set by `poolbench clean`). A `StrEnum`, so run.json keeps the
plain words and a status compares equal to its word.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    RUNNING = "running"
    COMPLETE = "complete"
    DEGRADED = "degraded"
    PARTIAL = "partial"
    FAILED = "failed"
    ABANDONED = "abandoned"
