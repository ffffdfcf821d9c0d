"""The report's sections, one function per question, each rendering typed figures as blocks."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

from poolbench import format as fmt
from poolbench.analysis.claims import ClaimsTable
from poolbench.analysis.figures import VariantFigures
from poolbench.analysis.leak import GROWING
from poolbench.analysis.limits import Bound
from poolbench.analysis.model import PoolModel
from poolbench.analysis.pool_sweep import Sweep
from poolbench.analysis.summary import ExperimentSummary, Summary
from poolbench.analysis.thresholds import Outcome
from poolbench.report.blocks import (
    Badge,
    Bullets,
    Cell,
    Heading,
    Image,
    Notice,
    NoticeKind,
    Para,
    Table,
)

if TYPE_CHECKING:  # matplotlib is imported when a chart is drawn, not before
    from poolbench.report.chart_kinds import Chart
from poolbench.results.failures import KIND_NAMES, LABELS

VERDICT_KIND = {
    "holds": "good",
    "partly": "mixed",
    "does not hold": "bad",
    "untested": "neutral",
    "not measured": "neutral",
}


def when(epoch: float | None) -> str:
    if epoch is None:
        return fmt.NA
    return _dt.datetime.fromtimestamp(epoch, _dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def claims_section(claims: ClaimsTable) -> list[Any]:
    blocks: list[Any] = [
        Heading(2, f"Claims, measured — {claims.experiment}"),
        Para(
            f"Each claim of the bench file against {claims.baseline} → {claims.variant}. One rule: "
            "holds when the measurement meets or beats the claim, partly when it moves the claimed "
            "way but falls short, does not hold when it does not move or moves the wrong way, "
            "untested when both sides were measured but one repeat per variant cannot establish "
            "the difference, not measured when something was not measured.",
            muted=True,
        ),
    ]
    rows: list[list[Cell]] = [
        [
            j.claim.text,
            j.claim.claimed(),
            j.measured,
            Badge(j.verdict, VERDICT_KIND[j.verdict]),
            j.reason,
        ]
        for j in claims.items
    ]
    blocks.append(Table(["claim", "claimed", "measured", "verdict", "why"], rows, "lllll"))
    return blocks


def sizing_section(experiment: ExperimentSummary) -> list[Any]:
    s = experiment.sizing
    blocks: list[Any] = [Heading(3, f"Right-sizing from measured demand — {experiment.name}")]
    if not s.measured:
        return [
            *blocks,
            Para("Active connections were not sampled: no estimate.", muted=True),
            *_wait_evidence(s.waits),
        ]
    rows = [
        [
            a.variant,
            fmt.number(d.active_mean, 1),
            fmt.count(d.active_p99),
            fmt.count(d.active_max),
            fmt.rate(d.requests_per_s),
            fmt.ms(d.db_time_ms),
            fmt.count(d.checked_out_p99),
            fmt.percent_of_core(d.app_cpu),
            str(a.bound),
        ]
        for a in s.advice
        for d in [a.demand]
    ]
    blocks.append(
        Table(
            [
                "variant",
                "active, mean (Little's L)",
                "active p99",
                "active max",
                "requests/s",
                "database time per request",
                "checked out p99 (app's view)",
                "app CPU",
                "bound by",
            ],
            rows,
            "lrrrrrrrl",
        )
    )
    for a in s.advice:
        blocks.append(Para(f"{a.variant}: {a.action}", strong=True))
        lines = [*a.findings]
        if a.saving is not None:
            lines.append(_saving_line(a.saving))
        if lines:
            blocks.append(Bullets(lines))
    if s.findings:
        blocks.append(Bullets(s.findings))
    hikari = f" HikariCP's rule of thumb for {s.cores} cores: {s.hikari}." if s.hikari else ""
    blocks.append(
        Para(
            "How: demand is PostgreSQL's own view — connections in state active at full load. "
            "L = requests/s × database time per request (Little's law) is the mean demand; the "
            "advice covers its p99 with 25 % headroom, per worker, and the total is always "
            "pool_size per worker × workers. A pool at its ceiling in at least a quarter of the "
            "full-load samples is never advised smaller: the demand measured through it is a "
            "lower bound. Connections checked out of the app's pools are not demand: a request "
            "can hold one while it does other work. A sweep (`poolbench size`) measures the "
            f"knee instead of estimating it.{hikari}",
            muted=True,
        )
    )
    return [*blocks, *_wait_evidence(s.waits)]


def _wait_evidence(waits: list[str]) -> list[Any]:
    """The pool probe's evidence on each pool's size: how long its checkouts queued."""
    if not waits:
        return []
    return [
        Para("Inside the pools (the app's pool probe): checkout queueing per engine.", muted=True),
        Bullets(waits),
    ]


def _saving_line(x: Any) -> str:
    text = (
        f"Against {x.variant}'s {fmt.count(x.idle)} connections held when idle: "
        f"{fmt.count(x.fewer_connections)} fewer"
    )
    if x.pss_bytes is not None:
        interval = (
            f"{fmt.mib(x.pss_low)} … {fmt.mib(x.pss_high)}"
            if x.pss_low is not None
            else "no interval: two backend levels only"
        )
        text += f", ≈ {fmt.mib(x.pss_bytes)} of PostgreSQL PSS ({interval}, at {x.slope_from})"
    return text + "."


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
        ("failed requests by kind (whole load, Locust)", _kinds(t.failure_kinds)),
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


def unsteady_note(d: Any) -> str:
    """A trend inside the full-load window, in words (beside the figures it affects)."""
    return f"not steady: {d.describe()}"


def _unsteady(t: Any, what: str) -> str:
    found = [d for d in t.unsteady if d.what == what]
    return f" — ⚠ {unsteady_note(found[0])}" if found else ""


def _slope(m: Any) -> str:
    p = m.pss_per_backend
    if p is None:
        return f"not measured ({m.pss_per_backend_note})" if m.pss_per_backend_note else fmt.NA
    interval = f"{fmt.mib(p.low)} … {fmt.mib(p.high)}" if p.low is not None else "no interval"
    return f"{fmt.mib(p.value)} ({interval}; {p.n} levels, {p.samples} samples)"


def _kinds(kinds: dict[str, int]) -> str:
    parts = [f"{LABELS[k]} {fmt.count(kinds.get(k))}" for k in KIND_NAMES if kinds.get(k)]
    return ", ".join(parts) or "none"


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
    return _table_section(f"The instrument — {experiment.name}", header, rows, "llrrrr")


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
    return _table_section(
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
    blocks += _table(
        ["variant", "application_name", "exact peak", "sampled peak", "spikes missed"],
        peaks,
        "llrrl",
        intro="Rebuilt at every connect and disconnect the server logged (load phase): the exact "
        "peak beside the peak the 10 Hz samples saw, and the gaps between two samples in which "
        "the count rose above both (connections the sampler missed).",
    )
    blocks += _table(
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
    return _table_section(
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


def model_section(experiment: ExperimentSummary) -> list[Any]:
    blocks: list[Any] = [
        Heading(3, f"Configuration vs measurement — {experiment.name}"),
        Para(
            "Predicted from the configuration alone: ceiling = workers × (pool_size + "
            "max_overflow), idle = workers × pool_size (what full pools keep; checked only for "
            "pools that filled).",
            muted=True,
        ),
    ]
    for v in experiment.variants:
        model = v.first.model
        if model is None:
            blocks.append(
                Notice(
                    NoticeKind.INFO,
                    f"{v.name}: no pool settings known "
                    "(declare them in the bench file): no prediction.",
                )
            )
            continue
        if model.pooler is not None:  # server connections carry any client's name: by layer
            blocks += _pooler_model(v.name, v.first, model)
            continue
        rows: list[list[Cell]] = [
            [
                e.name,
                fmt.count(e.pool_size),
                fmt.count(e.max_overflow),
                fmt.count(e.ceiling),
                fmt.count(e.measured_peak),
                fmt.count(e.idle) if e.filled else f"{fmt.count(e.idle)} ({_unfilled(v.first)})",
                fmt.count(e.measured_idle),
            ]
            for e in model.engines
        ]
        rows += [
            [f"{n} (outside the model)", "", "", "", fmt.count(p), "", ""]
            for n, p in model.unlisted.items()
        ]
        processes = f", {model.measured_processes} measured" if model.measured_processes else ""
        rows.append(
            [
                f"total ({model.workers} worker(s) declared{processes})",
                "",
                "",
                fmt.count(model.ceiling),
                fmt.count(model.measured_peak),
                fmt.count(model.idle),
                fmt.count(model.measured_idle),
            ]
        )
        blocks.append(
            Table(
                [
                    "engine (application_name)",
                    "pool_size",
                    "max_overflow",
                    "ceiling",
                    "measured peak",
                    "full pools idle",
                    "measured idle",
                ],
                rows,
                "lrrrrrr",
                caption=v.name,
            )
        )
        blocks += [Notice(NoticeKind(f.level), f.message) for f in model.flags]
        blocks += _processes_table(v.first)
    return blocks


def _unfilled(f: VariantFigures) -> str:
    """Why a pool's idle prediction cannot be checked: the server stopped it, or the load."""
    return "server full" if f.limit and f.limit.bound == Bound.SERVER_SLOTS else "never filled"


def limits_section(experiment: ExperimentSummary) -> list[Any]:
    """Which limit bound each variant's connections (poolbench.analysis.limits)."""
    kinds = {Bound.SERVER_SLOTS: "bad", Bound.POOL_CEILING: "mixed", Bound.DEMAND: "good"}
    rows = [
        [
            f"{f.variant}-{f.repeat}" if len(v.repeats) > 1 else v.name,
            Badge(str(f.limit.bound), kinds.get(f.limit.bound, "neutral")),
            f.limit.reason,
        ]
        for v in experiment.variants
        for f in v.repeats
        if f.limit is not None
    ]
    return _table_section(
        f"What limited the connections — {experiment.name}",
        ["variant", "bound by", "why"],
        rows,
        "lll",
        intro="Server slots: the server had no slot left for the app (its fewest free slots "
        "reached 0, or it refused connection attempts), so the pools could not open more. Pool "
        "ceiling: the pools opened all the configuration allows and requests waited for a "
        "connection. Demand: the load did not ask for more.",
    )


def attempts_section(experiment: ExperimentSummary) -> list[Any]:
    """Connection attempts from the server's log beside the failed requests (Locust), so a
    refusal is counted on the side that refused it, and the two counts are related."""
    rows, notes = [], []
    for v in experiment.variants:
        f = v.first
        for a in (f.exact.attempts, f.exact.attempts_after_fill):
            if a is None:
                continue
            rows.append(
                [
                    v.name,
                    a.window.label(),
                    fmt.count(a.started),
                    fmt.rate(a.per_s(a.started)),
                    fmt.count(a.authenticated),
                    fmt.count(a.refused),
                    fmt.rate(a.per_s(a.refused)),
                    fmt.count(a.refused_reserved),
                    fmt.count(a.refused_no_slot),
                    fmt.count(a.refused_other),
                ]
            )
        notes += _attempt_notes(f)
    blocks = _table_section(
        f"Connection attempts, as the server counted them — {experiment.name}",
        [
            "variant",
            "window",
            "backends started",
            "per s",
            "authenticated",
            "refused",
            "refused per s",
            "slots reserved",
            "too many clients",
            "role/db limit",
        ],
        rows,
        "llrrrrrrrr",
        intro="Every backend PostgreSQL started for a client (`connection received` in its log: "
        "one fork each), how many authenticated, and how many it refused with SQLSTATE 53300. "
        "“Slots reserved”: the slots an ordinary role may use were taken; “too many clients”: "
        "every slot was taken, the superuser reserve too. At exhaustion every refused attempt "
        "still costs the server a fork (and, for the reserved kind, an authentication).",
    )
    return blocks + [
        Notice(NoticeKind.WARNING if "superuser" in n else NoticeKind.INFO, n) for n in notes
    ]


def _attempt_notes(f: VariantFigures) -> list[str]:
    a, t = f.exact.attempts, f.traffic
    if a is None or not a.refused:
        return []
    notes = []
    if a.refused_no_slot:
        notes.append(
            f"{f.variant}: {fmt.count(a.refused_no_slot)} attempts were refused with “too many "
            "clients already”: even the superuser reserve ran out, so a DBA could not have "
            "connected to look."
        )
    notes.append(
        f"{f.variant}: the server refused {fmt.count(a.refused)} connection attempts over "
        f"{a.window.name}; Locust counted {fmt.count(t.failures)} failed requests in the "
        f"full-load window ({_kinds(t.failure_kinds)} over the whole load); the app's log names a "
        f"refusal in {fmt.count(t.refusals_app_log)} records. A refused attempt fails the request "
        "that made it unless the app retries, so the counts differ by retries, by requests that "
        "failed for another reason (e.g. a health check answering 503), and by the windows."
    )
    return notes


def _pooler_model(name: str, f: VariantFigures, model: PoolModel) -> list[Any]:
    """Behind PgBouncer, the model by layer: the app's pools are the pooler's clients."""
    clients = f.pgbouncer.peak_clients if f.pgbouncer else None
    rows: list[list[Cell]] = [
        [
            "the app's pools → PgBouncer (client connections, full load)",
            fmt.count(model.app_ceiling),
            fmt.count(clients),
        ],
        [
            "PgBouncer → PostgreSQL (server connections)",
            fmt.count(model.ceiling),
            fmt.count(model.measured_peak),
        ],
    ]
    table = Table(["layer", "ceiling (configuration)", "measured peak"], rows, "lrr", caption=name)
    notices = [Notice(NoticeKind(x.level), x.message) for x in model.flags]
    return [table, *notices]


def _processes_table(f: VariantFigures) -> list[Any]:
    """Per-process detail of the `untagged` engine (one engine, however many workers)."""
    if len(f.connections.processes) < 2:
        return []
    rows: list[list[Cell]] = [
        [str(p.pid), p.label, fmt.count(p.peak), fmt.count(p.idle)] for p in f.connections.processes
    ]
    caption = f"{f.variant}: untagged connections per client process (one engine)"
    return [Table(["pid", "as labelled", "peak", "idle"], rows, "lrrr", caption=caption)]


def events_section(experiment: ExperimentSummary) -> list[Any]:
    rows = []
    for v in experiment.variants:
        for f in v.repeats:
            t0 = f.windows.t0
            for e in f.events:
                details = ", ".join(
                    f"until t = {float(val) - t0:.1f} s" if k == "end" else f"{k} {val}"
                    for k, val in e.items()
                    if k not in ("ts", "event")
                )
                rows.append(
                    [
                        f"{f.variant}-{f.repeat}",
                        f"t = {float(e['ts']) - t0:.1f} s",
                        str(e["event"]),
                        details,
                    ]
                )
    return _table_section(
        f"Events — {experiment.name}", ["variant", "when", "event", "details"], rows, "llll"
    )


def sweep_section(sweep: Sweep, charts: list[Chart], run_dir: Path) -> list[Any]:
    blocks: list[Any] = [Heading(2, f"Pool-size sweep — {sweep.variant} ({sweep.group})")]
    if sweep.recommended is not None:
        text = (
            f"Recommended: pool_size {sweep.recommended} per worker × {sweep.workers} worker(s) "
            f"(max_overflow 0) — {sweep.reason}."
        )
    else:
        text = f"No size could be recommended: {sweep.reason}."
    if sweep.hikari:
        text += f" HikariCP's rule of thumb for {sweep.cores} cores: {sweep.hikari} connections."
    blocks.append(Para(text, strong=True))
    rows: list[list[Cell]] = [
        [
            fmt.count(p.pool_size),
            fmt.count(p.n),
            fmt.rate(p.goodput),
            fmt.pct(p.goodput_change_pct),
            fmt.ms(p.p50),
            fmt.ms(p.p95),
            fmt.pct(p.p95_change_pct),
            fmt.ms(p.p99),
            fmt.rate(p.failures_per_s),
            Badge("as good", "good") if p.as_good else Badge("worse", "bad"),
            p.why,
        ]
        for p in sweep.points
    ]
    blocks.append(
        Table(
            [
                "pool_size per worker",
                "runs",
                "goodput",
                "vs best",
                "p50",
                "p95",
                "vs best",
                "p99",
                "failed/s",
                "",
                "how decided",
            ],
            rows,
            "rrrrrrrrrll",
        )
    )
    blocks += [Notice(NoticeKind.INFO, n) for n in sweep.notes]
    for chart in charts:
        if chart.experiment == f"sweep:{sweep.group}:{sweep.variant}":
            blocks.append(
                Image(
                    chart.path, chart.path.relative_to(run_dir).as_posix(), chart.alt, chart.title
                )
            )
    return blocks


def thresholds_section(summary: Summary) -> list[Any]:
    if not summary.thresholds:
        return []
    kinds = {Outcome.BREACHED: "bad", Outcome.PASSED: "good", Outcome.INCONCLUSIVE: "neutral"}
    rows: list[list[Cell]] = [
        [
            g.experiment,
            g.expression,
            Badge(g.outcome, kinds.get(g.outcome, "neutral")),
            g.explanation,
        ]
        for g in summary.thresholds
    ]
    return [
        Heading(2, "Thresholds"),
        Para(
            "CI gates (fail_if in the bench file, --fail-if on the command line): breached exits "
            "with code 3; inconclusive (an untested difference) is reported, not failed, unless "
            "--strict-thresholds.",
            muted=True,
        ),
        Table(["experiment", "fail if", "outcome", "why"], rows, "llll"),
    ]


def census_section(summary: Summary) -> list[Any]:
    """One table per distinct census: the same app in several experiments is listed once."""
    seen: dict[str, tuple[list[str], Any]] = {}
    for experiment in summary.experiments:
        for v in experiment.variants:
            census = v.first.census
            if census is None:
                continue
            key = repr(census.list)
            seen.setdefault(key, ([], census))[0].append(f"{experiment.name} / {v.name}")
    if not seen:
        return []
    blocks: list[Any] = [
        Heading(2, "Engine census"),
        Para(
            "Static census of the calls that create engines (poolbench lint), per variant.",
            muted=True,
        ),
    ]
    for where, census in seen.values():
        rows = [
            [str(s.get(k, "")) for k in ("module", "line", "kind", "scope", "status")]
            for s in census.list
        ]
        scopes = ", ".join(f"{k} {n}" for k, n in sorted(census.by_scope.items()))
        blocks.append(
            Table(
                ["module", "line", "kind", "scope", "status"],
                rows,
                "lrlll",
                caption=f"{', '.join(where)}: {census.sites} sites ({scopes})",
            )
        )
    return blocks


def environment_section(summary: Summary) -> list[Any]:
    run, env = summary.run, summary.run.environment
    recorded = env.get("postgres")
    pg: dict[str, Any] = recorded if isinstance(recorded, dict) else {}
    rows = [
        ["run", run.run_id],
        ["status", str(run.status)],
        ["started / finished", f"{when(run.started_at)} / {when(run.finished_at)}"],
    ]
    rows += [
        [k.replace("_", " "), str(env[k])]
        for k in ("python", "platform", "cpu_count", "hostname", "git_revision")
        if env.get(k) is not None
    ]
    rows += [
        [f"PostgreSQL {k.replace('_', ' ')}", str(pg[k])]
        for k in ("provider", "server_version", "version")
        if pg.get(k) is not None
    ]
    rows += _server_settings_rows(summary, pg.get("settings"))
    if isinstance(env.get("packages"), dict) and env["packages"]:
        rows.append(["packages", ", ".join(f"{k} {v}" for k, v in env["packages"].items())])
    return [Heading(2, "Environment"), Table(["", ""], rows, "ll")]


def _settings_text(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k} {fmt.pg_setting(k, v)}" for k, v in settings.items())


def _server_settings_rows(summary: Summary, run_wide: Any) -> list[list[str]]:
    """The server's settings per variant (each experiment may configure its own server), one
    row per distinct set; run.json's for a variant that recorded none of its own."""
    fallback = run_wide if isinstance(run_wide, dict) else {}
    groups: dict[str, list[str]] = {}
    for experiment in summary.experiments:
        for v in experiment.variants:
            settings = v.first.server_settings or fallback
            if settings:
                groups.setdefault(_settings_text(settings), []).append(
                    f"{experiment.name} / {v.name}"
                )
    if len(groups) == 1:
        return [["PostgreSQL settings", next(iter(groups))]]
    return [[f"PostgreSQL settings ({', '.join(where)})", text] for text, where in groups.items()]


def _table_section(
    title: str, header: list[str], rows: list[list[Any]], align: str, intro: str | None = None
) -> list[Any]:
    """A table under its heading; nothing at all when no variant has a row."""
    table = _table(header, rows, align, intro)
    return [Heading(3, title), *table] if table else []


def _table(
    header: list[str], rows: list[list[Any]], align: str, intro: str | None = None
) -> list[Any]:
    """A table after its muted intro; nothing when there are no rows."""
    if not rows:
        return []
    return [*([Para(intro, muted=True)] if intro else []), Table(header, rows, align)]


def pool_probe_section(experiment: ExperimentSummary) -> list[Any]:
    """Inside the pools: per engine, checkout wait beside request latency, time at the ceiling."""
    probed = [(v, v.first.probe) for v in experiment.variants if v.first.probe is not None]
    if not probed:
        return []
    blocks: list[Any] = [
        Heading(3, f"Inside the pools — {experiment.name}"),
        Para(
            "Measured in the app by poolbench's pool probe, per engine (its creation site, "
            "module:line, as `poolbench lint` names it), over the window of the request "
            "latency beside it. Wait: from asking the pool for a connection to getting one "
            "(queueing, opening a new one, pre-ping), exact percentiles over every checkout "
            "requested in the window, timeouts included. Failed: checkouts that raised (e.g. "
            "PostgreSQL refused the connection). At ceiling: share of the window each "
            "worker's pool had every connection it may open checked out (0.1 s ticks).",
            muted=True,
        ),
    ]
    rows: list[list[Cell]] = []
    for v, probe in probed:
        lat = v.first.traffic.latency
        requests = f"{fmt.ms(lat.p50)} / {fmt.ms(lat.p95)} / {fmt.ms(lat.p99)}"
        for e in probe.engines:
            rows.append(_probe_row(v.name, e, requests))
    blocks.append(
        Table(
            [
                "variant",
                "engine (site)",
                "application_name",
                "pool",
                "checkouts",
                "wait p50 / p95 / p99 / max",
                "requests p50 / p95 / p99",
                "at ceiling",
                "peak out / ceiling",
                "timeouts / failed",
                "connects / closes",
            ],
            rows,
            "lllllrllrrr",
        )
    )
    explained = _wait_explains(probed)
    if explained:
        blocks.append(Para(explained))
    damaged = [f"{v.name} {d}" for v, p in probed for d in p.damaged]
    if damaged:
        blocks.append(
            Notice(NoticeKind.WARNING, "Damaged probe files: " + "; ".join(damaged) + ".")
        )
    cut = [f"{v.name}: {p.processes_cut}" for v, p in probed if p.processes_cut]
    if cut:
        blocks.append(
            Notice(
                NoticeKind.INFO,
                "Processes killed before the probe's last write (their last ≤ 0.1 s is "
                f"missing): {', '.join(cut)}.",
            )
        )
    return blocks


def _probe_row(variant: str, e: Any, requests: str) -> list[Cell]:
    w = e.wait
    pool = e.pool_class if e.ceiling is None else f"{e.pool_class} {e.pool_size} + {e.max_overflow}"
    if e.processes > 1:
        pool += f" × {e.processes} processes"
    if e.pool_timeout is not None:
        pool += f", timeout {fmt.seconds(e.pool_timeout)}"
    if e.pool_recycle is not None and e.pool_recycle > 0:
        pool += f", recycle {fmt.seconds(e.pool_recycle)}"
    if e.pool_pre_ping:
        pool += ", pre-ping"
    name = e.application_name or fmt.NA
    if e.name_source == "probe":
        name += " (set by the probe)"
    return [
        variant,
        e.site,
        name,
        pool,
        fmt.count(e.checkouts),
        f"{fmt.ms(w.p50_ms)} / {fmt.ms(w.p95_ms)} / {fmt.ms(w.p99_ms)} / {fmt.ms(w.max_ms)}",
        requests,
        fmt.share(e.at_ceiling_share),
        f"{e.peak_out} / {e.ceiling if e.ceiling is not None else '∞'}",
        f"{fmt.count(e.counters.get('timeouts'))} / {fmt.count(e.counters.get('errors'))}",
        f"{fmt.count(e.counters.get('connects'))} / {fmt.count(e.counters.get('closes'))}",
    ]


def _busiest(probe: Any) -> Any:
    """The bounded engine whose checkouts waited longest at p95 (the one requests queue on)."""
    bounded = [e for e in probe.engines if e.ceiling is not None and e.wait.p95_ms is not None]
    return max(bounded, key=lambda e: e.wait.p95_ms, default=None)


def _wait_explains(probed: list[tuple[Any, Any]]) -> str | None:
    """Request p95 from the first variant to each other beside the busiest pool's wait p95:
    does the time spent waiting for a connection account for the change?"""
    (base, base_probe), *others = probed
    a_engine, a_p95 = _busiest(base_probe), base.first.traffic.latency.p95
    if a_engine is None or a_p95 is None:
        return None
    texts = []
    for v, probe in others:
        b_engine, b_p95 = _busiest(probe), v.first.traffic.latency.p95
        if b_engine is None or b_p95 is None:
            continue
        a_wait, b_wait = a_engine.wait.p95_ms, b_engine.wait.p95_ms
        d_req, d_wait = b_p95 - a_p95, b_wait - a_wait
        share = d_wait / d_req if d_req else None
        verdict = (
            "the wait for a connection accounts for at least half of that change"
            if share is not None and share >= 0.5
            else "the wait for a connection does not account for it"
        )
        texts.append(
            f"{base.name} → {v.name}: request p95 {fmt.ms(a_p95)} → {fmt.ms(b_p95)} "
            f"({_signed_ms(d_req)}); checkout wait p95 of the pool requests waited on longest "
            f"{fmt.ms(a_wait)} ({a_engine.site}) → {fmt.ms(b_wait)} ({b_engine.site}) "
            f"({_signed_ms(d_wait)}): {verdict} (percentiles do not add: a comparison, not a "
            "decomposition)."
        )
    return " ".join(texts) or None


def _signed_ms(value: float) -> str:
    return ("+" if value > 0 else "") + fmt.ms(value)
