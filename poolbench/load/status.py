"""The shape of the status file poolbench's Locust plugin keeps (`status.json` of a variant).

Written by the plugin inside Locust's process (poolbench/load/plugin.py) at every change,
read by poolbench's process (poolbench/load/locust.py) to follow the test. A module of its
own, importing nothing, so that the reader does not import Locust.
"""

from __future__ import annotations

from typing import TypedDict

# Whether poolbench's load shape drives the users (`shape`): the shape asked for
# (--poolbench-shape), the class that drives them, `applied` False when it is the locustfile's
# own, and why in `message` (functional form: "class" is a keyword)
ShapeStatus = TypedDict(
    "ShapeStatus",
    {"requested": str, "class": str, "applied": bool, "message": str},
    total=False,
)


class StatusFile(TypedDict, total=False):
    """The file as a whole; empty until the plugin has written it."""

    launched: float  # Locust's start (s since the epoch)
    test_start: float | None  # the test's real start and stop
    test_stop: float | None
    tests: int  # tests started so far (a web UI session runs several)
    workers: int  # workers joined (a distributed run)
    shape: ShapeStatus | None  # None: no poolbench shape asked for
    requests: int | None  # requests written to requests.bin, at the end
