"""Right-sizing without a sweep: one recommendation per variant, from what bound it.

Demand is read on PostgreSQL's side — connections in state `active`, sampled at 10 Hz — never
from connections checked out of the app's pools, which also counts the time a request keeps a
session while doing other work (that is reported as its own finding). Little's law gives the
mean demand: L = mean active connections = requests/s × database time per request.

Each variant gets exactly one recommendation, and it names what bound the variant first:

- the server's slots (requests were refused): fewer connections in total is the first change;
- the pool (it sat at its ceiling in ≥ 25 % of the full-load samples: model.SATURATED_SHARE):
  the demand measured through a full pool is a lower bound, so a smaller pool is never
  advised — only a sweep (`poolbench size`) can show a smaller one is as fast; when the app's
  CPU is also near its cores, that CPU is the bottleneck and another worker is the first change;
- sessions held (a saturated pool whose connections sat idle in transaction far more than
  they were active): requests keep their sessions across non-database work, so releasing them
  sooner is the first change, not a larger pool;
- the app's CPU (one worker near a whole core): another worker helps, connections do not;
- else the demand: pool_size per worker = ceil(max(active p99, L) × HEADROOM / workers).

The total is always pool_size per worker × workers (never more than the slots the server can
give the app), so every line of the advice follows from the one before. HikariCP's rule of
thumb (2 × cores + 1 for one disk) is printed beside it as context, not as a cap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import StrEnum

from poolbench import format as fmt
from poolbench.analysis.figures import VariantFigures
from poolbench.analysis.typed import Json

HEADROOM = 1.25
CPU_BOUND_SHARE = 0.85  # of one core per worker
HELD_FACTOR = 2.0  # checked out more than this × active: sessions held across other work


class Bound(StrEnum):
    """What limited a variant first (closed set: the advice's first change follows from it)."""

    DEMAND = "demand"
    POOL = "pool ceiling"
    APP_CPU = "app CPU"
    HELD = "sessions held"
    SERVER_SLOTS = "server slots"


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
    idle_in_transaction_mean: float | None = None  # PostgreSQL's view, full load


@dataclass(frozen=True)
class Saving(Json):
    """What the advice would save against a variant's idle connections, at the marginal cost
    of the slope named in `slope_from` (the variant's own fit)."""

    variant: str
    idle: float
    fewer_connections: float
    pss_bytes: float | None  # × the marginal PSS per backend
    pss_low: float | None
    pss_high: float | None
    slope_from: str = ""


@dataclass(frozen=True)
class Advice(Json):
    """The one recommendation for one variant. recommended_total = per worker × workers."""

    variant: str
    demand: Demand
    bound: Bound
    needed: float | None  # max(active p99, L)
    workers: int
    pool_size_per_worker: int
    recommended_total: int
    per_engine: dict[str, int]
    current_per_worker: float | None  # Σ (pool_size + max_overflow) of its engines
    saturated: dict[str, float] = field(default_factory=dict)  # engine → share at its ceiling
    kept: bool = False  # a smaller pool was not advised because the pool saturated
    capped: bool = False  # by the slots the server can give
    usable_slots: float | None = None
    action: str = ""  # the recommendation, in words
    findings: list[str] = field(default_factory=list)
    saving: Saving | None = None


@dataclass(frozen=True)
class Sizing(Json):
    measured: bool
    advice: list[Advice] = field(default_factory=list)
    cores: int | None = None
    hikari: int | None = None
    findings: list[str] = field(default_factory=list)  # about the experiment as a whole
    waits: list[str] = field(default_factory=list)  # the pool probe's evidence: wait_evidence()


def _demand(f: VariantFigures) -> Demand:
    c, t = f.connections, f.traffic
    rate = (t.requests / t.window.seconds) if t.requests is not None and t.window else None
    out = c.checked_out.p99 * f.workers if c.checked_out.p99 is not None else None
    return Demand(
        variant=f.variant,
        active_mean=c.active.mean,
        active_p99=c.active.p99,
        active_max=c.active.max,
        requests_per_s=rate,
        db_time_ms=c.active.mean / rate * 1000 if c.active.mean is not None and rate else None,
        checked_out_p99=out,
        app_cpu=f.cpu.full_load.get("app"),
        workers=f.workers,
        idle_in_transaction_mean=c.states_full_load.get("idle in transaction"),
    )


def _split(total: int, f: VariantFigures) -> dict[str, int]:
    """`total` connections per worker over the variant's engines: 1 each, the rest in proportion
    to each one's active connections (largest remainders), so the parts add up to `total`
    (which the caller makes at least the number of engines)."""
    names = [e.name for e in (f.model.engines if f.model else [])]
    if len(names) <= 1:
        return dict.fromkeys(names, total)
    weights = {}
    for name in names:
        engine = f.connections.engine(name)
        weights[name] = (engine.active_max or 0.0) + 0.5 if engine else 0.5
    scale = sum(weights.values())
    rest = max(0, total - len(names))
    share = {n: rest * w / scale for n, w in weights.items()}
    parts = {n: 1 + int(v) for n, v in share.items()}
    for name in sorted(names, key=lambda n: share[n] - int(share[n]), reverse=True):
        if sum(parts.values()) >= max(total, len(names)):
            break
        parts[name] += 1
    return parts


def _kept(f: VariantFigures, saturated: dict[str, float]) -> dict[str, int]:
    """Per worker: a saturated engine keeps its ceiling (pool_size + max_overflow as configured),
    any other one the most it held (at least 1)."""
    out: dict[str, int] = {}
    if f.model is None:
        return out
    workers = max(1, f.model.workers)
    for e in f.model.engines:
        per = e.ceiling if e.name in saturated else max(1.0, e.measured_peak)
        out[e.name] = max(1, math.ceil(per / workers - 1e-9))
    return out


def _saturated(f: VariantFigures) -> dict[str, float]:
    engines = f.model.engines if f.model else []
    return {e.name: e.at_ceiling_share or 0.0 for e in engines if e.saturated}


def _saturation(a: Advice, f: VariantFigures) -> str:
    """Which pools sat at their ceiling, and for how much of the full-load window."""
    shares = [round(100 * v) for v in a.saturated.values()]
    span = f"{min(shares)}" if min(shares) == max(shares) else f"{min(shares)}–{max(shares)}"
    names = list(a.saturated)
    total = len(f.model.engines) if f.model else len(names)
    who = (
        names[0] if len(names) == 1 else f"{len(names)} of its {total} engines ({', '.join(names)})"
    )
    verb = "sat at its ceiling" if len(names) == 1 else "sat at their ceilings"
    return f"{who} {verb} in {span} % of the full-load samples"


def _bound(f: VariantFigures, d: Demand, saturated: dict[str, float]) -> Bound:
    if (f.traffic.refusals or 0) > 0:
        return Bound.SERVER_SLOTS
    cpu_bound = d.app_cpu is not None and d.app_cpu >= CPU_BOUND_SHARE * 100 * d.workers
    if cpu_bound:
        return Bound.APP_CPU
    if saturated and _held(d):
        return Bound.HELD
    return Bound.POOL if saturated else Bound.DEMAND


def _held(d: Demand) -> bool:
    """Connections idle in transaction far more than active: sessions held across other work."""
    held = d.idle_in_transaction_mean or 0.0
    return held > HELD_FACTOR * max(d.active_mean or 0.0, 1.0)


def advise(f: VariantFigures, cores: int | None) -> Advice | None:
    """The one recommendation for a variant, or None when active connections were not sampled."""
    d = _demand(f)
    if d.active_p99 is None:
        return None
    needed = max(d.active_p99 or 0.0, d.active_mean or 0.0)
    workers = max(1, f.workers)
    engines = len(f.model.engines) if f.model else 1
    per_worker = max(engines, math.ceil(needed * HEADROOM / workers - 1e-9))
    saturated = _saturated(f)
    bound = _bound(f, d, saturated)
    model = f.model
    current = (
        model.ceiling / model.workers
        if model is not None and model.ceiling is not None and model.workers
        else None
    )
    keep = _kept(f, saturated)
    kept = bool(saturated) and bound is not Bound.SERVER_SLOTS and per_worker < sum(keep.values())
    if kept:
        per_worker = sum(keep.values())
    usable = f.connections.usable_slots
    capped = False
    if usable is not None and per_worker * workers > usable:
        capped, per_worker = True, max(1, int(usable // workers))
    advice = Advice(
        variant=f.variant,
        demand=d,
        bound=bound,
        needed=needed,
        workers=workers,
        pool_size_per_worker=per_worker,
        recommended_total=per_worker * workers,
        per_engine=keep if kept else _split(per_worker, f),
        current_per_worker=current,
        saturated=saturated,
        kept=kept,
        capped=capped,
        usable_slots=usable,
    )
    return _worded(advice, f, cores)


def _worded(a: Advice, f: VariantFigures, cores: int | None) -> Advice:
    return replace(
        a,
        action=_action(a, f),
        findings=_findings(a, cores),
        saving=_saving(f, a.recommended_total),
    )


def _sizes(a: Advice, f: VariantFigures) -> str:
    split = ", ".join(f"{name} {n}" for name, n in a.per_engine.items())
    per = f"pool_size {a.pool_size_per_worker} per worker"
    if a.kept:
        per = f"{a.pool_size_per_worker} per worker ({_kept_parts(a, f)})"
        split = ""
    if len(a.per_engine) > 1 and split:
        per += f" (split over its engines: {split})"
    return f"{a.recommended_total} connections in total — {per} × {a.workers} worker(s)"


def _kept_parts(a: Advice, f: VariantFigures) -> str:
    """The kept sizes in words, engines with the same settings grouped."""
    engines = {e.name: e for e in (f.model.engines if f.model else [])}
    groups: dict[str, list[str]] = {}
    for name, n in a.per_engine.items():
        e = engines.get(name)
        if name in a.saturated and e is not None:
            how = (
                f"{n} (pool_size {fmt.count(e.pool_size)} + max_overflow "
                f"{fmt.count(e.max_overflow)}, kept)"
            )
        else:
            how = f"{n} (the most it held)"
        groups.setdefault(how, []).append(name)
    return "; ".join(
        f"{names[0]} {how}" if len(names) == 1 else f"{', '.join(names)}: {how} each"
        for how, names in groups.items()
    )


def _refused(f: VariantFigures) -> str:
    """What the server refused, as its log counts it (connection attempts), else the requests
    that failed on a refusal (no log: a server of the user's)."""
    attempts = f.exact.attempts
    if attempts is not None:
        return f"PostgreSQL refused {fmt.count(attempts.refused)} connection attempts (its log)"
    return f"{fmt.count(f.traffic.refusals)} requests failed on a refusal (no server log)"


def _action(a: Advice, f: VariantFigures) -> str:
    d = a.demand
    cpu = f"{fmt.percent_of_core(d.app_cpu)} with {a.workers} worker(s)"
    slots = f", within the {fmt.count(a.usable_slots)} slots the server can give this app"
    cap = slots if a.capped else ""
    if a.bound is Bound.SERVER_SLOTS:
        return (
            f"{_sizes(a, f)}, max_overflow 0{cap}. The server's slots bound this variant "
            f"({_refused(f)}): fewer connections in total, not more, is the first change."
        )
    if a.saturated:
        keep = "Keep" if a.kept else "At least"
        text = (
            f"{keep} {_sizes(a, f)}{cap}. {_saturation(a, f)}, "
            f"so the demand measured through {'it' if len(a.saturated) == 1 else 'them'} is a "
            "lower bound and a smaller pool is not "
            "advised without a sweep (`poolbench size`) showing it is as fast."
        )
        if a.bound is Bound.APP_CPU:
            return text + (
                f" The app's CPU is the bottleneck ({cpu}): another worker is the first change, "
                "then measure again; more connections would not help."
            )
        if a.bound is Bound.HELD:
            return text + (
                f" Its connections sat idle in transaction (mean "
                f"{fmt.number(d.idle_in_transaction_mean, 1)}) while "
                f"{fmt.number(d.active_mean, 1)} were active: requests hold their sessions across "
                "non-database work, so releasing them sooner is the first change, "
                "not a larger pool."
            )
        return text + " The pool is the limit: a sweep of larger pools shows whether more help."
    text = (
        f"{_sizes(a, f)}, max_overflow 0{cap}: a demand of {fmt.count(a.needed)} active "
        "connections plus 25 % headroom."
    )
    if a.bound is Bound.APP_CPU:
        text += (
            f" The app's CPU is the bottleneck ({cpu}): another worker is the first change; "
            "more connections would not help."
        )
    return text


def _saving(f: VariantFigures, total: int) -> Saving | None:
    idle = f.connections.idle
    if idle is None or idle <= total:
        return None
    fewer = idle - total
    slope = f.memory.pss_per_backend
    return Saving(
        variant=f.variant,
        idle=idle,
        fewer_connections=fewer,
        pss_bytes=fewer * slope.value if slope else None,
        pss_low=fewer * slope.low if slope and slope.low is not None else None,
        pss_high=fewer * slope.high if slope and slope.high is not None else None,
        slope_from=f"{f.variant}'s own marginal PSS per backend" if slope else "",
    )


def _findings(a: Advice, cores: int | None) -> list[str]:
    out = []
    d = a.demand
    if a.capped:
        out.append(
            f"The demand would want more than the {fmt.count(a.usable_slots)} connections the "
            "server can give this app (max_connections − reserved slots − other clients): the "
            "advice is capped there."
        )
    if (
        d.checked_out_p99
        and d.active_p99 is not None
        and d.checked_out_p99 > HELD_FACTOR * max(d.active_p99, 1)
    ):
        out.append(
            f"The app keeps connections checked out far longer than PostgreSQL works on them "
            f"(p99 {fmt.count(d.checked_out_p99)} checked out, {fmt.count(d.active_p99)} "
            "active): sessions are held across non-database work. That is not demand for more "
            "connections; releasing sessions sooner is the fix."
        )
    hikari = 2 * cores + 1 if cores else None
    if hikari and a.recommended_total > hikari:
        out.append(
            f"HikariCP's rule of thumb for {cores} cores is {hikari} (2 × cores + 1); this advice "
            f"is above it because {fmt.count(d.active_p99)} queries were active at once (p99)"
            + (" or because the pool saturated" if a.kept else "")
            + ". Past about that many active queries the server's cores may be what limits, "
            "which only a sweep can show."
        )
    return out


def right_sizing(variants: list[VariantFigures], cores: int | None) -> Sizing:
    advice = [a for f in variants if (a := advise(f, cores)) is not None]
    return Sizing(
        measured=bool(advice),
        advice=advice,
        cores=cores,
        hikari=2 * cores + 1 if cores else None,
        findings=_slopes(variants),
    )


def _slopes(variants: list[VariantFigures]) -> list[str]:
    """Say so when the variants' marginal costs per backend disagree (disjoint intervals)."""
    slopes = [(f.variant, f.memory.pss_per_backend) for f in variants if f.memory.pss_per_backend]
    if len(slopes) < 2:
        return []
    bounds = [(s.low, s.high) for _, s in slopes if s.low is not None and s.high is not None]
    disjoint = any(ah < bl or bh < al for al, ah in bounds for bl, bh in bounds)
    if not disjoint:
        return []
    parts = ", ".join(
        f"{name} {fmt.mib(s.value)} ({fmt.mib(s.low)} … {fmt.mib(s.high)})" for name, s in slopes
    )
    return [
        f"The marginal PSS per backend differs between variants ({parts}): each saving uses its "
        "own variant's slope, and none is a property of PostgreSQL alone."
    ]


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
