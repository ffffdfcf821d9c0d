"""What a failed request was: Locust's error messages classified, refusals counted in app logs.

A refusal is PostgreSQL saying no to a new connection (SQLSTATE 53300, "too many clients" or
"remaining connection slots are reserved"): the failure a connection-pool change is about, so
it is counted on its own, from the app's log and from Locust's failures, never folded into
"HTTP 5xx".
"""

from __future__ import annotations

import re
from pathlib import Path

REFUSAL = re.compile(r"53300|too many clients|remaining connection slots|TooManyConnections", re.I)
# Failure kinds, first match wins (case-insensitive, searched in Locust's error message).
KINDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("too_many_connections", REFUSAL),
    ("pool_timeout", re.compile(r"QueuePool limit|pool.{0,20}time ?out|PoolTimeout", re.I)),
    ("timeout", re.compile(r"timed? ?out|TimeoutError|ReadTimeout", re.I)),
    (
        "connection_error",
        re.compile(
            r"ConnectionRefused|ConnectionReset|RemoteDisconnected|ConnectionError|"
            r"connection (?:refused|reset|aborted)",
            re.I,
        ),
    ),
    ("http_5xx", re.compile(r"\b5\d\d\b")),
    ("http_4xx", re.compile(r"\b4\d\d\b")),
)
KIND_NAMES = (*(name for name, _ in KINDS), "other")
LABELS = {
    "too_many_connections": "refused by PostgreSQL (SQLSTATE 53300)",
    "pool_timeout": "pool timeout",
    "timeout": "timeout",
    "connection_error": "connection error",
    "http_5xx": "HTTP 5xx",
    "http_4xx": "HTTP 4xx",
    "other": "other",
}
LOG_RECORD_START = re.compile(r"^(?:CRITICAL|ERROR|WARNING|INFO|DEBUG)\b")


def classify(message: str) -> str:
    """The kind of a Locust failure message (see KINDS)."""
    for name, pattern in KINDS:
        if pattern.search(message or ""):
            return name
    return "other"


def count_refusals_in_log(path: Path | None) -> int | None:
    """Log records of the app that name a refusal (SQLSTATE 53300); None without a log.

    One refused request logs one record (uvicorn's "ERROR: Exception in ASGI application")
    whose traceback names the error several times (driver, adapter, SQLAlchemy wrapper),
    so records are counted, not lines. Lines without a level prefix belong to the record
    above them; a log with no prefixes at all is counted line by line.
    """
    if path is None:
        return None
    count, in_record, matched = 0, False, False
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if LOG_RECORD_START.match(line) or not in_record:
                    count += matched
                    in_record, matched = bool(LOG_RECORD_START.match(line)), False
                matched = matched or bool(REFUSAL.search(line))
    except OSError:
        return None
    return count + matched
