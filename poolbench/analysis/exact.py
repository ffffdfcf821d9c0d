"""The exact connection count from the server's log, beside what the 10 Hz samples saw.

Where the results folder holds postgres.log (the embedded server logs every connect and
disconnect), the number of open connections is rebuilt at every event
(poolbench.analysis.timeline): the exact peak per application_name and in total over the load
phase, beside the sampled peak, and the short spikes the sampler missed. Sessions opened and
closed per second, per application_name, after the pools stopped growing, are read from the
same log: the churn of per-call engines (each one a backend fork). Without the log (an existing
server elsewhere), the figures say "sampled only" and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from poolbench.analysis.series import VariantSeries
from poolbench.analysis.timeline import SamplingCheck, compare_by_application, timelines
from poolbench.analysis.typed import Json, Window
from poolbench.analysis.windows import Windows, within
from poolbench.results.names import APPLICATION_NAME
from poolbench.results.pglog import NO_SLOT, RESERVED, ROLE_OR_DATABASE, ServerLog, Session
from poolbench.results.run_folder import VariantResult


@dataclass(frozen=True)
class ExactPeak(Json):
    name: str  # application_name ("(untagged)" for none); "total"
    exact: int
    exact_ts: float | None
    sampled: float
    spikes: int  # gaps between samples in which the exact count rose above both
    longest_spike_s: float


@dataclass(frozen=True)
class SessionChurn(Json):
    """Sessions of one application_name that opened/closed inside the window, per second."""

    name: str
    opened: int
    closed: int
    opened_per_s: float
    median_session_s: float | None


@dataclass(frozen=True)
class Attempts(Json):
    """Connection attempts the server saw in a window, from its log: every backend it started
    (``connection received``: a fork), those that authenticated, and those it refused with
    SQLSTATE 53300, by reason (poolbench.results.pglog.REFUSAL_REASONS)."""

    window: Window
    started: int
    authenticated: int
    refused: int
    refused_reserved: int  # "remaining connection slots are reserved": the app's slots ran out
    refused_no_slot: int  # "too many clients already": the superuser reserve ran out too
    refused_other: int  # a role's or a database's CONNECTION LIMIT

    def per_s(self, count: int) -> float | None:
        return count / self.window.seconds if self.window.seconds > 0 else None


@dataclass(frozen=True)
class ExactFigures(Json):
    available: bool
    reason: str | None = None  # why there is no exact figure: connections sampled only
    total: ExactPeak | None = None
    by_application: list[ExactPeak] = field(default_factory=list)
    churn_window: Window | None = None
    churn: list[SessionChurn] = field(default_factory=list)
    refusals: int | None = None  # SQLSTATE 53300 lines in the server's log
    attempts: Attempts | None = None  # over the variant's phases
    attempts_after_fill: Attempts | None = None  # after the pools stopped growing (churn window)


def _peak(name: str, check: SamplingCheck) -> ExactPeak:
    return ExactPeak(
        name=name or "(untagged)",
        exact=check.exact.count,
        exact_ts=check.exact.ts,
        sampled=float(check.sampled.count),
        spikes=len(check.spikes),
        longest_spike_s=max((s.above_s for s in check.spikes), default=0.0),
    )


def _churn(sessions: list[Session], window: Window) -> list[SessionChurn]:
    by_name: dict[str, list[Session]] = {}
    for s in sessions:
        by_name.setdefault(s.application_name, []).append(s)
    out = []
    for name, mine in sorted(by_name.items()):
        opened = [s for s in mine if window.start <= s.authorized_at < window.end]
        closed = [
            s for s in mine if s.ended_at is not None and window.start <= s.ended_at < window.end
        ]
        if not opened and not closed:
            continue
        lengths = sorted(s.ended_at - s.authorized_at for s in opened if s.ended_at is not None)
        out.append(
            SessionChurn(
                name=name or "(untagged)",
                opened=len(opened),
                closed=len(closed),
                opened_per_s=len(opened) / window.seconds,
                median_session_s=lengths[len(lengths) // 2] if lengths else None,
            )
        )
    return sorted(out, key=lambda c: -c.opened)


def _ours(database: str | None, application_name: str | None, wanted: str) -> bool:
    """A backend of the variant's database (or refused before it said which), not the
    collector's."""
    return database in (None, wanted) and application_name != APPLICATION_NAME


def attempts(log: ServerLog, database: str, window: Window) -> Attempts:
    """Backends started, authenticated and refused inside `window` (half-open)."""
    started = [
        b
        for b in log.backends
        if window.start <= b.started_at < window.end
        and _ours(b.database, b.application_name, database)
    ]
    refused = [
        r
        for r in log.refusals
        if window.start <= r.ts < window.end and _ours(r.database, r.application_name, database)
    ]
    reasons = [r.reason for r in refused]
    return Attempts(
        window=window,
        started=len(started),
        authenticated=sum(b.authorized for b in started),
        refused=len(refused),
        refused_reserved=reasons.count(RESERVED),
        refused_no_slot=reasons.count(NO_SLOT),
        refused_other=reasons.count(ROLE_OR_DATABASE),
    )


def exact_figures(
    result: VariantResult, s: VariantSeries, w: Windows, churn_window: Window | None
) -> ExactFigures:
    log = result.server_log()
    if log is None:
        return ExactFigures(False, reason=result.postgres_log_reason)
    database = result.entry.dbname
    if not database or w.load is None:
        return ExactFigures(False, reason="the variant records no database name or load phase")
    exact = timelines(log, database)
    wide = within(s.by_engine, w.load)
    found = compare_by_application(
        exact, list(wide.index), {c: wide[c].tolist() for c in wide.columns}
    )
    sessions = [
        x
        for x in log.sessions
        if x.database == database and x.established and x.application_name != APPLICATION_NAME
    ]
    return ExactFigures(
        available=True,
        total=_peak("total", found.total),
        by_application=[_peak(n, c) for n, c in found.by_application.items()],
        churn_window=churn_window,
        churn=_churn(sessions, churn_window) if churn_window else [],
        refusals=len(log.refusals),
        attempts=attempts(log, database, Window("the run's phases", w.t0, _end(w))),
        attempts_after_fill=attempts(log, database, churn_window) if churn_window else None,
    )


def _end(w: Windows) -> float:
    return max((p.end for p in w.phases.values()), default=w.load.end if w.load else w.t0)
