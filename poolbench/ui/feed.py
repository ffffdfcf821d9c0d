"""The live feed from poolbench's process to the Database tab inside Locust's web UI.

poolbench runs the collector in its own process, as `poolbench run` does, and not inside
Locust's: a memory sweep reads every backend's page tables (~0.4 ms a process, ~50 ms at 100+
backends), and in Locust's process it would stall the single gevent loop that times every
request. So the two processes share a file: `FeedWriter` (poolbench's side, a listener of the
run's events) appends one JSON line per live tick, about twice a second; `FeedReader` (inside
Locust, behind the tab's route) reads only the bytes appended since its last read and keeps
the last few minutes in memory. A browser asks for the points after the last one it has.

Lines (one JSON object each, ``type`` first):

- ``header``: what does not change: variant, experiment, engines, the model's ceiling
- ``point``: one sample: ``seq``, ``ts``, users, requests/s, connections per engine × state,
  total, peak, ``max_connections``, ``slots_left``, PostgreSQL's PSS and the app's USS (bytes;
  null until the first memory sweep or when not visible), the collector's newest sample and
  sweep times (ms), and ``pools``: what the pool probe saw inside the app last, per engine
  (site, application_name, checked out, ceiling, waiting, over all worker processes)
- ``marker``: a phase boundary (a test started or stopped), drawn on the chart
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, NotRequired, TextIO, TypedDict, TypeVar

from poolbench.collector import Latest
from poolbench.results.pool_probe import ProbeTail
from poolbench.run.events import RunEvents, VariantRef

KEEP_POINTS = 1200  # ten minutes at two points a second
KEEP_MARKERS = 200


class FeedHeader(TypedDict, total=False):
    """The `header` line: what does not change during the session."""

    variant: str
    label: str
    experiment: str
    workers: int
    engines: list[dict[str, object]]  # name, kind, pool_size, max_overflow
    ceiling: int | None
    ceiling_formula: str | None
    results: str


class FeedPoint(TypedDict):
    """A `point` line: one tick's figures (bytes, ms, connections)."""

    ts: float
    users: float | None
    rps: float | None
    engines: dict[str, dict[str, int]]  # engine → state → connections
    total: int | None
    peak: int | None
    max_connections: int | None
    slots_left: int | None
    pg_pss: float | None
    app_uss: float | None
    sample_ms: float | None
    sweep_ms: float | None
    pools: NotRequired[list[dict[str, Any]]]  # the pool probe's, as ProbeTail.pools gives
    seq: NotRequired[int]  # set when written


class FeedMarker(TypedDict):
    """A `marker` line: a phase started or ended."""

    ts: float
    phase: str
    what: str  # "started" or "ended"
    seq: NotRequired[int]  # set when written


class FeedAnswer(TypedDict):
    """What the tab's route answers: the lines after the browser's last."""

    header: FeedHeader | None
    points: list[FeedPoint]
    markers: list[FeedMarker]


Line = TypeVar("Line", FeedPoint, FeedMarker)


def point(latest: Latest, users: float | None, rps: float | None) -> FeedPoint | None:
    """The figures the tab shows, from the collector's newest snapshot; None before any."""
    if latest.ts is None:
        return None
    engines: dict[str, dict[str, int]] = {}
    for (name, state), n in latest.by_name_state.items():
        engines.setdefault(name, {})[state or "unknown"] = n
    memory = latest.memory
    return {
        "ts": latest.ts,
        "users": users,
        "rps": rps,
        "engines": engines,
        "total": latest.total,
        "peak": latest.peak,
        "max_connections": latest.max_connections,
        "slots_left": latest.slots_left,
        "pg_pss": memory.get(("mem_pss_bytes", "postgres", "")),
        "app_uss": memory.get(("mem_uss_bytes", "app", "")),
        "sample_ms": latest.sample_ms,  # what the measuring costs, shown under the chart
        "sweep_ms": latest.sweep_ms,
    }


class FeedWriter:
    """Appends the feed's lines; the web UI's share of the run's events.

    `latest` is the collector's `latest()`: read at each `live` event, so the tab sees what
    the terminal display sees, at the same moment.
    """

    def __init__(
        self,
        path: Path,
        header: FeedHeader,
        latest: Callable[[], Latest],
        probe: ProbeTail | None = None,
    ) -> None:
        self.path = path
        self._latest = latest
        self._probe = probe
        self._seq = 0
        self._handle: TextIO | None = path.open("w", encoding="utf-8")
        self._write({"type": "header", **header})

    def subscribe(self, events: RunEvents) -> None:
        events.live.add_listener(self._on_live)
        events.phase_started.add_listener(
            lambda ref, phase, length_s, ts: self._marker(ts, phase, "started")
        )
        events.phase_ended.add_listener(lambda ref, phase, ts: self._marker(ts, phase, "ended"))

    def _on_live(
        self, ref: VariantRef, users: float | None = None, rps: float | None = None, **_: Any
    ) -> None:
        values = point(self._latest(), users, rps)
        if values is not None:
            if self._probe is not None:
                self._probe.poll()
                values["pools"] = self._probe.pools()
            self._write({"type": "point", **values})

    def _marker(self, ts: float, phase: str, what: str) -> None:
        marker: FeedMarker = {"ts": ts, "phase": phase, "what": what}
        self._write({"type": "marker", **marker})

    def _write(self, item: dict[str, object]) -> None:
        if self._handle is None:
            return
        self._seq += 1
        self._handle.write(json.dumps({**item, "seq": self._seq}, default=str) + "\n")
        self._handle.flush()  # the reader is another process: each line reaches the OS now

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class FeedReader:
    """The feed as Locust's process sees it: tailed on demand, the last minutes kept."""

    def __init__(self, path: Path, keep: int = KEEP_POINTS) -> None:
        self.path = path
        self.header: FeedHeader | None = None
        self.points: deque[FeedPoint] = deque(maxlen=keep)
        self.markers: deque[FeedMarker] = deque(maxlen=KEEP_MARKERS)
        self._offset = 0
        self._rest = b""

    def poll(self) -> None:
        """Read what was appended since the last call; a line still being written waits."""
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return
        self._offset += len(data)
        *lines, self._rest = (self._rest + data).split(b"\n")
        for line in lines:
            item = json.loads(line)
            kind = item.pop("type", None)
            if kind == "header":
                self.header = item
            elif kind == "point":
                self.points.append(item)
            elif kind == "marker":
                self.markers.append(item)

    def since(self, seq: int) -> FeedAnswer:
        """Everything newer than `seq` (the header only for a first request, seq < 0)."""
        return {
            "header": self.header if seq < 0 else None,
            "points": _after(self.points, seq),
            "markers": _after(self.markers, seq),
        }


def _after(items: deque[Line], seq: int) -> list[Line]:
    """The items whose seq is above `seq`, oldest first, reading only those from the end."""
    newer = []
    for item in reversed(items):
        if item["seq"] <= seq:
            break
        newer.append(item)
    newer.reverse()
    return newer
