"""Thresholds that gate CI, checked against an analysed run (or a comparison of runs).

Expressions come from the bench file (`fail_if = [...]` under `[defaults]` or an experiment,
recorded in run.json) and from `--fail-if` on `run`, `report` and `compare`; the grammar and
their meaning are poolbench.analysis.thresholds'. Each is checked against every experiment that
has the variants it names. A difference decided only by the within-run block test is *inconclusive*
here, as it is untested across runs: the block test cannot see run-to-run variation (it called
a quarter of A/A pairs with a 3 % run-to-run offset significant), and a gate must not cry wolf.
A breach exits with thresholds.EXIT_THRESHOLD (3).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace

import numpy as np

from poolbench.analysis.compare import compare_row
from poolbench.analysis.figures import VariantRun
from poolbench.analysis.metrics import BY_NAME
from poolbench.analysis.run_analysis import Analysis
from poolbench.analysis.stats import Comparison
from poolbench.analysis.summary import Gate
from poolbench.analysis.thresholds import EXIT_THRESHOLD, Outcome, check
from poolbench.config.thresholds import parse
from poolbench.errors import PoolbenchError
from poolbench.results.record import RunEntry

WITHIN_RUN = "one run per side: only a within-run test, which cannot decide a gate (use --repeats)"


class RunsSource:
    """A ThresholdSource over named groups of repeats (variants of an experiment, or of runs)."""

    def __init__(self, groups: dict[str, list[VariantRun]]) -> None:
        self.groups = groups

    def variants(self) -> Collection[str]:
        return list(self.groups)

    def metrics(self) -> Collection[str]:
        return list(BY_NAME)

    def value(self, variant: str, metric: str) -> float | None:
        values = [
            v for r in self.groups[variant] if (v := BY_NAME[metric].get(r.figures)) is not None
        ]
        return float(np.median(values)) if values else None

    def comparison(self, baseline: str, other: str, metric: str) -> Comparison | None:
        base, mine = self.groups[baseline], self.groups[other]
        row = compare_row(BY_NAME[metric], base, mine, (baseline, other), cut=None)
        if len(base) == 1 and len(mine) == 1 and not row.exact:
            return replace(
                row.result, status="untested", footnotes=(WITHIN_RUN, *row.result.footnotes)
            )
        return row.result


def _referenced(expression: str) -> set[str]:
    return {ref.variant for ref in parse(expression).refs}


def check_analysis(analysis: Analysis, expressions: dict[str, list[str]]) -> list[Gate]:
    """`expressions`: experiment name (or "" for every experiment) → its thresholds."""
    gates = []
    for text in dict.fromkeys(e for exprs in expressions.values() for e in exprs):
        wanted = _referenced(text)
        scopes = [name for name, exprs in expressions.items() if text in exprs]
        matched = False
        for experiment in analysis.summary.experiments:
            if "" not in scopes and experiment.name not in scopes:
                continue
            groups = analysis.experiment_runs(experiment.name)
            if not wanted <= set(groups):
                continue
            matched = True
            for result in check([text], RunsSource(groups)):
                gates.append(
                    Gate(experiment.name, result.expression, result.outcome, result.explanation)
                )
        if not matched:
            known = sorted(
                {v for e in analysis.summary.experiments for v in analysis.experiment_runs(e.name)}
            )
            raise PoolbenchError(
                f"threshold {text!r}: no experiment has the variant(s) {', '.join(sorted(wanted))} "
                f"(variants in this run: {', '.join(known)})"
            )
    return gates


def recorded(run: RunEntry) -> dict[str, list[str]]:
    """The bench file's thresholds as run.json recorded them, per experiment."""
    return {e.name: list(e.fail_if) for e in run.experiments if e.fail_if}


def gate_exit(gates: list[Gate], strict: bool = False) -> int:
    failing = {Outcome.BREACHED, Outcome.INCONCLUSIVE} if strict else {Outcome.BREACHED}
    return EXIT_THRESHOLD if any(g.outcome in failing for g in gates) else 0


def print_gates(gates: list[Gate]) -> None:
    for gate in gates:
        print(
            f"  threshold {gate.outcome:<12} [{gate.experiment}] "
            f"{gate.expression}: {gate.explanation}"
        )
