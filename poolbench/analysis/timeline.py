"""The exact number of open connections, rebuilt from postgres.log, against the samples.

`poolbench.results.pglog` reads the server's log into sessions; here they become step functions
(`Timeline`): the count of one database's connections, in total and per application_name,
after every connect and disconnect. `compare_with_samples` puts a sampler's view beside
it: the peak it saw against the exact peak over the same window, and each gap between two
samples where the exact count rose above both (a spike the sampler missed). The collector
samples at 10 Hz; a pool opening and closing connections faster than that, or a
per-request engine, shows here and not in samples.csv.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from poolbench.results.names import APPLICATION_NAME, UNTAGGED
from poolbench.results.pglog import ServerLog

MIN_SPIKE_S = 0.01  # shorter excesses over the samples are timing, not bursts


@dataclass(frozen=True)
class Peak:
    """The highest count and the first time it was reached (None: no time, e.g. no data)."""

    count: int
    ts: float | None


@dataclass(frozen=True)
class Timeline:
    """A step function: `counts[k]` open connections from `times[k]` until the next step.

    One step per connect or disconnect, in event order (several may share a millisecond),
    so the highest step is the exact peak. Before the first step the count is 0.
    """

    times: tuple[float, ...] = ()
    counts: tuple[int, ...] = ()

    def at(self, ts: float) -> int:
        """The count after every event at or before `ts`."""
        k = bisect.bisect_right(self.times, ts)
        return self.counts[k - 1] if k else 0

    def peak(self, start: float | None = None, end: float | None = None) -> Peak:
        """The exact peak over [start, end] (the whole log by default)."""
        lo = 0 if start is None else bisect.bisect_right(self.times, start)
        hi = len(self.times) if end is None else bisect.bisect_right(self.times, end)
        best = Peak(self.at(start), start) if start is not None else Peak(0, None)
        for k in range(lo, hi):
            if self.counts[k] > best.count:
                best = Peak(self.counts[k], self.times[k])
        return best


@dataclass(frozen=True)
class Timelines:
    """Exact open connections of one database: in total and per application_name."""

    database: str
    total: Timeline
    by_application: dict[str, Timeline]


def timelines(
    log: ServerLog, database: str, *, exclude: Iterable[str] = (APPLICATION_NAME,)
) -> Timelines:
    """Rebuild the exact connection count of `database` from its sessions.

    Sessions are counted from ``connection authorized`` to their end; failed start-ups
    (refusals) never count. `exclude` lists application_names left out, by default the
    collector's own, as the collector leaves them out of its samples.
    """
    skip = set(exclude)
    events: list[tuple[float, int, int, str]] = []  # (ts, line, +1/-1, application_name)
    for s in log.sessions:
        if s.database != database or not s.established or s.application_name in skip:
            continue
        events.append((s.authorized_at, s.authorized_line, 1, s.application_name))
        if s.ended_at is not None:
            events.append((s.ended_at, s.ended_line or 0, -1, s.application_name))
    events.sort()
    total: list[tuple[float, int]] = []
    per_app: dict[str, list[tuple[float, int]]] = {}
    open_total = 0
    open_app: dict[str, int] = {}
    for ts, _, delta, app in events:
        open_total += delta
        open_app[app] = open_app.get(app, 0) + delta
        total.append((ts, open_total))
        per_app.setdefault(app, []).append((ts, open_app[app]))
    return Timelines(
        database, _timeline(total), {app: _timeline(steps) for app, steps in per_app.items()}
    )


def _timeline(steps: list[tuple[float, int]]) -> Timeline:
    return Timeline(tuple(t for t, _ in steps), tuple(c for _, c in steps))


# --------------------------------------------------------------------------- vs samples


@dataclass(frozen=True)
class Spike:
    """Between two samples, the exact count rose above both: the sampler missed it.

    `sampled` is the higher of the two samples; the count exceeded it from `start` to
    `end` (`above_s` seconds in all, within the gap), reaching `peak` at `peak_ts`.
    """

    gap_start: float
    gap_end: float
    start: float
    end: float
    above_s: float
    peak: int
    peak_ts: float
    sampled: int


@dataclass(frozen=True)
class SamplingCheck:
    """The exact peak over the sampled window beside the peak the sampler saw."""

    exact: Peak
    sampled: Peak
    spikes: list[Spike]

    @property
    def missed(self) -> int:
        """How many connections the sampled peak is below the exact one."""
        return self.exact.count - self.sampled.count


def compare_with_samples(
    timeline: Timeline,
    sample_ts: Sequence[float],
    sampled: Sequence[float] | None = None,
    *,
    min_duration_s: float = MIN_SPIKE_S,
) -> SamplingCheck:
    """What a sampler at `sample_ts` (sorted) saw against the exact count, within its window.

    `sampled` holds what each sample counted (e.g. a column of `samples.connections_wide`);
    without it, the exact count at each sample time. A spike is reported for each gap
    between consecutive samples where the exact count exceeded both for at least
    `min_duration_s` in all. The default leaves out excesses of a few milliseconds at a
    gap's edge, which are not bursts: a backend is logged as authorized a moment before it
    appears in pg_stat_activity and as disconnected a moment after it has left, and the
    collector stamps a sample just before its query reads. Pass 0 to see every excess.
    """
    if not len(sample_ts):
        return SamplingCheck(Peak(0, None), Peak(0, None), [])
    values = (
        [int(v) for v in sampled] if sampled is not None else [timeline.at(t) for t in sample_ts]
    )
    if len(values) != len(sample_ts):
        raise ValueError("sample_ts and sampled differ in length")
    k = max(range(len(values)), key=values.__getitem__)
    spikes = []
    for i in range(len(sample_ts) - 1):
        spike = _gap_spike(timeline, sample_ts[i], sample_ts[i + 1], max(values[i], values[i + 1]))
        if spike is not None and spike.above_s >= min_duration_s:
            spikes.append(spike)
    return SamplingCheck(
        exact=timeline.peak(sample_ts[0], sample_ts[-1]),
        sampled=Peak(values[k], float(sample_ts[k])),
        spikes=spikes,
    )


def _gap_spike(timeline: Timeline, lo: float, hi: float, ref: int) -> Spike | None:
    """The exact count over (lo, hi) against `ref`: a Spike when it went above."""
    first = bisect.bisect_right(timeline.times, lo)
    last = bisect.bisect_left(timeline.times, hi)
    steps = [(lo, timeline.at(lo))] + [
        (timeline.times[k], timeline.counts[k]) for k in range(first, last)
    ]
    ends = [t for t, _ in steps[1:]] + [hi]  # a step lasts until the next one
    above = [j for j, (_, count) in enumerate(steps) if count > ref]
    if not above:
        return None
    top = max(above, key=lambda j: steps[j][1])  # the first step at the highest count
    return Spike(
        gap_start=lo,
        gap_end=hi,
        start=steps[above[0]][0],
        end=ends[above[-1]],
        above_s=sum(ends[j] - steps[j][0] for j in above),
        peak=steps[top][1],
        peak_ts=steps[top][0],
        sampled=ref,
    )


@dataclass(frozen=True)
class ExactVsSampled:
    """`compare_with_samples` for the total and for each application_name of a database.

    `sampled_only` lists names the sampler saw that no logged session started with (an
    application that renamed itself with ``SET application_name``): not compared.
    """

    total: SamplingCheck
    by_application: dict[str, SamplingCheck]
    sampled_only: list[str]


def compare_by_application(
    exact: Timelines,
    sample_ts: Sequence[float],
    sampled_by_name: Mapping[str, Sequence[float]],
    *,
    min_duration_s: float = MIN_SPIKE_S,
) -> ExactVsSampled:
    """Exact against sampled, per application_name and in total, over the sampler's window.

    `sampled_by_name` maps each name the sampler saw to its count at every sample (absent
    = 0), e.g. the columns of `samples.connections_wide`. The collector labels an untagged
    connection ``untagged`` or ``untagged:<owner>``; the log knows it as ``''``: those
    columns are summed and compared with ``''``.
    """
    n = len(sample_ts)
    folded: dict[str, list[float]] = {}
    for name, values in sampled_by_name.items():
        key = "" if name == UNTAGGED or name.startswith(UNTAGGED + ":") else name
        column = folded.setdefault(key, [0.0] * n)
        for i, value in enumerate(values):
            column[i] += value
    totals = [sum(column[i] for column in folded.values()) for i in range(n)]
    names = sorted(exact.by_application)
    return ExactVsSampled(
        total=compare_with_samples(exact.total, sample_ts, totals, min_duration_s=min_duration_s),
        by_application={
            name: compare_with_samples(
                exact.by_application[name],
                sample_ts,
                folded.get(name, [0.0] * n),
                min_duration_s=min_duration_s,
            )
            for name in names
        },
        sampled_only=sorted(set(folded) - set(names)),
    )
