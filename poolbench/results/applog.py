"""Failed requests whose error names a refusal (SQLSTATE 53300): the app's log and Locust's.

These count *requests*, from the client's side: a cross-check. The refused connection
*attempts* are the server's own count, from its log (poolbench.results.pglog, the report's
`refusals` row); a pool may retry, and one request may make several attempts or none.

A server out of slots refuses a connection with SQLSTATE 53300 ("too many clients already",
"remaining connection slots are reserved …"). The app turns that into an HTTP 500, which
Locust counts as a plain server error: without these counts a refused request is
indistinguishable from a bug, and a variant that was mostly refused looks fast.

- **App log**: one refused request logs one record (uvicorn's "ERROR: Exception in ASGI
  application") whose traceback names the error several times (driver, adapter,
  SQLAlchemy's wrapper), so *records* are counted, not lines. A line with a level prefix
  (``ERROR``, ``WARNING``, …) starts a record; lines without one belong to the record above
  them. A log with no prefixes at all is counted line by line.
- **Locust**: the occurrences of failures whose error message names the refusal (an app
  that returns the driver's message in its error body).

Both see the same requests, from the two ends; each may miss some (a log that records no
traceback, a message that names no SQLSTATE). `refusals()` therefore reports both and, as
the best count, the larger of the two — never their sum.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

# The bare SQLSTATE counts only as a token of its own: an access log's client port
# ("127.0.0.1:53300"), a path ("/users/53300") or a process id ("[53300]") is not a refusal.
# Any of, ignoring case: 53300 not after [\w:/.[#-] nor before [\w\]:.], "too many clients",
# "remaining connection slots", "TooManyConnections". Written to begin with the set of first
# letters, case-sensitively: the regex engine then skips in C to a position where one of
# them can start, instead of trying every alternative (and a lookbehind) at every character;
# the app log is read line by line with it, 3 × faster (tests/test_analysis.py checks the
# two forms agree).
REFUSAL = re.compile(
    r"[5TtRr](?:(?<=5)3300(?<![\w:/.\[#-]53300)(?![\w\]:.])"
    r"|(?i:(?<=t)oo many clients|(?<=r)emaining connection slots|(?<=t)ooManyConnections))"
)
LOG_RECORD_START = re.compile(r"^(?:CRITICAL|ERROR|WARNING|INFO|DEBUG)\b")


def count_log_refusals(path: Path | None) -> int | None:
    """Records of the app log that name a refusal; None when there is no log to read."""
    return count_log_records(path, REFUSAL)


def count_log_records(path: Path | None, pattern: re.Pattern[str]) -> int | None:
    """Records of the app log with a line matching `pattern`; None when there is no log."""
    if path is None:
        return None
    count, in_record, matched = 0, False, False
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                starts = bool(LOG_RECORD_START.match(line))
                if starts or not in_record:
                    count += matched
                    in_record, matched = starts, False
                matched = matched or bool(pattern.search(line))
    except OSError:
        return None
    return count + matched


def count_locust_refusals(failures: Any) -> int | None:
    """Occurrences of refusals in Locust's failures frame (Error, Occurrences); None if absent."""
    if failures is None or getattr(failures, "empty", True):
        return None
    if not {"Error", "Occurrences"} <= set(failures.columns):
        return None
    total = 0
    for message, occurrences in zip(failures["Error"], failures["Occurrences"], strict=False):
        if REFUSAL.search(str(message)):
            try:
                total += int(occurrences)
            except (TypeError, ValueError):
                continue
    return total


def refusals(app_log: Path | None, failures: Any) -> dict[str, int | None]:
    """{"app_log": n, "locust": n, "count": the larger}; None where a source is missing."""
    from_log = count_log_refusals(app_log)
    from_locust = count_locust_refusals(failures)
    known = [n for n in (from_log, from_locust) if n is not None]
    return {"app_log": from_log, "locust": from_locust, "count": max(known) if known else None}
