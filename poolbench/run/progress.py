"""The live view of a run: what is running, how far along, what the database holds now.

On a terminal it is a rich panel refreshed in place; elsewhere (CI, a pipe) one plain line
per phase, so logs stay readable.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from types import TracebackType

from rich.console import Console
from rich.live import Live
from rich.table import Table

from poolbench.results.events import EventKind
from poolbench.run.events import RunEvents, VariantRef


@dataclass
class RunState:
    experiment: str = ""
    variant: str = ""
    position: str = ""
    phase: str = "starting"
    phase_started: float = field(default_factory=time.monotonic)
    phase_length: float = 0.0
    users: float = math.nan
    rps: float = math.nan
    failures: float = math.nan
    connections: float = math.nan
    peak: float = math.nan


def _fmt(value: float, spec: str = ".0f") -> str:
    return "–" if value is None or math.isnan(value) else format(value, spec)


class ProgressDisplay:
    """Call `phase()` at each boundary and `update()` as often as you like."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.interactive = self.console.is_terminal and sys.stderr.isatty()
        self.state = RunState()
        self._live: Live | None = None

    def __enter__(self) -> ProgressDisplay:
        if self.interactive:
            self._live = Live(self._render(), console=self.console, refresh_per_second=4)
            self._live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)
            self._live = None

    def subscribe(self, events: RunEvents) -> None:
        """Follow a run: a line (or panel refresh) per phase, live figures as they come."""
        events.variant_started.add_listener(
            lambda ref: self.phase(ref.experiment, ref.variant, ref.position, "starting", 0)
        )
        events.phase_started.add_listener(
            lambda ref, phase, length_s, ts: self.phase(
                ref.experiment, ref.variant, ref.position, phase, length_s
            )
        )
        events.live.add_listener(lambda ref, **values: self.update(**values))
        events.lifecycle.add_listener(self._lifecycle)

    def _lifecycle(self, ref: VariantRef, kind: str, ts: float, **details: object) -> None:
        """A process exit, a restart, lost users: one line, above the live panel."""
        from poolbench.run.watchdog import describe_event

        if kind != EventKind.APP_PROCESS_STARTED or details.get("phase") != "starting":
            self.message(f"! {ref.experiment}/{ref.variant}: {describe_event(kind, ts, details)}")

    def phase(
        self, experiment: str, variant: str, position: str, phase: str, length: float
    ) -> None:
        s = self.state
        s.experiment, s.variant, s.position, s.phase = experiment, variant, position, phase
        s.phase_started, s.phase_length = time.monotonic(), length
        if phase in ("starting", "warmup"):
            s.users = s.rps = s.failures = s.connections = s.peak = math.nan
        if not self.interactive:
            self.console.print(
                f"[{experiment}] {variant} ({position}): {phase}"
                + (f" for {length:.0f} s" if length else "")
                + (f" — peak connections so far {_fmt(s.peak)}" if not math.isnan(s.peak) else ""),
                highlight=False,
                markup=False,
            )
        self._refresh()

    def update(self, **values: float) -> None:
        for key, value in values.items():
            if value is not None:
                setattr(self.state, key, float(value))
        self._refresh()

    def message(self, text: str) -> None:
        """A line as it is, never wrapped: it may be a command to copy (e.g. a worker's)."""
        self.console.print(text, highlight=False, markup=False, soft_wrap=True)

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._render())

    def _render(self) -> Table:
        s = self.state
        elapsed = time.monotonic() - s.phase_started
        remaining = max(0.0, s.phase_length - elapsed) if s.phase_length else math.nan
        table = Table(title="poolbench run", show_header=True, header_style="bold")
        for column in (
            "experiment",
            "variant",
            "phase",
            "elapsed",
            "left",
            "users",
            "req/s",
            "failures",
            "connections",
            "peak",
        ):
            table.add_column(
                column,
                justify="right" if column not in ("experiment", "variant", "phase") else "left",
            )
        table.add_row(
            s.experiment,
            f"{s.variant} ({s.position})",
            s.phase,
            f"{elapsed:.0f} s",
            f"{_fmt(remaining)} s",
            _fmt(s.users),
            _fmt(s.rps, ".1f"),
            _fmt(s.failures),
            _fmt(s.connections),
            _fmt(s.peak),
        )
        return table
