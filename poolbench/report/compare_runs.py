"""`poolbench compare RUN_A RUN_B [RUN_C …]`: the comparison table across results folders.

For two commits of a team's own app: each folder is analysed from its files (as `poolbench
report` does), variants are matched by name within each experiment both runs have — RUN_A's
variant is the baseline, each later run's variant of the same name is compared with it — or
paired by hand with `--pair A:before,B:after` (run letters in the order given). The table is
the report's, metric by metric, printed to the terminal and, with `--markdown FILE`, written as
Markdown for a pull request.
"""

from __future__ import annotations

import argparse
import string
from dataclasses import dataclass
from pathlib import Path

from poolbench.analysis.compare import ComparisonTable, compare_variants
from poolbench.analysis.figures import VariantRun
from poolbench.analysis.gates import RunsSource, gate_exit
from poolbench.analysis.run_analysis import Analysis, analyse
from poolbench.analysis.summary import Gate
from poolbench.analysis.thresholds import check
from poolbench.config.thresholds import parse
from poolbench.errors import PoolbenchError
from poolbench.files import atomic_write
from poolbench.options import add_fail_if
from poolbench.report.blocks import Document, Heading, Table
from poolbench.report.document import Footnotes, glance_note, glance_table
from poolbench.report.markdown import render_markdown
from poolbench.report.terminal import print_document


@dataclass(frozen=True)
class Pairing:
    experiment: str
    table: ComparisonTable


def _letter(i: int) -> str:
    return string.ascii_uppercase[i]


def _parse_pair(text: str, count: int) -> list[tuple[int, str]]:
    """`A:before,B:after` → [(0, "before"), (1, "after")]."""
    sides = []
    for part in text.split(","):
        letter, _, variant = part.strip().partition(":")
        index = (
            string.ascii_uppercase.find(letter.strip().upper()) if len(letter.strip()) == 1 else -1
        )
        if index < 0 or index >= count or not variant:
            raise PoolbenchError(
                f"--pair {text!r}: expected RUN:VARIANT,RUN:VARIANT with RUN one of "
                f"{', '.join(_letter(i) for i in range(count))} (the runs in the order given)"
            )
        sides.append((index, variant.strip()))
    if len(sides) != 2:
        raise PoolbenchError(f"--pair {text!r}: name exactly two sides, e.g. A:before,B:after")
    return sides


def _runs(analysis: Analysis, experiment: str, variant: str) -> list[VariantRun]:
    return analysis.experiment_runs(experiment).get(variant) or []


def pairings(analyses: list[Analysis], pair: str | None) -> list[Pairing]:
    out = []
    if pair:
        (ia, va), (ib, vb) = _parse_pair(pair, len(analyses))
        for experiment in analyses[ia].summary.experiments:
            base, other = (
                _runs(analyses[ia], experiment.name, va),
                _runs(analyses[ib], experiment.name, vb),
            )
            if base and other:
                names = (f"{_letter(ia)}:{va}", f"{_letter(ib)}:{vb}")
                out.append(Pairing(experiment.name, compare_variants(base, other, names)))
        if not out:
            raise PoolbenchError(f"--pair {pair}: no experiment has both variants")
        return out
    first = analyses[0]
    for i, later in enumerate(analyses[1:], 1):
        for experiment in first.summary.experiments:
            for variant in experiment.variants:
                base = _runs(first, experiment.name, variant.name)
                other = _runs(later, experiment.name, variant.name)
                if other:
                    names = (f"A:{variant.name}", f"{_letter(i)}:{variant.name}")
                    out.append(Pairing(experiment.name, compare_variants(base, other, names)))
    if not out:
        raise PoolbenchError(
            "the runs share no experiment and variant name; pair them with --pair A:NAME,B:NAME"
        )
    return out


def document(runs: list[Path], found: list[Pairing]) -> Document:
    legend = "; ".join(f"{_letter(i)} = {path}" for i, path in enumerate(runs))
    doc = Document(title="poolbench compare", subtitle=legend)
    for pairing in found:
        notes = Footnotes()
        doc.blocks += [
            Heading(2, f"{pairing.experiment}: {pairing.table.baseline} → {pairing.table.variant}"),
            glance_table(pairing.table, notes, every_metric=True),
            *notes.block(),
            glance_note(pairing.table),
        ]
    return doc


def threshold_groups(analyses: list[Analysis], experiment: str) -> dict[str, list[VariantRun]]:
    """`A_before`, `B_before`, …: each run's variants, for --fail-if across runs."""
    return {
        f"{_letter(i)}_{variant}": runs
        for i, analysis in enumerate(analyses)
        for variant, runs in analysis.experiment_runs(experiment).items()
    }


def check_thresholds(analyses: list[Analysis], expressions: list[str]) -> list[Gate]:
    gates = []
    for text in expressions:
        wanted = {ref.variant for ref in parse(text).refs}
        names = dict.fromkeys(e.name for a in analyses for e in a.summary.experiments)
        matched = False
        for experiment in names:
            groups = threshold_groups(analyses, experiment)
            if wanted <= set(groups):
                matched = True
                gates += [
                    Gate(experiment, r.expression, r.outcome, r.explanation)
                    for r in check([text], RunsSource(groups))
                ]
        if not matched:
            known = sorted({g for e in names for g in threshold_groups(analyses, e)})
            raise PoolbenchError(
                f"threshold {text!r}: variants across runs are named RUN_VARIANT, e.g. "
                f"{', '.join(known[:6])}"
            )
    return gates


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "runs", metavar="RUN", type=Path, nargs="+", help="results folders (two or more)"
    )
    parser.add_argument(
        "--pair", help="compare RUN:VARIANT with RUN:VARIANT, e.g. A:before,B:after"
    )
    parser.add_argument(
        "--markdown", type=Path, metavar="FILE", help="also write the table as Markdown"
    )
    add_fail_if(parser)


def run(args: argparse.Namespace) -> int:
    if len(args.runs) < 2:
        raise PoolbenchError("compare needs at least two results folders")
    if len(args.runs) > len(string.ascii_uppercase):
        raise PoolbenchError(f"compare takes at most {len(string.ascii_uppercase)} results folders")
    analyses = [analyse(path) for path in args.runs]
    found = pairings(analyses, args.pair)
    gates = check_thresholds(analyses, args.fail_if)
    doc = document(args.runs, found)
    if gates:
        doc.blocks.append(Heading(2, "Thresholds"))
        doc.blocks.append(
            Table(
                ["experiment", "fail if", "outcome", "why"],
                [[g.experiment, g.expression, g.outcome, g.explanation] for g in gates],
                "llll",
            )
        )
    print_document(doc)
    if args.markdown:
        atomic_write(args.markdown, render_markdown(doc))
        print(f"markdown: {args.markdown}")
    return gate_exit(gates, args.strict_thresholds)
