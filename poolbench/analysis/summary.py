"""summary.json: the typed result of analysing a results directory, and its headline."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poolbench import format as fmt
from poolbench.analysis.claims import ClaimsTable
from poolbench.analysis.compare import ComparisonTable
from poolbench.analysis.figures import VariantFigures
from poolbench.analysis.sizing import Sizing
from poolbench.analysis.sweep import Sweep
from poolbench.analysis.typed import Json
from poolbench.errors import PoolbenchError

SCHEMA = 3  # 3: sizing per variant (advice), memory scope, leak thresholds, window drift
FILE = "summary.json"


@dataclass(frozen=True)
class RunInfo(Json):
    run_id: str
    status: str | None
    error: str | None
    command: str | None
    started_at: float | None
    finished_at: float | None
    environment: dict[str, Any]


@dataclass(frozen=True)
class VariantSummary(Json):
    name: str
    label: str
    repeats: list[VariantFigures]

    @property
    def first(self) -> VariantFigures:
        return self.repeats[0]


@dataclass(frozen=True)
class ExperimentSummary(Json):
    name: str
    description: str | None
    baseline: str
    variants: list[VariantSummary]
    comparisons: list[ComparisonTable]
    sizing: Sizing
    claims: ClaimsTable | None = None

    def variant(self, name: str) -> VariantSummary | None:
        return next((v for v in self.variants if v.name == name), None)


@dataclass(frozen=True)
class Gate(Json):
    """A threshold checked against one experiment (poolbench.gates)."""

    experiment: str
    expression: str
    outcome: str  # breached, passed, inconclusive
    explanation: str


@dataclass(frozen=True)
class Summary(Json):
    schema: int
    generated_by: str
    run: RunInfo
    headline: str
    warnings: list[str] = field(default_factory=list)
    experiments: list[ExperimentSummary] = field(default_factory=list)
    sweeps: list[Sweep] = field(default_factory=list)
    thresholds: list[Gate] = field(default_factory=list)

    def primary(self) -> tuple[ExperimentSummary, ComparisonTable] | None:
        """The first experiment with a comparison, and its first comparison."""
        for experiment in self.experiments:
            if experiment.comparisons:
                return experiment, experiment.comparisons[0]
        return None


def write_summary(summary: Summary, run_dir: Path) -> Path:
    path = run_dir / FILE
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(summary.to_json(), indent=2, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def read_summary(run_dir: Path) -> Summary:
    path = run_dir / FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise PoolbenchError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise PoolbenchError(
            f"{path} has schema {data.get('schema') if isinstance(data, dict) else '?'}, this "
            f"poolbench reads {SCHEMA}: run `poolbench report {run_dir}` to rewrite it"
        )
    return Summary.from_json(data)


def headline(
    experiments: list[ExperimentSummary], run_id: str, status: str | None, sweeps: list[Sweep]
) -> str:
    text = (
        _sweep_headline(sweeps)
        or _connections_headline(experiments)
        or f"poolbench run {run_id}: no connection samples"
    )
    refused = [
        f"{v.name} {fmt.count(sum(f.traffic.refusals or 0 for f in v.repeats))}"
        for e in experiments for v in e.variants
        if any((f.traffic.refusals or 0) > 0 for f in v.repeats)
    ]  # fmt: skip
    if refused:
        text += f"; requests refused by PostgreSQL: {', '.join(refused)}"
    broken = [
        f"{f.variant}-{f.repeat} {f.status}" + (f" ({f.fault})" if f.fault else "")
        for e in experiments for v in e.variants for f in v.repeats
        if f.status not in (None, "complete")
    ]  # fmt: skip
    if broken:
        text += f" — not complete: {'; '.join(broken)}"
    elif status not in (None, "complete"):
        text += f" — run {status}"
    return text


def _sweep_headline(sweeps: list[Sweep]) -> str | None:
    for sweep in sweeps:
        sizes = f"{sweep.points[0].pool_size}–{sweep.points[-1].pool_size}" if sweep.points else "?"
        if sweep.recommended is not None:
            return f"Pool-size sweep of {sweep.variant} ({sizes}): pool_size {sweep.recommended} per worker"
        return f"Pool-size sweep of {sweep.variant} ({sizes}): no recommendation"
    return None


def _connections_headline(experiments: list[ExperimentSummary]) -> str | None:
    for experiment in experiments:
        for table in experiment.comparisons:
            row = table.row("peak_connections")
            if row and row.baseline is not None and row.variant is not None:
                change = f" ({fmt.pct(row.change_pct, 0)})" if row.change_pct is not None else ""
                return (
                    f"Peak connections {fmt.count(row.baseline)} → {fmt.count(row.variant)}{change}"
                )
    for experiment in experiments:
        for variant in experiment.variants:
            if variant.first.connections.peak is not None:
                return (
                    f"Peak connections {fmt.count(variant.first.connections.peak)} ({variant.name})"
                )
    return None
