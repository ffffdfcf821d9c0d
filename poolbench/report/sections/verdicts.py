"""The sections that answer the team's question: the claims judged, and the pool sizing advice."""

from __future__ import annotations

from typing import Any

from poolbench import format as fmt
from poolbench.analysis.claims import ClaimsTable
from poolbench.analysis.summary import ExperimentSummary
from poolbench.report.blocks import (
    Badge,
    Bullets,
    Cell,
    Heading,
    Para,
    Table,
)

VERDICT_KIND = {
    "holds": "good",
    "partly": "mixed",
    "does not hold": "bad",
    "untested": "neutral",
    "not measured": "neutral",
}


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
