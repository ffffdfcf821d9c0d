"""What the report says, as a list of blocks; markdown.py and html.py only decide how it looks.

This module orders the sections (poolbench.report.sections) and owns the comparison table —
its change column and footnotes — which `poolbench compare` shares.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from poolbench import format as fmt
from poolbench.analysis.compare import ComparisonTable, Row
from poolbench.analysis.metrics import BY_NAME, METRICS
from poolbench.analysis.summary import ExperimentSummary, Summary
from poolbench.analysis.thresholds import Outcome
from poolbench.report.blocks import (
    Badge,
    Bullets,
    Cell,
    Code,
    Document,
    Heading,
    Image,
    Notice,
    NoticeKind,
    Para,
    Table,
)
from poolbench.report.pgbouncer import pgbouncer_section
from poolbench.report.sections import (
    attempts_section,
    census_section,
    claims_section,
    details_section,
    environment_section,
    events_section,
    exact_section,
    instrument_section,
    leak_section,
    limits_section,
    little_section,
    model_section,
    pool_probe_section,
    sizing_section,
    sweep_section,
    thresholds_section,
    when,
)

if TYPE_CHECKING:  # matplotlib is imported when a chart is drawn, not before
    from poolbench.report.chart_kinds import Chart


class Footnotes:
    """Numbered notes under a table: the same text gets the same number."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    def mark(self, texts: tuple[str, ...] | list[str]) -> str:
        marks = []
        for text in texts:
            if text not in self.notes:
                self.notes.append(text)
            marks.append(str(self.notes.index(text) + 1))
        return f" [{','.join(marks)}]" if marks else ""

    def block(self) -> list[Any]:
        return [Bullets([f"[{i}] {t}" for i, t in enumerate(self.notes, 1)])] if self.notes else []


def _p(row: Row) -> str:
    p = row.result.p_value
    return "" if p is None else f"p = {p:.2g}"


def change_cell(row: Row, notes: Footnotes, directed: bool = True) -> Cell:
    """The change from the two values shown, and how far it is established; a ✅/❌ badge only
    when `directed` (the bench file says which way is better for this metric)."""
    cell = _change_cell(row, notes)
    return cell if directed or not isinstance(cell, Badge) else cell.text


def directed_metrics(summary: Summary, experiment: ExperimentSummary) -> set[str]:
    """The metrics whose better direction the bench file declares for this experiment: those
    its claims name and those its thresholds (fail_if) test. Elsewhere a change has no "good"
    side (1 vs 4 workers), so it gets no ✅/❌."""
    names = {
        m for j in (experiment.claims.items if experiment.claims else []) for m in j.claim.metrics
    }
    for gate in summary.thresholds:
        if gate.experiment in (experiment.name, ""):
            names |= {m for m in BY_NAME if re.search(rf"\b{m}\b", gate.expression)}
    return names


def _change_cell(row: Row, notes: Footnotes) -> Cell:
    texts = [*row.result.footnotes, *row.result.warnings]
    if row.result.status == "untested":  # one side's interval or spread says nothing then
        texts = [t for t in row.result.footnotes if "too small for a 95 % interval" not in t]
    if row.verdict == "not measured":  # no badge, whatever the values: say why
        mark = notes.mark([f"Not measured: {row.spoiled}."])
        change = fmt.NA if row.change_pct is None else fmt.pct(row.change_pct)
        return f"{change}, not measured{mark}"
    mark = notes.mark(texts)
    change = fmt.change(row.baseline, row.variant, row.unit)  # from the values shown
    if change == fmt.NA:
        return change + mark
    good = row.verdict == "better"
    if row.result.status == "exact":
        if row.verdict == "same":
            return f"±0 (exact){mark}"
        return Badge(f"{change} (exact){mark}", "good" if good else "bad")
    noise = ", within this run's noise" if within_noise(row) else ""
    if row.within_run and row.verdict != "untested":
        tilde = "~ " if row.verdict == "no difference" else ""
        return f"{tilde}{change} (within-run {_p(row)}{noise}){mark}"
    if row.verdict in ("better", "worse"):
        return Badge(f"{change} ({_p(row)}){mark}", "good" if good else "bad")
    if row.verdict == "no difference":
        return f"~ {change} ({_p(row)}){mark}"
    return f"{change}, untested{noise}{mark}"


def glance_table(
    table: ComparisonTable,
    notes: Footnotes,
    every_metric: bool = False,
    directed: set[str] | None = None,
) -> Table:
    """The comparison's rows; badges only for `directed` metrics (None: every metric)."""

    def head(name: str, n: int) -> str:
        return name if n == 1 else f"{name} (median of {n})"

    rows = []
    for row in table.rows:
        metric = next(m for m in METRICS if m.name == row.metric)
        if not (metric.glance or every_metric) or (row.baseline is None and row.variant is None):
            continue
        rows.append(
            [
                row.label,
                row.window,
                fmt.value(row.baseline, row.unit),
                fmt.value(row.variant, row.unit),
                change_cell(row, notes, directed is None or row.metric in directed),
            ]
        )
    headers = [
        "",
        "window",
        head(table.baseline, table.n_baseline),
        head(table.variant, table.n_variant),
        "change",
    ]
    return Table(headers, rows, "llrrl")


NOISE_FACTOR = 2.0  # a single-run change within this × the run's own spread is noise


def own_spread(row: Row) -> float | None:
    """The larger relative half-width (in %) of the two windows' block medians: how much the
    figure moves within one run. None without per-block values."""
    if not row.within_run:
        return None
    spreads = [s for s in (row.result.a.spread, row.result.b.spread) if s is not None]
    return max(spreads) * 100 if spreads else None


def within_noise(row: Row) -> bool:
    """An untested single-run change no larger than NOISE_FACTOR × the run's own spread."""
    spread, change = own_spread(row), fmt.change_pct(row.baseline, row.variant, row.unit)
    return spread is not None and change is not None and abs(change) <= NOISE_FACTOR * spread


def noise_note(table: ComparisonTable) -> str:
    """How big an untested change must be to mean anything here, from what one run can know."""
    spreads = [
        f"{r.label.split(' (')[0].lower()} ±{fmt.number(own_spread(r), 1)} %"
        for r in table.rows
        if own_spread(r) is not None
    ]
    text = " How big an untested change must be to mean anything: "
    if spreads:
        text += (
            f"within this run the figures move by {', '.join(spreads)} from block to block of the "
            f"full-load window, so a change below {NOISE_FACTOR:.0f}× that is noise even inside "
            "one run (marked “within this run's noise”). Beyond it a change "
        )
    else:
        text += (
            "the full-load windows are too short for this run to measure its own spread (fewer "
            "than 5 independent blocks), and in any case a change "
        )
    return text + (
        "may still be drift between runs, which one run cannot measure: two "
        "runs of the same variant on a shared 2-core machine, 70 minutes apart, differed by 22 % "
        "in goodput and 56 % in p95 (poolbench compare, issue 22). Only --repeats measures it."
    )


def glance_note(table: ComparisonTable, directed: set[str] | None = None) -> Para:
    text = (
        "Each change is computed from the two values beside it, at the precision shown (past "
        "+1 000 % as a ratio, e.g. 38×). Exact rows are counts compared "
        "without a test. Memory is PSS/USS (summed RSS would count shared buffers once per "
        "process)."
    )
    if directed is not None:
        text += (
            " ✅/❌ mark a change only for the metrics whose better direction the bench file "
            "declares (its claims and thresholds); "
            + (
                "none here."
                if not directed
                else f"here {', '.join(f'`{m}`' for m in sorted(directed))}."
            )
        )
    if table.n_baseline == 1 or table.n_variant == 1:
        text += (
            " One repeat per variant: differences in goodput, latency and memory are untested "
            "across runs, so none carries a verdict; where shown, the within-run test over "
            "independent blocks of the full-load window only says the two windows differ beyond "
            "their own noise (~: they do not). Run with --repeats 5 to test them."
        ) + noise_note(table)
    else:
        text += (
            " Noisy rows are tested with Mann-Whitney U across repeats (α = 0.05); ~ marks no "
            "significant difference."
        )
    return Para(text, muted=True)


def largest_latency_change(table: ComparisonTable) -> Row | None:
    """The latency percentile that moved most (by the change computed from the values shown)."""
    rows = [
        r
        for m in ("p50_ms", "p95_ms", "p99_ms")
        if (r := table.row(m)) is not None
        and fmt.change_pct(r.baseline, r.variant, r.unit) is not None
    ]
    return max(
        rows, key=lambda r: abs(fmt.change_pct(r.baseline, r.variant, r.unit) or 0), default=None
    )


def _lead(experiment: ExperimentSummary, table: ComparisonTable) -> str:
    parts = []
    latency = largest_latency_change(table)
    for metric, words in (
        ("idle_connections", "connections held when idle"),
        ("postgres_pss_idle", "PostgreSQL memory (PSS, idle)"),
        ("goodput", "goodput"),
        (latency.metric if latency else "", f"latency {latency.metric[:3]}" if latency else ""),
        ("refusals", "connection attempts refused by PostgreSQL (its log)"),
        ("failed_requests", "failed requests"),
    ):
        row = table.row(metric)
        if row is None or row.baseline is None or row.variant is None:
            continue
        if metric in ("refusals", "failed_requests") and not (row.baseline or row.variant):
            continue
        text = f"{words} {fmt.value(row.baseline, row.unit)} → {fmt.value(row.variant, row.unit)}"
        change = fmt.change(row.baseline, row.variant, row.unit)
        text += f" ({change}" if change != fmt.NA else " ("
        if row.verdict == "untested" or row.within_run:
            text += ", untested)"
        elif row.verdict == "no difference":
            text += ", no significant difference)"
        else:
            text += ")"
        parts.append(text.replace(" ()", ""))
    who = f"{experiment.name}: {table.baseline} → {table.variant}"
    text = "; ".join(parts)
    return f"{who}. {text[:1].upper()}{text[1:]}." if text else f"{who}."


def experiment_section(
    experiment: ExperimentSummary,
    charts: list[Chart],
    run_dir: Path,
    primary: bool,
    directed: set[str] | None = None,
) -> list[Any]:
    blocks: list[Any] = [Heading(2, f"Experiment: {experiment.name}", opens_experiment=True)]
    intro = f"{experiment.description.rstrip()} " if experiment.description else ""
    intro += (
        f"Variants: {', '.join(v.name for v in experiment.variants)} "
        f"(baseline: {experiment.baseline})."
    )
    if primary:
        intro += f" Its comparison is “At a glance — {experiment.name}” at the top of the report."
    blocks.append(Para(intro, muted=True))
    # the primary experiment's first comparison opens the report; its others are shown here
    for table in experiment.comparisons[1 if primary else 0 :]:
        notes = Footnotes()
        blocks += [
            Heading(3, f"At a glance — {experiment.name}: {table.baseline} → {table.variant}"),
            glance_table(table, notes, directed=directed),
            *notes.block(),
            glance_note(table, directed),
        ]
    if experiment.claims is not None and not primary:
        blocks += claims_section(experiment.claims)
    blocks += events_section(experiment)
    blocks += little_section(experiment)
    blocks += instrument_section(experiment)
    blocks += limits_section(experiment)
    blocks += attempts_section(experiment)
    blocks += sizing_section(experiment)
    blocks += pgbouncer_section(experiment)
    mine = [c for c in charts if c.experiment == experiment.name]
    if mine:
        blocks.append(Heading(3, f"Charts — {experiment.name}"))
        blocks += [
            Image(
                c.path,
                c.path.relative_to(run_dir).as_posix(),
                c.alt,
                f"{c.title} — {experiment.name}",
            )
            for c in mine
        ]
    blocks += model_section(experiment)
    blocks += pool_probe_section(experiment)
    blocks += exact_section(experiment)
    blocks += leak_section(experiment)
    blocks += details_section(experiment)
    return blocks


def reproduce(command: str | None, run_dir: Path) -> str:
    """The run's own command, then the report's, on the folder the run was written to (its
    --out, wherever that was), not on a guessed results/RUN_ID."""
    where = run_dir.resolve()  # results/latest is a link that the next run moves
    if where.is_relative_to(Path.cwd()):
        where = where.relative_to(Path.cwd())
    return (command or "# run.json records no command") + (
        f"\npoolbench report {shlex.quote(where.as_posix())}   # re-analyse the recorded files"
    )


def build_document(summary: Summary, charts: list[Chart], run_dir: Path) -> Document:
    run = summary.run
    subtitle = f"poolbench report · run {run.run_id} · status {run.status or 'unknown'}"
    if run.started_at:
        subtitle += f" · {when(run.started_at)}"
    lines = summary.headlines or [summary.headline]
    title = lines[0] if len(lines) == 1 else f"poolbench run {run.run_id}: {len(lines)} experiments"
    doc = Document(title=title, subtitle=subtitle)
    add = doc.blocks.extend
    if len(lines) > 1:  # each experiment's own headline, nothing mixed across them
        add(Para(line, strong=True) for line in lines)
    primary = summary.primary()
    if primary is not None:
        doc.blocks.append(Para(_lead(*primary), strong=True))
    add(Notice(NoticeKind.WARNING, w) for w in summary.warnings)
    breached = [g for g in summary.thresholds if g.outcome == Outcome.BREACHED]
    if breached:
        add(
            Notice(
                NoticeKind.WARNING,
                f"Threshold breached ({g.experiment}): {g.expression} — {g.explanation}",
            )
            for g in breached
        )
    names = [e.name for e in summary.experiments]
    if len(names) > 1:
        doc.blocks.append(
            Para(f"Experiments in this run, each in its own section below: {', '.join(names)}.")
        )
    if primary is not None:
        experiment, table = primary
        notes = Footnotes()
        add(
            [
                Heading(2, f"At a glance — {experiment.name}: {table.baseline} → {table.variant}"),
                glance_table(table, notes, directed=directed_metrics(summary, experiment)),
                *notes.block(),
                glance_note(table, directed_metrics(summary, experiment)),
            ]
        )
        if experiment.claims is not None:
            add(claims_section(experiment.claims))
    add(thresholds_section(summary))
    for sweep in summary.sweeps:
        add(sweep_section(sweep, charts, run_dir))
    swept = {p.experiment for sweep in summary.sweeps for p in sweep.points}
    for experiment in summary.experiments:
        if experiment.name in swept:
            continue  # a point of a sweep: its figures are in the sweep's table
        is_primary = primary is not None and experiment is primary[0]
        directed = directed_metrics(summary, experiment)
        add(experiment_section(experiment, charts, run_dir, is_primary, directed))
    add(census_section(summary))
    add(environment_section(summary))
    doc.blocks.append(Heading(2, "Reproduce"))
    doc.blocks.append(Code(reproduce(run.command, run_dir)))
    return doc
