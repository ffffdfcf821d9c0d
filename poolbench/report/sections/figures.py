"""A variant's figures as tables: the details, the instrument's cost, Little's law, the exact
timeline, memory growth."""

from __future__ import annotations

from typing import Any

from poolbench import format as fmt
from poolbench.analysis.figures import VariantFigures
from poolbench.analysis.leak import GROWING
from poolbench.analysis.summary import ExperimentSummary
from poolbench.report.blocks import (
    Badge,
    Heading,
    Notice,
    NoticeKind,
    Para,
    Table,
)
from poolbench.report.sections.common import kind_counts, table_blocks, table_section, unsteady_note


def _figure_rows(f: VariantFigures) -> list[tuple[str, str]]:
    c, m, t, ch = f.connections, f.memory, f.traffic, f.churn
    rows = [
        ("status", str(f.status or fmt.NA)),
        ("workers (declared)", fmt.count(f.workers)),
        ("full-load window", f.windows.full_load.label() if f.windows.full_load else fmt.NA),
        ("peak connections (load)", fmt.count(c.peak)),
        ("p95 connections (load)", fmt.count(c.p95)),
        ("connections held when idle (median, 2nd half)", fmt.count(c.idle)),
        ("fewest free slots (load)", fmt.count(c.slots_left_min)),
        ("application names holding connections when idle", fmt.count(c.pools_holding_idle)),
        ("sessions opened while the pools filled", fmt.count(ch.opened_while_filling)),
        ("new sessions/s after the pools filled", fmt.rate(ch.churn_per_s)),
        (
            "PostgreSQL PSS idle / full load / peak",
            " / ".join(
                fmt.mib(v)
                for v in (m.postgres_pss.idle, m.postgres_pss.full_load, m.postgres_pss.peak)
            ),
        ),
        ("PostgreSQL USS idle", fmt.mib(m.postgres_uss.idle)),
        (
            "summed RSS ÷ PSS of PostgreSQL (how much RSS would overstate)",
            f"{m.rss_overstatement:.1f} ×" if m.rss_overstatement else fmt.NA,
        ),
        (
            "PostgreSQL memory measured over",
            f"{m.scope}"
            + (
                f"; other clients held up to {fmt.count(m.other_clients)} connections"
                if m.other_clients
                else ""
            ),
        ),
        (
            "PSS per additional backend (marginal, 95 % CI over independent backend levels)",
            _slope(m),
        ),
        (
            "app USS / PSS / RSS, full load (mean)",
            " / ".join(
                fmt.mib(v) for v in (m.app_uss.full_load, m.app_pss.full_load, m.app_rss.full_load)
            ),
        ),
        (
            "requests served in the window (successful / failed)",
            f"{fmt.count(t.successes)} / {fmt.count(t.failures)}",
        ),
        (
            "goodput; failures/s",
            f"{fmt.rate(t.goodput)}; {fmt.rate(t.failures_per_s)}" + _unsteady(t, "goodput"),
        ),
        (
            "latency p50 / p95 / p99 / mean (successful)",
            " / ".join(
                fmt.ms(v) for v in (t.latency.p50, t.latency.p95, t.latency.p99, t.latency.mean)
            )
            + _unsteady(t, "mean response"),
        ),
        ("failed requests by kind (whole load, Locust)", kind_counts(t.failure_kinds)),
        ("records of app.log naming a refusal (cross-check)", fmt.count(t.refusals_app_log)),
        (
            "connection attempts refused (server log)",
            fmt.count(f.exact.attempts.refused) if f.exact.attempts else fmt.NA,
        ),
        (
            "“idle in transaction” at full load, mean / max",
            f"{fmt.count(c.idle_in_transaction.mean)} / {fmt.count(c.idle_in_transaction.max)}",
        ),
        ("connections bound by", str(f.limit.bound) if f.limit else fmt.NA),
    ]
    for component, value in sorted(f.cpu.full_load.items()):
        rows.append((f"CPU {component} (full load)", fmt.percent_of_core(value)))
    return rows


def _unsteady(t: Any, what: str) -> str:
    found = [d for d in t.unsteady if d.what == what]
    return f" — ⚠ {unsteady_note(found[0])}" if found else ""


def _slope(m: Any) -> str:
    p = m.pss_per_backend
    if p is None:
        return f"not measured ({m.pss_per_backend_note})" if m.pss_per_backend_note else fmt.NA
    interval = f"{fmt.mib(p.low)} … {fmt.mib(p.high)}" if p.low is not None else "no interval"
    return f"{fmt.mib(p.value)} ({interval}; {p.n} levels, {p.samples} samples)"


def details_section(experiment: ExperimentSummary) -> list[Any]:
    firsts = [v.first for v in experiment.variants]
    rows_by_label: dict[str, list[str]] = {}
    for f in firsts:
        for label, text in _figure_rows(f):
            rows_by_label.setdefault(label, []).append(text)
    blocks: list[Any] = [Heading(3, f"Figures per variant — {experiment.name}")]
    if any(len(v.repeats) > 1 for v in experiment.variants):
        blocks.append(
            Para(
                "First repeat of each variant; the comparison above uses every repeat.", muted=True
            )
        )
    blocks.append(
        Table(
            ["", *(v.name for v in experiment.variants)],
            [[label, *values] for label, values in rows_by_label.items()],
            "l" + "r" * len(firsts),
        )
    )
    return blocks


def instrument_section(experiment: ExperimentSummary) -> list[Any]:
    """What the measuring cost: the collector's CPU beside the app's, its rates and refresh."""
    rows = []
    for v in experiment.variants:
        f, c = v.first, v.first.collector
        samples, missed = c.get("samples"), c.get("missed_samples")
        rows.append(
            [
                v.name,
                str(c.get("profile") or "default"),
                fmt.percent_of_core(f.cpu.full_load.get("collector")),
                fmt.percent_of_core(f.cpu.full_load.get("app")),
                f"{fmt.number(c.get('connections_hz'))} Hz"
                + (f" ({fmt.count(missed)} of {fmt.count(samples)} missed)" if samples else ""),
                fmt.seconds(c.get("memory_refresh_max_s")) if c.get("memory", True) else "off",
            ]
        )
    header = [
        "variant",
        "collector",
        "collector CPU (full load)",
        "app CPU (full load)",
        "connections sampled",
        "memory refreshed within",
    ]
    return table_section(f"The instrument — {experiment.name}", header, rows, "llrrrr")


def little_section(experiment: ExperimentSummary) -> list[Any]:
    rows = []
    for v in experiment.variants:
        check = v.first.traffic.littles_law
        if check is None:
            continue
        rows.append(
            [
                v.name,
                fmt.number(check.users, 0),
                fmt.rate(check.throughput),
                fmt.ms(check.mean_think_s * 1000),
                fmt.ms(check.predicted_response_s * 1000),
                fmt.ms(check.mean_response_s * 1000),
                fmt.pct(check.disagreement_pct),
                Badge("agrees", "good") if check.agrees else Badge("disagrees", "bad"),
                "; ".join(unsteady_note(d) for d in v.first.traffic.unsteady) or "steady",
            ]
        )
    return table_section(
        f"Little's law, a self-check of the instrument — {experiment.name}",
        [
            "variant",
            "users",
            "requests/s",
            "think time",
            "predicted response",
            "measured response",
            "difference",
            "",
            "trend in the window",
        ],
        rows,
        "lrrrrrrll",
        intro="In a closed loop each user waits for its answer, then thinks: "
        "response time ≈ users ÷ "
        "throughput − think time. Think time is measured per user from the records; a "
        "disagreement over 10 % means users were idle, the load generator stalled, or the "
        "window is not steady. Little's law holds for averages, so it cannot see a trend: each "
        "window is also tested for one (goodput and mean response per second against time, "
        "interval corrected for autocorrelation; flagged when its halves differ by 5 % or more).",
    )


def exact_section(experiment: ExperimentSummary) -> list[Any]:
    """The server log's exact counts beside the samples, and churn per application_name."""
    blocks: list[Any] = [
        Heading(3, f"Exact connection counts from the server's log — {experiment.name}")
    ]
    peaks, churn, missing = [], [], []
    for v in experiment.variants:
        x = v.first.exact
        if not x.available:
            missing.append(f"{v.name}: sampled only — {x.reason}")
            continue
        for p in [x.total, *x.by_application]:
            if p is None:
                continue
            spikes = (
                f"{p.spikes} (longest {p.longest_spike_s * 1000:.0f} ms)" if p.spikes else "none"
            )
            peaks.append([v.name, p.name, fmt.count(p.exact), fmt.count(p.sampled), spikes])
        for c in x.churn:
            churn.append(
                [
                    v.name,
                    c.name,
                    fmt.count(c.opened),
                    fmt.count(c.closed),
                    fmt.rate(c.opened_per_s),
                    fmt.ms(c.median_session_s * 1000) if c.median_session_s is not None else fmt.NA,
                ]
            )
    blocks += table_blocks(
        ["variant", "application_name", "exact peak", "sampled peak", "spikes missed"],
        peaks,
        "llrrl",
        intro="Rebuilt at every connect and disconnect the server logged (load phase): the exact "
        "peak beside the peak the 10 Hz samples saw, and the gaps between two samples in which "
        "the count rose above both (connections the sampler missed).",
    )
    blocks += table_blocks(
        ["variant", "application_name", "opened", "closed", "opened per second", "median session"],
        churn,
        "llrrrr",
        intro="Sessions opened and closed after the pools stopped growing, per application_name: "
        "each new session costs PostgreSQL a backend fork and its authentication. Per-call "
        "engines (created and disposed per request) show here.",
    )
    blocks += [Notice(NoticeKind.INFO, m) for m in missing]
    return blocks if len(blocks) > 1 else []


def leak_section(experiment: ExperimentSummary) -> list[Any]:
    rows = []
    for v in experiment.variants:
        for t in v.first.leak:
            unit = fmt.mib if t.unit == "bytes" else fmt.count
            slope = (
                f"{unit(t.slope_per_h)}/h (95 % CI {unit(t.low_per_h)}/h … {unit(t.high_per_h)}/h)"
                if t.slope_per_h is not None
                else fmt.NA
            )
            kind = (
                "bad" if t.verdict == GROWING else "good" if t.verdict == "no growth" else "neutral"
            )
            window = t.window.label() if t.window else fmt.NA
            if t.warmup_s:
                window += f" (after {fmt.seconds(t.warmup_s)} of warm-up)"
            threshold = (
                (unit(t.threshold_per_h) + "/h") if t.threshold_per_h is not None else fmt.NA
            )
            rows.append(
                [v.name, t.what, window, slope, threshold, Badge(t.verdict, kind), t.reason]
            )
    return table_section(
        f"Growth at a constant load (leak test) — {experiment.name}",
        ["variant", "series", "window", "slope", "matters from", "verdict", "why"],
        rows,
        "lllrrll",
        intro="A slope fitted over a window at a constant user count after the pools filled (a "
        "soak phase when there is one), with a 95 % interval corrected for autocorrelation. "
        "Warm-up is excluded (decelerating growth at the window's start: a quarter growing more "
        "than 3 × faster than the rest); private memory (USS) is judged, PSS is shown only "
        "(backends faulting in shared_buffers move it); growth matters when it would double the "
        "process within a day (at least 3 MiB/h), and the window must be long enough to see "
        "that; a connection count below the pools' ceiling is never a leak.",
    )
