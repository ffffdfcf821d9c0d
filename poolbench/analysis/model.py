"""The pool model: what the configuration alone predicts, beside what was measured.

Predictions come from configuration only — the engines and pool settings in variant.json (the
census of the app, or the bench file's declaration for a command variant) and the declared
number of worker processes — never from the measurement, so a match is evidence:

    ceiling = workers × Σ (pool_size + max_overflow)        (connections the pools can open)
    idle    = workers × Σ pool_size                          (what full pools keep when idle)

A pool keeps min(pool_size, connections it opened) when idle, so the idle prediction can only be
checked for an engine whose pools filled (opened at least workers × pool_size); for the others
the report says so instead of calling a trivially equal number a match. An engine named
`untagged` stands for the connections of an app that sets no application_name: the collector
names them `untagged:<process>:<pid>`, one name per client process; the series merge them into
one `untagged` engine (poolbench.analysis.series), and the per-process detail measures how
many processes held connections.

When the idle phase never became idle (a backlog still being served), its count tests nothing
and no configuration is blamed for it (poolbench.analysis.backlog).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import pandas as pd

from poolbench.analysis.connections import ConnectionFigures
from poolbench.analysis.pool_probe import ProbeFigures
from poolbench.analysis.typed import Json, num
from poolbench.format import count
from poolbench.results.names import UNTAGGED
from poolbench.results.record import EngineEntry, VariantEntry


class FlagLevel(StrEnum):
    """How much a flag matters: the report shows a warning as a warning notice."""

    INFO = "info"
    WARNING = "warning"


@dataclass(frozen=True)
class Flag(Json):
    level: FlagLevel
    code: str
    message: str


SATURATED_SHARE = 0.25  # of full-load samples at an engine's ceiling: its pool bound the load


@dataclass(frozen=True)
class EngineModel(Json):
    name: str
    pool_size: float
    max_overflow: float
    ceiling: float  # workers × (pool_size + max_overflow)
    idle: float  # workers × pool_size
    members: list[str]  # application names measured as this engine
    measured_peak: float
    measured_idle: float | None
    opened: float  # the most it held before the idle phase
    filled: bool  # opened ≥ workers × pool_size: the idle prediction can be checked
    at_ceiling_share: float | None = None  # of full-load samples at the ceiling (saturation)

    @property
    def saturated(self) -> bool:
        """At its ceiling in at least SATURATED_SHARE of the full-load samples."""
        return self.at_ceiling_share is not None and self.at_ceiling_share >= SATURATED_SHARE


@dataclass(frozen=True)
class PoolModel(Json):
    workers: int  # declared
    measured_processes: int | None  # client processes seen (untagged connections only)
    engines: list[EngineModel]
    unlisted: dict[str, float]  # application names outside the model → their peak
    ceiling: float | None
    idle: float | None
    measured_peak: float | None
    measured_idle: float | None
    flags: list[Flag] = field(default_factory=list)
    # Behind PgBouncer: `ceiling` is the pooler's server ceiling (default_pool_size + reserve
    # per database/user pair, what PostgreSQL can see); the app's pools, client connections
    # to the pooler, can open `app_ceiling`.
    app_ceiling: float | None = None
    pooler: str | None = None  # e.g. "PgBouncer 1.18.0, transaction mode"

    @property
    def idle_checkable(self) -> bool:
        return bool(self.engines) and all(e.filled for e in self.engines)


def _members(name: str, conn: ConnectionFigures, probe_named: frozenset[str]) -> list[str]:
    """The application names measured as a declared engine; `untagged` also takes the names
    the pool probe gave an app's unnamed engines (their creation sites)."""
    if name == UNTAGGED:
        return [
            e.name
            for e in conn.engines
            if e.name == UNTAGGED or e.name.startswith(UNTAGGED + ":") or e.name in probe_named
        ]
    return [name] if conn.engine(name) else []


def _sum(conn: ConnectionFigures, names: list[str], attr: str) -> float:
    return float(sum(getattr(conn.engine(n), attr) or 0.0 for n in names))


def _processes(entry: VariantEntry, conn: ConnectionFigures) -> int | None:
    """Processes of the app that held connections at once: measured from its process tree
    (variant.json `app_processes`), else the client pids of its untagged connections."""
    measured = entry.app_processes_max
    if measured is not None and measured > 0:
        return measured
    pids = {p.pid for p in conn.processes if (p.peak or 0) > 0}
    return len(pids) or None


def ceiling(workers: float, pool_size: float, max_overflow: float) -> float:
    """The most connections one engine can open: workers × (pool_size + max_overflow). The one
    home of the formula: the preflight's check (run/stack.py) and the model both use it."""
    return workers * (pool_size + max_overflow)


def _at_ceiling(full_load: pd.DataFrame | None, names: list[str], ceiling: float) -> float | None:
    """Share of the full-load samples in which the engine held its ceiling (saturated)."""
    if full_load is None or full_load.empty or not names or ceiling <= 0:
        return None
    held = full_load.reindex(columns=names, fill_value=0.0).sum(axis=1)
    return float((held >= ceiling).mean())


def pool_model(
    entry: VariantEntry,
    conn: ConnectionFigures,
    probe: ProbeFigures | None = None,
    full_load: pd.DataFrame | None = None,
    idle_note: str = "",
) -> PoolModel | None:
    """The model of one variant × repeat, or None when no pool settings are known.

    With the pool probe's figures, an app that declares nothing is modelled from the pools
    the probe measured, and a declaration that disagrees with them is flagged. `full_load`:
    connections per engine over the full-load window (for saturation); `idle_note`: why idle
    was not reached, if it was not."""
    listed = list(entry.engines)
    if not listed and probe is not None:
        listed = probed_engines(probe)
    probe_named = frozenset(
        e.application_name
        for e in (probe.engines if probe else [])
        if e.name_source == "probe" and e.application_name is not None
    )
    workers = entry.workers or 1
    engines = []
    for e in listed:
        pool_size, overflow = e.pool_size, e.max_overflow
        if pool_size is None:
            continue
        names = _members(e.name, conn, probe_named)
        opened = _sum(conn, names, "peak_before_idle")
        idle_values = [
            idle for n in names if (found := conn.engine(n)) and (idle := found.idle) is not None
        ]
        engines.append(
            EngineModel(
                name=e.name,
                pool_size=pool_size,
                max_overflow=overflow,
                ceiling=ceiling(workers, pool_size, overflow),
                idle=workers * pool_size,
                members=names,
                measured_peak=_sum(conn, names, "peak"),
                measured_idle=float(sum(idle_values)) if idle_values else None,
                opened=opened,
                filled=opened >= workers * pool_size,
                at_ceiling_share=_at_ceiling(full_load, names, workers * (pool_size + overflow)),
            )
        )
    if not engines:
        return None
    modelled = {n for e in engines for n in e.members}
    unlisted = {
        e.name: e.peak or 0.0 for e in conn.engines if e.name not in modelled and (e.peak or 0) > 0
    }
    bouncer = entry.pgbouncer
    server_ceiling = (
        float(bouncer.server_ceiling) if bouncer and bouncer.server_ceiling is not None else None
    )
    app_ceiling = sum(e.ceiling for e in engines)
    model = PoolModel(
        workers=workers,
        measured_processes=_processes(entry, conn),
        engines=engines,
        unlisted=unlisted,
        ceiling=server_ceiling if server_ceiling is not None else app_ceiling,
        idle=sum(e.idle for e in engines),
        measured_peak=conn.peak,
        measured_idle=conn.idle,
        app_ceiling=app_ceiling if server_ceiling is not None else None,
        pooler=f"PgBouncer {bouncer.version}, {bouncer.pool_mode} mode" if bouncer else None,
    )
    if idle_note:
        model.flags.append(
            Flag(FlagLevel.WARNING, "idle_not_reached", idle_note[0].upper() + idle_note[1:] + ".")
        )
    model.flags.extend(model_flags(model))
    if probe is not None:
        model.flags.extend(declaration_flags(listed, probe, probe_named))
    return model


def probed_engines(probe: ProbeFigures) -> list[EngineEntry]:
    """The engines the probe measured, as a declaration would list them (bounded pools)."""
    return [
        EngineEntry(
            e.application_name or e.site, num(e.pool_size), num(e.max_overflow) or 0.0, "probe"
        )
        for e in probe.engines
        if e.ceiling is not None and e.pool_class != "StaticPool"
    ]


def declaration_flags(
    listed: list[EngineEntry], probe: ProbeFigures, probe_named: frozenset[str]
) -> list[Flag]:
    """A declared engine whose sizes differ from what the probe measured in the app."""
    flags = []
    for declared in listed:
        if declared.source == "probe":
            continue
        name = declared.name
        for e in probe.engines:
            matches = e.application_name == name or (
                name == UNTAGGED and e.application_name in probe_named
            )
            sizes = (declared.pool_size, declared.max_overflow)
            if matches and e.ceiling is not None and sizes != (e.pool_size, e.max_overflow):
                flags.append(
                    Flag(
                        FlagLevel.WARNING,
                        "declaration_mismatch",
                        f"{name} is declared with pool_size {count(sizes[0])}, max_overflow "
                        f"{count(sizes[1])}, but the probe measured {e.pool_size} + "
                        f"{e.max_overflow} at {e.site}: the model uses the declaration; fix it, "
                        "or drop it and let the probe's figures stand.",
                    )
                )
    return flags


def model_flags(model: PoolModel) -> list[Flag]:
    """What the comparison of model and measurement says, each in words."""
    flags: list[Flag] = []

    def flag(level: FlagLevel, code: str, message: str) -> None:
        flags.append(Flag(level, code, message))

    if model.pooler is not None:  # the app's pools are the pooler's clients, not backends
        return pooler_flags(model)

    if model.measured_processes is not None and model.measured_processes != model.workers:
        flag(
            FlagLevel.WARNING,
            "workers_mismatch",
            f"{model.measured_processes} client processes held connections, but {model.workers} "
            "worker(s) are declared: the model multiplies by the declared number, so fix the "
            "declaration (workers) for its prediction to mean anything.",
        )
    flags.extend(engine_flags(model))
    checked = [e for e in model.engines if e.filled and e.measured_idle is not None]
    if checked and all(e.measured_idle == e.idle for e in checked):
        flag(
            FlagLevel.INFO,
            "idle_matches",
            f"Every pool that filled keeps exactly workers × pool_size when idle "
            f"({', '.join(f'{e.name} {count(e.idle)}' for e in checked)}): pools have no idle "
            "reaper.",
        )
    peak, ceiling = model.measured_peak, model.ceiling
    if peak is not None and ceiling is not None:
        if peak > ceiling:
            extra = ", ".join(f"{n} {count(v)}" for n, v in model.unlisted.items()) or "none seen"
            flag(
                FlagLevel.WARNING,
                "above_ceiling",
                f"Measured peak {count(peak)} exceeds the ceiling {count(ceiling)}: connections "
                f"came from outside the modelled pools (other application names: {extra}).",
            )
        elif peak < ceiling:
            flag(
                FlagLevel.INFO,
                "below_ceiling",
                f"The load reached {count(peak)} of a possible {count(ceiling)}: a heavier burst "
                "would open more.",
            )
        else:
            flag(
                FlagLevel.INFO,
                "at_ceiling",
                f"Peak {count(peak)} is the ceiling: every pool was exhausted, so requests queued "
                "for a connection.",
            )
    if model.unlisted and not (peak is not None and ceiling is not None and peak > ceiling):
        flag(
            FlagLevel.INFO,
            "unlisted",
            "Connections from application names outside the model: "
            + ", ".join(f"{n} (peak {count(v)})" for n, v in model.unlisted.items())
            + " — short-lived engines (e.g. per-call health checks) open and close them.",
        )
    return flags


def engine_flags(model: PoolModel) -> list[Flag]:
    """Each engine's peak against its ceiling, and its idle count against its full pools."""
    flags: list[Flag] = []

    def flag(level: FlagLevel, code: str, message: str) -> None:
        flags.append(Flag(level, code, message))

    for e in model.engines:
        if e.measured_peak > e.ceiling:
            flag(
                FlagLevel.WARNING,
                "engine_above_ceiling",
                f"{e.name} held {count(e.measured_peak)} connections, above its {model.workers} × "
                f"({count(e.pool_size)} + {count(e.max_overflow)}) = {count(e.ceiling)}: more "
                "processes use this name than declared, or several engines share it.",
            )
        if not e.filled:
            flag(
                FlagLevel.INFO,
                "engine_not_filled",
                f"{e.name} never filled its pools (it opened {count(e.opened)} of "
                f"{model.workers} × {count(e.pool_size)}): it keeps what it opened, so its idle "
                "count cannot test the configuration.",
            )
        elif e.measured_idle is not None and e.measured_idle != e.idle:
            flag(
                FlagLevel.WARNING,
                "idle_mismatch",
                f"{e.name} keeps {count(e.measured_idle)} connections when idle, not the "
                f"{count(e.idle)} its full pools should keep (pool_recycle, a failed pre-ping, "
                "a disposed engine, or sessions never returned).",
            )
    return flags


def pooler_flags(model: PoolModel) -> list[Flag]:
    """Behind a pooler: PostgreSQL's count against the pooler's server ceiling, not the app's
    pools (their application names on server connections are whichever client last set one)."""
    peak, ceiling = model.measured_peak, model.ceiling
    app = f"; the app's pools could open {count(model.app_ceiling)} client connections to it"
    flags = [
        Flag(
            FlagLevel.INFO,
            "pooler",
            f"{model.pooler} between the app and PostgreSQL: PostgreSQL can see at most "
            f"default_pool_size (+ reserve_pool_size) = {count(ceiling)} connections from the "
            f"app{app if model.app_ceiling is not None else ''}.",
        )
    ]
    if peak is not None and ceiling is not None and peak > ceiling:
        flags.append(
            Flag(
                FlagLevel.WARNING,
                "above_pooler_ceiling",
                f"Measured peak {count(peak)} exceeds the pooler's ceiling {count(ceiling)}: "
                "connections reached PostgreSQL around the pooler.",
            )
        )
    return flags
