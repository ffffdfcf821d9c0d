"""The report's PgBouncer section and its fan-in chart: both sides of a pooler, side by side.

For an experiment with a variant behind PgBouncer: per variant, PostgreSQL's backends beside
the app's client connections to the pooler (the fan-in), the pooler's client wait beside the
request latency, the extra hop's cost against the same app connected directly, the failure
modes (prepared-statement errors with the server's message; refusals by the pooler, apart
from PostgreSQL's SQLSTATE 53300), both configuration layers, and the advice for
`default_pool_size`. Nothing at all for an experiment without a pooler.
"""

from __future__ import annotations

import math
from typing import Any

from poolbench import format as fmt
from poolbench.analysis.figures import VariantFigures
from poolbench.analysis.summary import ExperimentSummary
from poolbench.report.blocks import Bullets, Cell, Heading, Notice, NoticeKind, Para, Table

HEADROOM = 1.25  # as the pool advice's (poolbench.analysis.sizing)


def has_pooler(experiment: ExperimentSummary) -> bool:
    return any(v.first.pgbouncer is not None for v in experiment.variants)


def _glance_row(f: VariantFigures) -> list[Cell]:
    b, t = f.pgbouncer, f.traffic
    direct = "direct"
    return [
        f.variant,
        fmt.count(f.connections.peak),
        fmt.count(b.peak_clients) if b else direct,
        fmt.number(b.fan_in, 1) + " : 1" if b and b.fan_in else "",
        fmt.count(b.peak_waiting) if b else "",
        fmt.ms(b.wait_p95_ms) if b else "",
        fmt.rate(t.goodput),
        fmt.ms(t.latency.p95),
        fmt.count(b.prepared_statement_errors) if b else "",
        fmt.count(b.pooler_refusals) if b else "",
        fmt.count(t.refusals),
    ]


def glance_table(experiment: ExperimentSummary) -> Table:
    rows = [_glance_row(v.first) for v in experiment.variants]
    return Table(
        [
            "variant",
            "PostgreSQL backends, peak",
            "client connections to the pooler, peak",
            "fan-in",
            "waiting clients, peak",
            "pooler wait p95",
            "goodput",
            "request p95",
            "prepared-statement errors",
            "refused by the pooler",
            "refused by PostgreSQL (53300)",
        ],
        rows,
        "lrrrrrrrrrr",
    )


def _hop(f: VariantFigures, direct: VariantFigures | None) -> str | None:
    """The extra hop: probed on its own, and the request latency against the same app direct."""
    b = f.pgbouncer
    if b is None:
        return None
    parts = []
    if b.hop_ms is not None:
        parts.append(
            f"{f.variant}: the hop itself costs {fmt.ms(b.hop_ms)} per round trip "
            f"(SELECT 1 through PgBouncer minus direct, median of {b.hop_samples} paired probes "
            "while no client waited)"
        )
    mine = f.traffic.latency.p50
    theirs = direct.traffic.latency.p50 if direct is not None else None
    if direct is not None and mine is not None and theirs is not None and not f.traffic.failures:
        parts.append(
            f"median request {fmt.ms(mine)} against {fmt.ms(theirs)} for {direct.variant} (the "
            f"same app, direct, same load): {fmt.ms(mine - theirs)} more, the hop's round trips "
            "plus the wait for a server and whatever else the variants change"
        )
    return "; ".join(parts) or None


def hop_bullets(experiment: ExperimentSummary) -> list[str]:
    figures = [v.first for v in experiment.variants]
    directs = {f.app_dir: f for f in figures if f.pgbouncer is None and f.app_dir}
    return [
        h
        for f in figures
        if (h := _hop(f, directs.get(f.app_dir) if f.app_dir else None)) is not None
    ]


def layers_table(experiment: ExperimentSummary) -> Table:
    """Both configuration layers: the app's pools (client side) and the pooler's (server side)."""
    rows: list[list[Cell]] = []
    for v in experiment.variants:
        f, b = v.first, v.first.pgbouncer
        model = f.model
        app_ceiling = model.app_ceiling if model and model.app_ceiling is not None else None
        if app_ceiling is None and model is not None and b is None:
            app_ceiling = model.ceiling
        rows.append(
            [
                f.variant,
                fmt.count(app_ceiling),
                f"{b.pool_mode}" if b else "none (direct)",
                fmt.count(b.default_pool_size) if b else "",
                fmt.count(b.reserve_pool_size) if b else "",
                fmt.count(b.max_client_conn) if b else "",
                fmt.count(b.server_ceiling if b else app_ceiling),
                fmt.count(f.connections.peak),
            ]
        )
    return Table(
        [
            "variant",
            "app pools: ceiling (client side)",
            "pool_mode",
            "default_pool_size",
            "reserve_pool_size",
            "max_client_conn",
            "PostgreSQL can see at most",
            "measured peak",
        ],
        rows,
        "lrlrrrrr",
    )


def advice(experiment: ExperimentSummary) -> list[str]:
    """default_pool_size from the measured server-side demand; max_client_conn from the peak."""
    out = []
    # the server-side demand of the variants, each with headroom (not each variant's advice
    # for its own app pools, which keeps a saturated pool's ceiling)
    demands = [a.needed for a in experiment.sizing.advice if a.needed is not None]
    total = max(math.ceil(n * HEADROOM - 1e-9) for n in demands) if demands else None
    if total is not None:
        out.append(
            f"default_pool_size {total}: the server-side demand measured above (active "
            "connections plus 25 % headroom) is what the pooler's server pool must cover; with "
            "PgBouncer in front the app's own pools size the client side only"
        )
    capped = [
        v.name
        for v in experiment.variants
        if (b := v.first.pgbouncer)
        and (b.peak_waiting or 0) > 0
        and v.first.connections.peak is not None
        and v.first.connections.peak >= (b.server_ceiling or math.inf)
    ]
    if total is not None and capped:
        out.append(
            "the demand is capped where clients waited for a full server pool "
            f"({', '.join(capped)}): "
            "PostgreSQL could not show more active connections than the pooler gave it, so a "
            "larger default_pool_size may still help — measure one (`poolbench size`, or a variant "
            "with a larger pool)"
        )
    peaks = [v.first.pgbouncer.peak_clients for v in experiment.variants if v.first.pgbouncer]
    peak = max((p for p in peaks if p is not None), default=None)
    if peak is not None:
        out.append(
            f"max_client_conn at least {math.ceil(peak * HEADROOM)}: the most client connections "
            f"an app held here was {fmt.count(peak)}; "
            "beyond max_client_conn PgBouncer refuses logins"
        )
    return out


FIX = (
    "Turn the statement caches off (DB_PREPARED_STATEMENTS=off in the specimen apps; "
    "SQLAlchemy: prepared_statement_cache_size=0 and unique statement names) or use "
    "PgBouncer ≥ 1.21 with max_prepared_statements."
)


def failure_blocks(experiment: ExperimentSummary) -> list[Any]:
    """The pooler's failure modes, each a warning with its count and where it was counted."""
    blocks: list[Any] = []
    for v in experiment.variants:
        b = v.first.pgbouncer
        if b is None:
            continue
        if b.prepared_statement_errors:
            said = "; ".join(f"“{m}” × {n}" for m, n in b.messages.items()) or "no message found"
            blocks.append(
                Notice(
                    NoticeKind.WARNING,
                    f"{v.name}: {fmt.count(b.prepared_statement_errors)} requests failed "
                    f"on prepared statements through {b.pool_mode} pooling (app.log, whole run): "
                    f"{said}. {FIX}",
                )
            )
        if b.pooler_refusals:
            blocks.append(
                Notice(
                    NoticeKind.WARNING,
                    f"{v.name}: PgBouncer refused {fmt.count(b.pooler_refusals)} client logins at "
                    f"max_client_conn {fmt.count(b.max_client_conn)} (pgbouncer.log); PostgreSQL's "
                    "own refusals (53300) are counted apart.",
                )
            )
    return blocks


def pgbouncer_section(experiment: ExperimentSummary) -> list[Any]:
    if not has_pooler(experiment):
        return []
    window = next(
        (v.first.pgbouncer.window for v in experiment.variants if v.first.pgbouncer), None
    )
    blocks: list[Any] = [
        Heading(3, f"PgBouncer: both sides — {experiment.name}"),
        Para(
            "PostgreSQL's backends (pg_stat_activity) beside the app's client connections to "
            "PgBouncer (SHOW CLIENTS), sampled at the collector's rate over the full-load window"
            + (f" ({window.label()})" if window else "")
            + ". Pooler wait p95: the 95th percentile of SHOW POOLS' maxwait (the oldest waiting "
            "client's wait) over the samples. Refusals by the pooler (max_client_conn) are "
            "counted from pgbouncer.log, apart from PostgreSQL's SQLSTATE 53300.",
            muted=True,
        ),
        glance_table(experiment),
    ]
    hops = hop_bullets(experiment)
    if hops:
        blocks += [Para("The extra hop:"), Bullets(hops)]
    blocks += failure_blocks(experiment)
    blocks += [Para("Configuration, both layers:"), layers_table(experiment)]
    tips = advice(experiment)
    if tips:
        blocks += [Para("Sizing behind PgBouncer:", strong=True), Bullets(tips)]
    return blocks


# --------------------------------------------------------------------------- chart
