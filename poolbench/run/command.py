"""`poolbench run`: its options, and the run from a bench file to a report and an exit code."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from poolbench.config.bench import BenchConfig, Experiment
from poolbench.options import Overrides, add_fail_if, count, duration, names, out_root
from poolbench.results.status import Status

EXIT_VARIANT_FAILED = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=Path("scenarios/bench.toml"),
        help="bench file (default: scenarios/bench.toml)",
    )
    parser.add_argument(
        "--experiment",
        action="append",
        dest="experiments",
        metavar="NAME",
        help="experiment to run (repeatable; default: the file's defaults)",
    )
    parser.add_argument(
        "--variants", type=names, help="comma-separated variants, e.g. before,after"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a small, fast run (pool_size=4, ~25 s per variant)"
    )
    parser.add_argument("--repeats", type=int, help="runs per variant (alternating order)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="use this PostgreSQL instead of an embedded one "
        "(superuser or pg_monitor + CREATEROLE/CREATEDB)",
    )
    parser.add_argument(
        "--pg-bindir",
        metavar="DIR",
        help="run the throwaway PostgreSQL from these binaries "
        "(e.g. /usr/lib/postgresql/15/bin: every contrib extension)",
    )
    parser.add_argument(
        "--load-processes", type=int, help="Locust processes (passed as --processes)"
    )
    parser.add_argument(
        "--locust-workers",
        type=count,
        metavar="N",
        help="a Locust master waits for N workers started separately (prints their command)",
    )
    parser.add_argument(
        "--locust-workers-timeout",
        type=float,
        metavar="S",
        help="seconds to wait for the workers to join (default 120)",
    )
    parser.add_argument(
        "--locust-master-bind",
        metavar="ADDRESS",
        help="where the Locust master listens (default 127.0.0.1; exposing it is deliberate)",
    )
    parser.add_argument(
        "--soak",
        type=duration,
        metavar="DURATION",
        help="continue the load at constant users this long (e.g. 10m): the leak test's window",
    )
    parser.add_argument(
        "--out", type=out_root, default=Path("results"), help="results root (default: results/)"
    )
    parser.add_argument("--no-report", action="store_true", help="skip the report at the end")
    add_fail_if(parser)


def run(args: argparse.Namespace) -> int:
    from poolbench.config.bench import select

    config = checked_config(args)
    experiments = select(config, Overrides.from_args(args))
    return run_and_report(config, experiments, args)


def checked_config(args: argparse.Namespace) -> BenchConfig:
    """The bench file, once --fail-if, --out and every name the file uses are known good:
    a mistake is one line before anything starts (`poolbench run` and `poolbench size`)."""
    from poolbench.analysis.metrics import BY_NAME, check_claims
    from poolbench.config.bench import load_config, parse_fail_if
    from poolbench.results.run_folder import check_results_root

    parse_fail_if(args.fail_if, "--fail-if", metrics=list(BY_NAME))
    check_results_root(args.out)
    config = load_config(args.config)
    for name, experiment in config.experiments.items():  # the names the analysis knows
        check_claims(experiment.claims, f"experiments.{name}.claims")
        where = f"experiments.{name}.fail_if"
        parse_fail_if(list(experiment.fail_if), where, experiment.variants, list(BY_NAME))
    return config


def run_and_report(
    config: BenchConfig, experiments: list[Experiment], args: argparse.Namespace
) -> int:
    """Run the experiments, then the summary and the report; the exit code says how it went."""
    from poolbench.report import report_run
    from poolbench.results.run_folder import check_free_space
    from poolbench.run.clean import clean_before_run
    from poolbench.run.runner import Runner

    clean_before_run(args.out, args.database_url)
    check_free_space(args.out, experiments)
    runner = Runner(config, experiments, args.out, ["poolbench", *sys.argv[1:]], args.database_url)
    record = runner.run()
    print(f"results: {record.run_dir}")
    gated = report_run(record.run_dir, args.no_report, args.fail_if, args.strict_thresholds)
    if record.state.status != Status.COMPLETE:
        print(
            f"poolbench {args.command}: {record.state.status}: {record.state.error}",
            file=sys.stderr,
        )
    return EXIT_VARIANT_FAILED if record.state.status == Status.FAILED else gated
