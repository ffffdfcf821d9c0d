"""What the pools did: the model against the measurement, what bound the load, refused
attempts, and the pool probe's waits from inside the app."""

from __future__ import annotations

from typing import Any

from poolbench import format as fmt
from poolbench.analysis.figures import VariantFigures
from poolbench.analysis.limits import Bound
from poolbench.analysis.model import PoolModel
from poolbench.analysis.summary import ExperimentSummary
from poolbench.report.blocks import (
    Badge,
    Cell,
    Heading,
    Notice,
    NoticeKind,
    Para,
    Table,
)
from poolbench.report.sections.common import kind_counts, table_section


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
    return table_section(
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
    blocks = table_section(
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
        f"full-load window ({kind_counts(t.failure_kinds)} over the whole load); "
        "the app's log names a "
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
