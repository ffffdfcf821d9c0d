"""One event hub for a run, in the manner of Locust's `events`.

The runner announces what happens (a variant starts, a phase begins or ends, a process of the
app exits, live figures arrive) and does not know who listens: the progress display, the run
record, the collector, the event log on disk and the web UI each subscribe to what they need.
That keeps the runner from calling every consumer by hand with positional arguments, and lets
a new consumer (a watchdog, a live chart) join without touching it.

Every event is fired with keyword arguments only, and every event but `live` carries the
`VariantRef` it concerns, so a listener can tell variants apart. `EventLog` persists all but
`live` to `events.jsonl` in the variant's folder (docs/results.md): the timeline the report
draws (phases, process starts and exits, restarts) and the record of what happened when.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from poolbench.results.events import EVENTS_FILE, EventKind

if TYPE_CHECKING:
    from poolbench.results.run_folder import RunRecord
from poolbench.files import write_failed


@dataclass(frozen=True)
class VariantRef:
    """Which variant × repeat an event is about, and where its files go."""

    experiment: str
    variant: str
    repeat: int
    position: str  # e.g. "2/4": the variant's place in the run, for the display
    dir: Path


class EventHook:
    """A list of listeners called in order with the same keyword arguments.

    A listener that raises stops the run (as Locust's do): consumers are part of the harness,
    and a broken one must not silently lose what it was recording.
    """

    def __init__(self) -> None:
        self._listeners: list[Callable[..., Any]] = []

    def add_listener(self, listener: Callable[..., Any]) -> Callable[..., Any]:
        self._listeners.append(listener)
        return listener  # usable as a decorator

    def remove_listener(self, listener: Callable[..., Any]) -> None:
        self._listeners.remove(listener)

    def fire(self, **kwargs: Any) -> None:
        for listener in list(self._listeners):
            listener(**kwargs)


class RunEvents:
    """The hooks of a run. Arguments of each, besides `ref: VariantRef`:

    - `variant_started()` / `variant_ended(status, error)`
    - `phase_started(phase, length_s, ts)` / `phase_ended(phase, ts)`
    - `load_started(pid)`: Locust runs (its pid, for CPU accounting)
    - `lifecycle(kind, ts, **details)`: something happened to a process the run depends on;
      `kind` is one of results.events.LIFECYCLE_KINDS (the watchdog's, poolbench/run/watchdog.py)
    - `live(users, rps, failures, connections, peak)`: current figures, about twice a second
    """

    def __init__(self) -> None:
        self.variant_started = EventHook()
        self.variant_ended = EventHook()
        self.phase_started = EventHook()
        self.phase_ended = EventHook()
        self.load_started = EventHook()
        self.lifecycle = EventHook()
        self.live = EventHook()


class EventLog:
    """Writes every event but `live` as one JSON line to the variant's events.jsonl.

    Lines are flushed as they are written: after a crash the file holds every event up to it.
    """

    def __init__(self, events: RunEvents) -> None:
        self._files: dict[Path, TextIO] = {}
        events.variant_started.add_listener(lambda ref: self._write(ref, EventKind.VARIANT_STARTED))
        events.phase_started.add_listener(
            lambda ref, phase, length_s, ts: self._write(
                ref, EventKind.PHASE_STARTED, ts=ts, phase=phase, length_s=length_s
            )
        )
        events.phase_ended.add_listener(
            lambda ref, phase, ts: self._write(ref, EventKind.PHASE_ENDED, ts=ts, phase=phase)
        )
        events.load_started.add_listener(
            lambda ref, pid: self._write(ref, EventKind.LOAD_STARTED, pid=pid)
        )
        events.lifecycle.add_listener(
            lambda ref, kind, ts, **details: self._write(ref, kind, ts=ts, **details)
        )
        events.variant_ended.add_listener(self._variant_ended)

    def _write(self, ref: VariantRef, event: str, ts: float | None = None, **fields: Any) -> None:
        handle = self._files.get(ref.dir)
        if handle is None:
            ref.dir.mkdir(parents=True, exist_ok=True)
            handle = self._files[ref.dir] = (ref.dir / EVENTS_FILE).open("a", encoding="utf-8")
        line = {"ts": time.time() if ts is None else ts, "event": event, **fields}
        try:
            handle.write(json.dumps(line, default=str) + "\n")
            handle.flush()
        except OSError as exc:  # a full disk: one line naming the file
            raise write_failed(ref.dir / EVENTS_FILE, exc) from None

    def _variant_ended(self, ref: VariantRef, status: str, error: str | None) -> None:
        self._write(ref, EventKind.VARIANT_ENDED, status=status, error=error)
        handle = self._files.pop(ref.dir, None)
        if handle is not None:
            handle.close()

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()


def keep_record(record: RunRecord, events: RunEvents) -> None:
    """Keep run.json and variant.json current at every phase and variant boundary."""

    def phase_started(ref: VariantRef, phase: str, length_s: float, ts: float) -> None:
        entry = record.entry_for(ref.dir)
        entry.phase_started(phase, ts)
        record.save_variant(entry)

    def phase_ended(ref: VariantRef, phase: str, ts: float) -> None:
        entry = record.entry_for(ref.dir)
        entry.phase_ended(phase, ts)
        record.save_variant(entry)

    def load_started(ref: VariantRef, pid: int) -> None:
        entry = record.entry_for(ref.dir)
        entry.pids.load = pid
        record.save_variant(entry)

    def variant_ended(ref: VariantRef, status: str, error: str | None) -> None:
        record.save_variant(record.entry_for(ref.dir))

    events.phase_started.add_listener(phase_started)
    events.phase_ended.add_listener(phase_ended)
    events.load_started.add_listener(load_started)
    events.variant_ended.add_listener(variant_ended)
