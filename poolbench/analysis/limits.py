"""Which limit bound a variant's connections: the server's slots, the pools' ceiling, or demand.

A peak below the configured ceiling means two opposite things. Either the load did not need
more (demand bound it: a heavier burst would open more), or the server ran out of slots and
refused the rest (the server bound it: a heavier burst would only be refused more). Which one
is read from what the server said, never guessed from the peak alone:

- **server slots** — the fewest free slots for an ordinary role reached 0 during the load, or
  the server refused connection attempts (SQLSTATE 53300: its log, or, without one, failed
  requests whose error names a refusal);
- **pool ceiling** — the measured peak reached workers × (pool_size + max_overflow), or one
  engine sat at its own ceiling in ≥ 25 % of the full-load samples (model.SATURATED_SHARE)
  while another never filled: requests waited for a connection inside the app;
- **demand** — neither: the pools opened what the load asked for, with slots to spare;
- **unknown** — no pool settings and no slot count to decide with.

The notes of the pool model (poolbench.analysis.model) that assume demand ("a heavier burst
would open more", "never filled its pools") are reworded here when the server bound it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

from poolbench import format as fmt
from poolbench.analysis.connections import ConnectionFigures
from poolbench.analysis.exact import ExactFigures
from poolbench.analysis.model import Flag, FlagLevel, PoolModel
from poolbench.analysis.typed import Json


class Bound(StrEnum):
    SERVER_SLOTS = "server slots"
    POOL_CEILING = "pool ceiling"
    DEMAND = "demand"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Limit(Json):
    bound: Bound
    reason: str
    evidence: list[str] = field(default_factory=list)  # what the server said, for server slots


def _server_evidence(
    conn: ConnectionFigures, exact: ExactFigures, refused_requests: int | None
) -> list[str]:
    evidence = []
    if conn.slots_left_min is not None and conn.slots_left_min <= 0:
        evidence.append("the fewest free slots during the load was 0")
    attempts = exact.attempts
    if attempts is not None and attempts.refused:
        evidence.append(
            f"PostgreSQL refused {fmt.count(attempts.refused)} connection attempts (its log)"
        )
    elif attempts is None and refused_requests:
        evidence.append(
            f"{fmt.count(refused_requests)} failed requests name a refusal (SQLSTATE 53300)"
        )
    return evidence


def binding_limit(
    conn: ConnectionFigures,
    model: PoolModel | None,
    exact: ExactFigures,
    refused_requests: int | None,
) -> Limit:
    """The limit that bound this variant × repeat's connections, and why, in words."""
    ceiling = model.ceiling if model is not None else None
    evidence = _server_evidence(conn, exact, refused_requests)
    if evidence:
        if ceiling is not None and conn.peak is not None and conn.peak >= ceiling:
            also = f"; the pools also reached their ceiling of {fmt.count(ceiling)}"
        else:
            of = f" of a possible {fmt.count(ceiling)}" if ceiling is not None else ""
            also = (
                f"; the pools reached {fmt.count(conn.peak)}{of} because the server had no "
                "more to give, not because the load asked for no more"
            )
        return Limit(
            Bound.SERVER_SLOTS, f"the server's slots: {' and '.join(evidence)}{also}", evidence
        )
    if conn.peak is not None and ceiling is not None and conn.peak >= ceiling:
        return Limit(
            Bound.POOL_CEILING,
            f"the pools' ceiling: the peak {fmt.count(conn.peak)} is workers × (pool_size + "
            f"max_overflow) = {fmt.count(ceiling)}, so requests waited for a connection",
        )
    saturated = [e for e in (model.engines if model is not None else []) if e.saturated]
    if saturated and conn.peak is not None and ceiling is not None:
        e = saturated[0]
        more = f" (and {len(saturated) - 1} more)" if len(saturated) > 1 else ""
        return Limit(
            Bound.POOL_CEILING,
            f"the pools' ceiling: {e.name}{more} sat at its ceiling of {fmt.count(e.ceiling)} in "
            f"{fmt.number(100 * (e.at_ceiling_share or 0.0), 0, '%')} of the full-load samples, "
            f"so requests waited for a connection, though all pools together opened "
            f"{fmt.count(conn.peak)} of a possible {fmt.count(ceiling)}",
        )
    if conn.peak is not None and ceiling is not None:
        free = (
            f", with {fmt.count(conn.slots_left_min)} slots still free"
            if conn.slots_left_min is not None
            else ""
        )
        return Limit(
            Bound.DEMAND,
            f"the load's demand: the pools opened {fmt.count(conn.peak)} of a possible "
            f"{fmt.count(ceiling)}{free}",
        )
    return Limit(Bound.UNKNOWN, "no pool settings known and the server refused nothing")


def reword_model(model: PoolModel | None, limit: Limit) -> PoolModel | None:
    """The model's notes that assume the load stopped the pools, said right when the server
    did: "a heavier burst would open more" and "never filled its pools" are false then."""
    if model is None:
        return model
    if limit.bound == Bound.POOL_CEILING:
        return _saturated_model(model)
    if limit.bound != Bound.SERVER_SLOTS:
        return model
    flags = []
    for flag in model.flags:
        if flag.code == "below_ceiling":
            flag = Flag(
                FlagLevel.WARNING,
                "server_bound",
                f"The pools reached {fmt.count(model.measured_peak)} of a possible "
                f"{fmt.count(model.ceiling)} because the server ran out of slots "
                f"({'; '.join(limit.evidence)}), not because the load asked for no more: a "
                "heavier burst would only be refused more.",
            )
        elif flag.code == "engine_not_filled":
            engine = next(e for e in model.engines if flag.message.startswith(e.name + " "))
            flag = Flag(
                FlagLevel.INFO,
                "engine_stopped_by_server",
                f"{engine.name} opened {fmt.count(engine.opened)} of {model.workers} × "
                f"{fmt.count(engine.pool_size)} before the server ran out of slots: the server's "
                "cap stopped its pools, so its idle count cannot test the configuration.",
            )
        flags.append(flag)
    return replace(model, flags=flags)


def _saturated_model(model: PoolModel) -> PoolModel:
    """Below the total ceiling with an engine saturated: a heavier burst would wait for that
    engine's connections, not open more."""
    saturated = [e.name for e in model.engines if e.saturated]
    if not saturated:
        return model
    flags = [
        Flag(
            FlagLevel.WARNING,
            "engine_saturated",
            f"The pools together reached {fmt.count(model.measured_peak)} of a possible "
            f"{fmt.count(model.ceiling)}, but {', '.join(saturated)} sat at "
            f"{'its ceiling' if len(saturated) == 1 else 'their ceilings'}: a heavier burst "
            "would wait for a connection there, not open more.",
        )
        if flag.code == "below_ceiling"
        else flag
        for flag in model.flags
    ]
    return replace(model, flags=flags)
