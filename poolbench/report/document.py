"""What the report says, as a list of blocks; markdown.py and html.py only decide how it looks.

This module orders the sections (poolbench.report.sections) and owns the comparison table —
its change column and footnotes — which `poolbench compare` shares.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from poolbench import format as fmt
from poolbench.analysis.compare import ComparisonTable, Row
from poolbench.analysis.metrics import METRICS
from poolbench.analysis.summary import ExperimentSummary, Summary
from poolbench.report.blocks import (
    Badge,
    Bullets,
    Cell,
    Code,
    Document,
    Heading,
    Image,
    Notice,
    Para,
    Table,
)
from poolbench.report.charts import Chart
from poolbench.report.sections import (
    census_section,
    claims_section,
    details_section,
    environment_section,
    events_section,
    exact_section,
    instrument_section,
    leak_section,
    little_section,
    model_section,
    pool_probe_section,
    sizing_section,
    sweep_section,
    thresholds_section,
    when,
)


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


def change_cell(row: Row, notes: Footnotes) -> Cell:
    """The change from the two values shown, and how far it is established."""
    texts = [*row.result.footnotes, *row.result.warnings]
    if row.result.status == "untested":  # one side's interval or spread says nothing then
        texts = [t for t in row.result.footnotes if "too small for a 95 % interval" not in t]
    mark = notes.mark(texts)
    if row.change_pct is None:
        same = row.baseline is not None and row.baseline == row.variant
        return ("±0" if same else fmt.NA) + mark
    change = fmt.pct(row.change_pct)
    good = row.verdict == "better"
    if row.result.status == "exact":
        if row.verdict == "same":
            return f"±0 (exact){mark}"
        return Badge(f"{change} (exact){mark}", "good" if good else "bad")
    if row.within_run and row.verdict != "untested":
        tilde = "~ " if row.verdict == "no difference" else ""
        return f"{tilde}{change} (within-run {_p(row)}){mark}"
    if row.verdict in ("better", "worse"):
        return Badge(f"{change} ({_p(row)}){mark}", "good" if good else "bad")
    if row.verdict == "no difference":
        return f"~ {change} ({_p(row)}){mark}"
    return f"{change}, untested{mark}"


def glance_table(table: ComparisonTable, notes: Footnotes, every_metric: bool = False) -> Table:
    def head(name: str, n: int) -> str:
        return name if n == 1 else f"{name} (median of {n})"

    rows = []
    for row in table.rows:
        metric = next(m for m in METRICS if m.name == row.metric)
        if not (metric.glance or every_metric) or (row.baseline is None and row.variant is None):
            continue
        rows.append([
            row.label, row.window, fmt.value(row.baseline, row.unit),
            fmt.value(row.variant, row.unit), change_cell(row, notes),
        ])  # fmt: skip
    headers = [
        "",
        "window",
        head(table.baseline, table.n_baseline),
        head(table.variant, table.n_variant),
        "change",
    ]
    return Table(headers, rows, "llrrl")


def glance_note(table: ComparisonTable) -> Para:
    text = (
        "Each change is computed from the two values beside it. Exact rows are counts compared "
        "without a test. Memory is PSS/USS (summed RSS would count shared buffers once per "
        "process)."
    )
    if table.n_baseline == 1 or table.n_variant == 1:
        text += (
            " One repeat per variant: differences in goodput, latency and memory are untested "
            "across runs, so none carries a verdict; where shown, the within-run test over "
            "independent blocks of the full-load window only says the two windows differ beyond "
            "their own noise (`~`: they do not). Run with --repeats 5 to test them."
        )
    else:
        text += (
            " Noisy rows are tested with Mann-Whitney U across repeats (α = 0.05); `~` marks no "
            "significant difference."
        )
    return Para(text, muted=True)


def _lead(experiment: ExperimentSummary, table: ComparisonTable) -> str:
    parts = []
    for metric, words in (
        ("idle_connections", "connections held when idle"),
        ("postgres_pss_idle", "PostgreSQL memory (PSS, idle)"),
        ("goodput", "goodput"),
        ("refusals", "requests refused by PostgreSQL"),
    ):
        row = table.row(metric)
        if row is None or row.baseline is None or row.variant is None:
            continue
        if metric == "refusals" and not (row.baseline or row.variant):
            continue
        text = f"{words} {fmt.value(row.baseline, row.unit)} → {fmt.value(row.variant, row.unit)}"
        if row.verdict == "untested" or row.within_run:
            text += " (untested)"
        elif row.verdict == "no difference":
            text += " (no significant difference)"
        parts.append(text)
    who = f"{experiment.name}: {table.baseline} → {table.variant}"
    text = "; ".join(parts)
    return f"{who}. {text[:1].upper()}{text[1:]}." if text else f"{who}."


def experiment_section(
    experiment: ExperimentSummary, charts: list[Chart], run_dir: Path, primary: bool
) -> list[Any]:
    blocks: list[Any] = [Heading(2, f"Experiment: {experiment.name}", opens_experiment=True)]
    intro = f"{experiment.description.rstrip()} " if experiment.description else ""
    intro += f"Variants: {', '.join(v.name for v in experiment.variants)} (baseline: {experiment.baseline})."
    if primary:
        intro += f" Its comparison is “At a glance — {experiment.name}” at the top of the report."
    blocks.append(Para(intro, muted=True))
    # the primary experiment's first comparison opens the report; its others are shown here
    for table in experiment.comparisons[1 if primary else 0 :]:
        notes = Footnotes()
        blocks += [Heading(3, f"At a glance — {experiment.name}: {table.baseline} → {table.variant}"),
                   glance_table(table, notes), *notes.block(), glance_note(table)]  # fmt: skip
    if experiment.claims is not None and not primary:
        blocks += claims_section(experiment.claims)
    blocks += events_section(experiment)
    blocks += little_section(experiment)
    blocks += instrument_section(experiment)
    blocks += sizing_section(experiment)
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
    return blocks  # fmt: skip


def build_document(summary: Summary, charts: list[Chart], run_dir: Path) -> Document:
    run = summary.run
    subtitle = f"poolbench report · run {run.run_id} · status {run.status or 'unknown'}"
    if run.started_at:
        subtitle += f" · {when(run.started_at)}"
    doc = Document(title=summary.headline, subtitle=subtitle)
    add = doc.blocks.extend
    primary = summary.primary()
    if primary is not None:
        doc.blocks.append(Para(_lead(*primary), strong=True))
    add(Notice("warning", w) for w in summary.warnings)
    breached = [g for g in summary.thresholds if g.outcome == "breached"]
    if breached:
        add(
            Notice(
                "warning", f"Threshold breached ({g.experiment}): {g.expression} — {g.explanation}"
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
        add([Heading(2, f"At a glance — {experiment.name}: {table.baseline} → {table.variant}"),
             glance_table(table, notes), *notes.block(), glance_note(table)])  # fmt: skip
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
        add(experiment_section(experiment, charts, run_dir, is_primary))
    add(census_section(summary))
    add(environment_section(summary))
    doc.blocks.append(Heading(2, "Reproduce"))
    doc.blocks.append(Code((run.command or "# run.json records no command")
                           + f"\npoolbench report results/{run.run_id}   # re-analyse the recorded files"))  # fmt: skip
    return doc
