"""`poolbench report RUN_DIR`: summary.json, report.md, report.html and charts/*.png.

Reads only the results directory (docs/results.md) and writes into it. Every file is written
under a temporary name and renamed into place, so a file that exists is whole.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

from poolbench.analysis.run_analysis import Analysis, analyse
from poolbench.analysis.summary import write_summary
from poolbench.errors import PoolbenchError
from poolbench.files import atomic_write
from poolbench.options import add_fail_if
from poolbench.results.run_folder import EXIT_DAMAGED, load_run


def _write_text(path: Path, content: str) -> None:
    atomic_write(path, content)


def build_report(
    run_dir: str | os.PathLike[str],
    analysis: Analysis | None = None,
    *,
    charts: bool = True,
    fail_if: list[str] | None = None,
) -> Path:
    """Write the report files into run_dir (analysing it unless given); return report.html.

    Without charts (`poolbench report --no-charts`) the text is the same, minus the images:
    drawing them is most of a report's time.
    """
    from poolbench.report.charts import render_charts
    from poolbench.report.document import build_document
    from poolbench.report.html import render_html
    from poolbench.report.markdown import render_markdown

    run_dir = Path(run_dir)
    analysis = analysis or analyse(run_dir)
    apply_thresholds(analysis, fail_if)
    try:
        write_summary(analysis.summary, run_dir)
        drawn = render_charts(analysis, run_dir) if charts else []
        document = build_document(analysis.summary, drawn, run_dir)
        _write_text(run_dir / "report.md", render_markdown(document))
        html_path = run_dir / "report.html"
        _write_text(html_path, render_html(document))
    except OSError as exc:
        raise PoolbenchError(f"cannot write the report into {run_dir}: {exc.strerror}") from None
    return html_path


def apply_thresholds(analysis: Analysis, fail_if: list[str] | None) -> None:
    """The bench file's thresholds (run.json) and the command line's, into the summary."""
    from poolbench.analysis.gates import check_analysis, recorded

    expressions = recorded(analysis.run)
    if fail_if:
        expressions[""] = list(fail_if)
    if expressions:
        analysis.summary = replace(
            analysis.summary, thresholds=check_analysis(analysis, expressions)
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `report` options, for a standalone parser or a subcommand of `poolbench`."""
    parser.add_argument(
        "run_dir",
        metavar="RUN_DIR",
        type=Path,
        nargs="?",
        default=Path("results/latest"),
        help="results directory of a run (default: results/latest)",
    )
    parser.add_argument(
        "--no-charts", action="store_true", help="text only (report.md/.html without images)"
    )
    add_fail_if(parser)


def run(args: argparse.Namespace) -> int:
    """Write the report; a malformed directory raises PoolbenchError (one line, for the CLI).
    Exits EXIT_DAMAGED when some samples file is damaged (said on stderr), else the
    thresholds' code."""
    from poolbench.analysis.gates import gate_exit, print_gates

    loaded = load_run(args.run_dir)
    analysis = analyse(loaded)
    path = build_report(args.run_dir, analysis, charts=not args.no_charts, fail_if=args.fail_if)
    print(analysis.summary.headline)  # one line per experiment
    for experiment in analysis.summary.experiments:
        for item in experiment.claims.items if experiment.claims else []:
            print(f"  {item.verdict:<14} {item.claim.text}")
    print_gates(analysis.summary.thresholds)
    print(f"report: {path}")
    damage = [f"{v.key}: {d}" for v in loaded.variants for d in v.damage]
    for line in damage:
        print(f"poolbench report: warning: damaged data: {line}", file=sys.stderr)
    return (
        EXIT_DAMAGED if damage else gate_exit(analysis.summary.thresholds, args.strict_thresholds)
    )


def report_run(
    run_dir: Path, skip_report: bool, fail_if: list[str] | None = None, strict: bool = False
) -> int:
    """The short text summary, then the report; both from one analysis of the run. Thresholds
    are checked (and their breach is the exit code) even when the report is skipped."""
    from poolbench.analysis.gates import gate_exit, print_gates
    from poolbench.analysis.run_analysis import analyse
    from poolbench.report.summary_text import text_summary
    from poolbench.results.run_folder import load_run

    run = load_run(run_dir)
    analysis = analyse(run) if any(v.has_samples for v in run.variants) else None
    print(text_summary(run, analysis))
    if analysis is None:
        return 0
    if skip_report:
        apply_thresholds(analysis, fail_if)
    else:
        print(f"report: {build_report(run_dir, analysis, fail_if=fail_if)}")
    print_gates(analysis.summary.thresholds)
    return gate_exit(analysis.summary.thresholds, strict)
