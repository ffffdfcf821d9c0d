"""Sections about the whole run: events, the pool-size sweep, thresholds, the engine census, the
environment."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from poolbench import format as fmt
from poolbench.analysis.pool_sweep import Sweep
from poolbench.analysis.summary import ExperimentSummary, Summary
from poolbench.analysis.thresholds import Outcome
from poolbench.report.blocks import (
    Badge,
    Cell,
    Heading,
    Image,
    Notice,
    NoticeKind,
    Para,
    Table,
)
from poolbench.report.sections.common import table_section, when

if TYPE_CHECKING:  # matplotlib is imported when a chart is drawn, not before
    from poolbench.report.chart_kinds import Chart


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
    return table_section(
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
