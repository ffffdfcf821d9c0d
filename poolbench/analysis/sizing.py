"""Right-sizing without a sweep: the pool the measured server-side demand needs.

Demand is read on PostgreSQL's side — connections in state `active`, sampled at 10 Hz — never
from connections checked out of the app's pools, which also counts the time a request keeps a
session while doing other work (that is reported as its own finding). Little's law gives the
mean demand: L = mean active connections = requests/s × database time per request. The advice
is ceil(max(active p99, L) × HEADROOM), never more than the slots the server can give the app
(max_connections − reserved − other clients), split per worker and per engine. HikariCP's rule
of thumb (2 × cores + 1 for one disk) is printed beside it. When the app's CPU is the
bottleneck (one worker near a whole core), the advice says a worker helps and connections do
not. A measured sweep (`poolbench size`) replaces the estimate with the knee of the curve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from poolbench import format as fmt
from poolbench.analysis.figures import VariantFigures
from poolbench.analysis.typed import Json

HEADROOM = 1.25
CPU_BOUND_SHARE = 0.85  # of one core per worker
HELD_FACTOR = 2.0  # checked out more than this × active: sessions held across other work


@dataclass(frozen=True)
class Demand(Json):
    variant: str
    active_mean: float | None  # Little's law L
    active_p99: float | None
    active_max: float | None
    requests_per_s: float | None
    db_time_ms: float | None  # L / requests per second
    checked_out_p99: float | None  # the app's view × workers
    app_cpu: float | None  # % of one core
    workers: int


@dataclass(frozen=True)
class Saving(Json):
    """What the advice would save against a variant's idle connections, at the marginal cost."""

    variant: str
    idle: float
    fewer_connections: float
    pss_bytes: float | None  # × the marginal PSS per backend
    pss_low: float | None
    pss_high: float | None


@dataclass(frozen=True)
class Sizing(Json):
    measured: bool
    demand: list[Demand]
    needed: float | None = None
    recommended_total: int | None = None
    usable_slots: float | None = None
    capped: bool = False
    workers: int = 1
    pool_size_per_worker: int | None = None
    per_engine: dict[str, int] = field(default_factory=dict)
    cores: int | None = None
    hikari: int | None = None
    findings: list[str] = field(default_factory=list)
    savings: list[Saving] = field(default_factory=list)
    waits: list[str] = field(default_factory=list)  # the pool probe's evidence: wait_evidence()


def _demand(f: VariantFigures) -> Demand:
    c, t = f.connections, f.traffic
    rate = (t.requests / t.window.seconds) if t.requests is not None and t.window else None
    out = c.checked_out.p99 * f.workers if c.checked_out.p99 is not None else None
    return Demand(
        variant=f.variant, active_mean=c.active.mean, active_p99=c.active.p99,
        active_max=c.active.max, requests_per_s=rate,
        db_time_ms=c.active.mean / rate * 1000 if c.active.mean is not None and rate else None,
        checked_out_p99=out, app_cpu=f.cpu.full_load.get("app"), workers=f.workers,
    )  # fmt: skip


def _split(total: int, f: VariantFigures) -> dict[str, int]:
    """`total` connections per worker over the variant's engines, in proportion to each one's
    active connections (at least 1 each; largest remainders, so the parts add up to `total`)."""
    names = [e.name for e in (f.model.engines if f.model else [])]
    if len(names) <= 1:
        return dict.fromkeys(names, total)
    weights = {}
    for name in names:
        engine = f.connections.engine(name)
        weights[name] = (engine.active_max or 0.0) + 0.5 if engine else 0.5
    scale = sum(weights.values())
    total = max(total, len(names))
    share = {n: max(1.0, total * w / scale) for n, w in weights.items()}
    parts = {n: int(v) for n, v in share.items()}
    for name in sorted(names, key=lambda n: share[n] - parts[n], reverse=True):
        if sum(parts.values()) >= total:
            break
        parts[name] += 1
    return parts


def right_sizing(variants: list[VariantFigures], cores: int | None) -> Sizing:
    demand = [_demand(f) for f in variants]
    measured = [d for d in demand if d.active_p99 is not None]
    if not measured:
        return Sizing(False, demand)
    needed = max(max(d.active_p99 or 0, d.active_mean or 0) for d in measured)
    want = max(1, math.ceil(needed * HEADROOM - 1e-9))
    usable = min(
        (f.connections.usable_slots for f in variants if f.connections.usable_slots), default=None
    )
    total = min(want, int(usable)) if usable is not None else want
    last = variants[-1]
    workers = max(f.workers for f in variants)
    per_worker = max(1, math.ceil(total / workers))
    findings = _findings(demand, cores, total, usable, want)
    findings += _capped(variants)
    return Sizing(
        measured=True, demand=demand, needed=needed, recommended_total=total,
        usable_slots=usable, capped=total < want, workers=workers,
        pool_size_per_worker=per_worker, per_engine=_split(per_worker, last), cores=cores,
        hikari=2 * cores + 1 if cores else None, findings=findings,
        savings=[x for f in variants if (x := _saving(f, total)) is not None],
    )  # fmt: skip


def _saving(f: VariantFigures, total: int) -> Saving | None:
    idle = f.connections.idle
    if idle is None or idle <= total:
        return None
    fewer = idle - total
    slope = f.memory.pss_per_backend
    return Saving(
        variant=f.variant, idle=idle, fewer_connections=fewer,
        pss_bytes=fewer * slope.value if slope else None,
        pss_low=fewer * slope.low if slope else None,
        pss_high=fewer * slope.high if slope else None,
    )  # fmt: skip


def _capped(variants: list[VariantFigures]) -> list[str]:
    """Demand measured through a full pool, or with refusals, is a lower bound."""
    out = []
    for f in variants:
        full = [
            e.name for e in (f.model.engines if f.model else []) if e.measured_peak >= e.ceiling
        ]
        refused = f.traffic.refusals or 0
        if full or refused:
            why = (
                f"{', '.join(full)} reached {'its' if len(full) == 1 else 'their'} ceiling"
                if full
                else ""
            ) + (
                f"{'; ' if full else ''}{fmt.count(refused)} requests were refused"
                if refused
                else ""
            )
            out.append(
                f"{f.variant}: {why}, so the active connections measured are capped by the pools "
                "or the server: its demand may be higher, and the advice from it is a lower bound."
            )
    return out


def _findings(demand: list[Demand], cores, total, usable, want) -> list[str]:
    out = []
    if usable is not None and want > usable:
        out.append(
            f"The demand would want {want} connections but the server can give this app only "
            f"{fmt.count(usable)} (max_connections − reserved slots − other clients): the "
            f"advice is capped there."
        )
    for d in demand:
        if d.app_cpu is not None and d.app_cpu >= CPU_BOUND_SHARE * 100 * d.workers:
            out.append(
                f"{d.variant}: the app's CPU is the bottleneck ({fmt.percent_of_core(d.app_cpu)} "
                f"with {d.workers} worker(s)): another worker would help, more connections would not."
            )
        if (
            d.checked_out_p99
            and d.active_p99 is not None
            and d.checked_out_p99 > HELD_FACTOR * max(d.active_p99, 1)
        ):
            out.append(
                f"{d.variant}: the app keeps connections checked out far longer than PostgreSQL "
                f"works on them (p99 {fmt.count(d.checked_out_p99)} checked out, "
                f"{fmt.count(d.active_p99)} active): sessions are held across non-database work. "
                "That is not demand for more connections; releasing sessions sooner is the fix."
            )
    if cores and total > 2 * cores + 1:
        out.append(
            f"More than HikariCP's 2 × cores + 1 = {2 * cores + 1}: beyond about that many active "
            "queries the server's cores are the limit, not the pool."
        )
    return out


def wait_evidence(variants: list[VariantFigures]) -> list[str]:
    """What the pool probe saw inside each bounded pool (poolbench/analysis/pool_probe.py):
    checkouts that queued at p95 mean the pool is not over-provisioned; a pool that never had
    more than k checked out and never queued can shrink to k plus headroom."""
    return [
        f"{f.variant} {e.site}: {e.advice}"
        for f in variants
        if f.probe is not None
        for e in f.probe.engines
        if e.wait.n and e.ceiling is not None
    ]
