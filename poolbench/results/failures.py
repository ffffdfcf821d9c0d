"""What a failed request was: Locust's error messages classified by kind.

A refusal is PostgreSQL saying no to a new connection (SQLSTATE 53300, "too many clients" or
"remaining connection slots are reserved"): the failure a connection-pool change is about, so
it is its own kind, never folded into "HTTP 5xx" (poolbench.results.applog counts refusals in the app's
log and Locust's failures together).
"""

from __future__ import annotations

import re

from poolbench.results.applog import REFUSAL

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
    # the request's error names a refusal; the server's own count is in postgres.log (pglog)
    "too_many_connections": "error names a refusal (SQLSTATE 53300)",
    "pool_timeout": "pool timeout",
    "timeout": "timeout",
    "connection_error": "connection error",
    "http_5xx": "HTTP 5xx",
    "http_4xx": "HTTP 4xx",
    "other": "other",
}


def classify(message: str) -> str:
    """The kind of a Locust failure message (see KINDS)."""
    for name, pattern in KINDS:
        if pattern.search(message or ""):
            return name
    return "other"
