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
from poolbench.analysis.pool_sweep import Sweep
from poolbench.analysis.sizing import Sizing
from poolbench.analysis.thresholds import Outcome
from poolbench.analysis.typed import Json
from poolbench.errors import PoolbenchError
from poolbench.files import atomic_write
from poolbench.results.status import Status

SCHEMA = 4  # 3: headlines (one per experiment), exact.attempts, idle in transaction;
# 4: sizing per variant (advice), memory scope, leak thresholds, window drift
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
    """A threshold checked against one experiment (poolbench.analysis.gates)."""

    experiment: str
    expression: str
    outcome: Outcome
    explanation: str


@dataclass(frozen=True)
class Summary(Json):
    schema: int
    generated_by: str
    run: RunInfo
    headline: str  # every line of `headlines`, one per line
    warnings: list[str] = field(default_factory=list)
    experiments: list[ExperimentSummary] = field(default_factory=list)
    sweeps: list[Sweep] = field(default_factory=list)
    thresholds: list[Gate] = field(default_factory=list)
    headlines: list[str] = field(default_factory=list)  # one per experiment (and sweep)

    def primary(self) -> tuple[ExperimentSummary, ComparisonTable] | None:
        """The first experiment with a comparison, and its first comparison."""
        for experiment in self.experiments:
            if experiment.comparisons:
                return experiment, experiment.comparisons[0]
        return None


def write_summary(summary: Summary, run_dir: Path) -> Path:
    path = run_dir / FILE
    return atomic_write(path, json.dumps(summary.to_json(), indent=2, ensure_ascii=False) + "\n")


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
) -> list[str]:
    """One line per experiment (and per sweep), each from its own figures only: nothing in one
    experiment's line comes from another. Lines are prefixed with the experiment's name when
    there is more than one."""
    swept = {p.experiment for sweep in sweeps for p in sweep.points}
    mine = [e for e in experiments if e.name not in swept]
    lines = [_sweep_headline(sweep) for sweep in sweeps]
    named = len(mine) + len(sweeps) > 1
    for experiment in mine:
        text = _experiment_headline(experiment)
        if text is not None:
            lines.append(f"{experiment.name}: {text}" if named else text)
    if not lines:
        lines.append(f"poolbench run {run_id}: no connection samples")
    if status not in (None, "complete") and not any("not complete" in line for line in lines):
        lines[-1] += f" — run {status}"
    return lines


def _experiment_headline(experiment: ExperimentSummary) -> str | None:
    text = _connections_headline(experiment)
    if text is None:
        return None
    refused = _refused(experiment)
    if refused:
        text += f"; {refused}"
    broken = [
        f"{f.variant}-{f.repeat} {f.status}" + (f" ({f.fault})" if f.fault else "")
        for v in experiment.variants
        for f in v.repeats
        if f.status not in (None, Status.COMPLETE)
    ]
    if broken:
        text += f" — not complete: {'; '.join(broken)}"
    return text


def _refused(experiment: ExperimentSummary) -> str | None:
    """Refused connection attempts from the server's log; without a log, the failed requests
    whose error names a refusal, under that name."""
    server, requests = [], []
    for v in experiment.variants:
        logged = [f.exact.attempts.refused for f in v.repeats if f.exact.attempts is not None]
        if logged and sum(logged):
            server.append(f"{v.name} {fmt.count(sum(logged))}")
        elif not logged and any(f.traffic.refusals for f in v.repeats):
            requests.append(
                f"{v.name} {fmt.count(sum(f.traffic.refusals or 0 for f in v.repeats))}"
            )
    parts = []
    if server:
        parts.append(f"connection attempts refused by PostgreSQL (its log): {', '.join(server)}")
    if requests:
        parts.append(f"failed requests naming a refusal (app log / Locust): {', '.join(requests)}")
    return "; ".join(parts) or None


def _sweep_headline(sweep: Sweep) -> str:
    sizes = f"{sweep.points[0].pool_size}–{sweep.points[-1].pool_size}" if sweep.points else "?"
    if sweep.recommended is not None:
        return (
            f"Pool-size sweep of {sweep.variant} ({sizes}): "
            f"pool_size {sweep.recommended} per worker"
        )
    return f"Pool-size sweep of {sweep.variant} ({sizes}): no recommendation"


def _connections_headline(experiment: ExperimentSummary) -> str | None:
    for table in experiment.comparisons:
        row = table.row("peak_connections")
        if row and row.baseline is not None and row.variant is not None:
            change = fmt.change(row.baseline, row.variant, row.unit)
            change = f" ({change})" if change != fmt.NA else ""
            return f"Peak connections {fmt.count(row.baseline)} → {fmt.count(row.variant)}{change}"
    for variant in experiment.variants:
        if variant.first.connections.peak is not None:
            return f"Peak connections {fmt.count(variant.first.connections.peak)} ({variant.name})"
    return None
