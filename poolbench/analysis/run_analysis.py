"""A whole run analysed: every variant's figures, the comparisons, claims and summary.json.

It reads a run only through poolbench.results.run_folder.load_run (docs/results.md), so any
past run can be re-analysed. The baseline of an experiment is its first variant in run.json
order; every other variant is compared to it. Nothing here knows what the answer "should" be.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from poolbench.analysis.claims import claim_from_config, judge, not_compared
from poolbench.analysis.collector_pause import fewer_collections
from poolbench.analysis.compare import compare_variants
from poolbench.analysis.figures import VariantFigures, VariantRun, analyse_variant
from poolbench.analysis.pool_sweep import sweeps
from poolbench.analysis.sizing import right_sizing, wait_evidence
from poolbench.analysis.summary import (
    SCHEMA,
    ExperimentSummary,
    RunInfo,
    Summary,
    VariantSummary,
    headline,
)
from poolbench.analysis.typed import num
from poolbench.errors import PoolbenchError
from poolbench.results.events import STALL_CAUSES, EventKind
from poolbench.results.record import RunEntry
from poolbench.results.run_folder import RunResult, load_run
from poolbench.results.status import Status

__all__ = ["Analysis", "VariantRun", "analyse", "analyse_variant"]


@dataclass
class Analysis:
    summary: Summary
    runs: list[VariantRun]
    run_dir: Path
    run: RunEntry  # run.json as a typed record

    def experiment_runs(self, experiment: str) -> dict[str, list[VariantRun]]:
        """Variant name → its repeats in order, for one experiment."""
        out: dict[str, list[VariantRun]] = {}
        for run in self.runs:
            if run.figures.experiment == experiment:
                out.setdefault(run.figures.variant, []).append(run)
        for repeats in out.values():
            repeats.sort(key=lambda r: r.figures.repeat)
        return out


def _warnings(loaded: RunResult, runs: list[VariantRun]) -> list[str]:
    warnings = list(loaded.warnings)
    status = loaded.run.status.value
    if status != Status.COMPLETE:
        error = loaded.run.error
        warnings.insert(
            0,
            f"run status is {status!r}"
            + (f" ({error})" if error else "")
            + ": the numbers cover only what was recorded",
        )
    for run in runs:
        f = run.figures
        if f.status not in (None, Status.COMPLETE):
            warnings.append(
                f"{f.dir}: variant status is {f.status!r}; "
                "its numbers may cover only part of the run"
            )
        warnings += _stall_warnings(f)
        if exposed := run.result.entry.listening_warning:
            warnings.append(f"{f.dir}: {exposed}")
        if f.collector_gap_s:
            warnings.append(
                f"{f.dir}: the collector lost contact for {f.collector_gap_s:.1f} s (gap samples)"
            )
        if f.connections.samples_in_load == 0:
            warnings.append(f"{f.dir}: no connection samples in the load phase")
        if f.memory.other_clients:
            warnings.append(
                f"{f.dir}: other clients held {f.memory.other_clients:.0f} connections to this "
                f"server: PostgreSQL's memory figures cover {f.memory.scope}"
            )
        for d in f.traffic.unsteady:
            warnings.append(
                f"{f.dir}: the full-load window is not steady: {d.describe()}; its figures "
                "average a moving target and Little's law cannot see it"
            )
        little = f.traffic.littles_law
        if little is not None and not little.agrees:
            warnings.append(
                f"{f.dir}: Little's law disagrees by {little.disagreement_pct:+.0f} % "
                f"({little.users:.0f} users ÷ {little.throughput:.1f} requests/s − "
                f"{little.mean_think_s * 1000:.0f} ms think time = "
                f"{little.predicted_response_s * 1000:.0f} ms, measured "
                f"{little.mean_response_s * 1000:.0f} ms): the load generator or the window is off"
            )
    return warnings


def _stall_warnings(f: VariantFigures) -> list[str]:
    """Each stall marked where the figures are read: they span it, and measure the stall."""
    out = []
    for e in f.events:
        if e.get("event") != EventKind.STALLED or e.get("end") is None:
            continue
        start, end = float(e["ts"]) - f.windows.t0, float(e["end"]) - f.windows.t0
        causes = "; ".join(STALL_CAUSES.get(c, c) for c in e.get("causes") or [])
        out.append(
            f"{f.dir}: stalled for {end - start:.1f} s (t = {start:.1f}–{end:.1f} s: {causes}); "
            "figures whose window spans it measure the stall, not the app"
        )
    return out


def _experiment(
    name: str, loaded: RunResult, runs: list[VariantRun], cores: int | None
) -> ExperimentSummary:
    entry = loaded.run.experiment(name)
    by_variant: dict[str, list[VariantRun]] = {}
    for run in runs:
        if run.figures.experiment == name:
            by_variant.setdefault(run.figures.variant, []).append(run)
    for repeats in by_variant.values():
        repeats.sort(key=lambda r: r.figures.repeat)
    names = list(by_variant)
    variants = [
        VariantSummary(n, by_variant[n][0].figures.label, [r.figures for r in by_variant[n]])
        for n in names
    ]
    tables = [compare_variants(by_variant[names[0]], by_variant[n]) for n in names[1:]]
    claims_spec = [claim_from_config(k, v) for k, v in (entry.claims if entry else {}).items()]
    claims = None
    if claims_spec and tables:
        claims = judge(claims_spec, tables[0], name, variants[0].repeats, variants[1].repeats)
    elif claims_spec:  # declared, so said: nothing to judge them against
        claims = not_compared(claims_spec, name, names[0])
    firsts = [v.repeats[0] for v in variants]
    return ExperimentSummary(
        name=name,
        description=(entry.description if entry else None) or None,
        baseline=names[0],
        variants=variants,
        comparisons=tables,
        sizing=replace(right_sizing(firsts, cores), waits=wait_evidence(firsts)),
        claims=claims,
    )


def analyse(source: str | Path | RunResult) -> Analysis:
    """Every figure of summary.json for a results directory (or one already loaded)."""
    loaded = source if isinstance(source, RunResult) else load_run(source)
    with fewer_collections():
        runs = [analyse_variant(v) for v in loaded.variants if v.has_samples]
        return _analysis(loaded, runs)


def _analysis(loaded: RunResult, runs: list[VariantRun]) -> Analysis:
    """The run's summary from its variants' figures."""
    from poolbench import __version__

    if not runs:
        raise PoolbenchError(f"{loaded.path}: no variant with a samples.csv to analyse")
    run = loaded.run
    environment = dict(run.environment)
    cores = int(num(environment.get("cpu_count")) or 0) or None
    order = list(dict.fromkeys(r.figures.experiment for r in runs))
    experiments = [_experiment(name, loaded, runs, cores) for name in order]
    found_sweeps = sweeps(run.experiments, runs, cores)
    run_id = run.run_id or loaded.path.name
    lines = headline(experiments, run_id, run.status.value, found_sweeps)
    summary = Summary(
        schema=SCHEMA,
        generated_by=f"poolbench {__version__}",
        run=RunInfo(
            run_id,
            run.status.value,
            run.error,
            run.command,
            run.started_at,
            run.finished_at,
            environment,
        ),
        headline="\n".join(lines),
        headlines=lines,
        warnings=_warnings(loaded, runs),
        experiments=experiments,
        sweeps=found_sweeps,
    )
    return Analysis(summary, runs, loaded.path, run)
