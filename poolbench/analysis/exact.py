"""The exact connection count from the server's log, beside what the 10 Hz samples saw.

Where the results folder holds postgres.log (the embedded server logs every connect and
disconnect), the number of open connections is rebuilt at every event (poolbench.analysis.timeline): the
exact peak per application_name and in total over the load phase, beside the sampled peak, and
the short spikes the sampler missed. Sessions opened and closed per second, per
application_name, after the pools stopped growing, are read from the same log: the churn of
per-call engines (each one a backend fork). Without the log (an existing server elsewhere), the
figures say "sampled only" and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from poolbench.analysis.series import VariantSeries
from poolbench.analysis.timeline import SamplingCheck, compare_by_application, timelines
from poolbench.analysis.typed import Json, Window
from poolbench.analysis.windows import Windows, within
from poolbench.results.names import APPLICATION_NAME
from poolbench.results.pglog import Session
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
class ExactFigures(Json):
    available: bool
    reason: str | None = None  # why there is no exact figure: connections sampled only
    total: ExactPeak | None = None
    by_application: list[ExactPeak] = field(default_factory=list)
    churn_window: Window | None = None
    churn: list[SessionChurn] = field(default_factory=list)
    refusals: int | None = None  # SQLSTATE 53300 lines in the server's log


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


def exact_figures(
    result: VariantResult, s: VariantSeries, w: Windows, churn_window: Window | None
) -> ExactFigures:
    log = result.server_log()
    if log is None:
        return ExactFigures(False, reason=result.postgres_log_reason)
    database = (result.meta.get("database") or {}).get("dbname")
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
    )
