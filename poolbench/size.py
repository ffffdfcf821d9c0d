"""`poolbench size`: measure the pool size a variant needs, by a sweep.

One variant runs under the experiment's load at a series of pool sizes per worker (default
1, 2, 4, 8, 16, 32; max_overflow 0), each a fresh database and app (an experiment per size,
marked as points of one sweep in run.json). The report charts goodput and latency against pool
size and recommends the smallest size as good as the best (poolbench.analysis.sweep).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from poolbench.cli import add_fail_if
from poolbench.errors import PoolbenchError
from poolbench.files import results_root_arg

DEFAULT_SIZES = (1, 2, 4, 8, 16, 32)


def _sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        sizes = []
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError(f"comma-separated pool sizes of at least 1, got {text!r}")
    return sizes


def sweep_experiments(experiment, variant: str, sizes: list[int]) -> list:
    """One experiment per pool size: the same load, the one variant, its pools set to the size."""
    return [
        replace(
            experiment,
            name=f"{experiment.name}-pool-{size}",
            description=f"{variant} with pool_size {size} per worker (max_overflow 0)",
            variants=(variant,),
            app=replace(experiment.app, pool_size=size, max_overflow=0),
            claims={},
            sweep={"group": experiment.name, "variant": variant, "pool_size": size},
        )
        for size in sizes
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=Path("scenarios/bench.toml"),
                        help="bench file (default: scenarios/bench.toml)")  # fmt: skip
    parser.add_argument("--experiment", help="whose load and settings (default: the first default)")
    parser.add_argument("--variant", default="after", help="the variant to size (default: after)")
    parser.add_argument("--sizes", type=_sizes, default=list(DEFAULT_SIZES),
                        help="pool sizes per worker (default: 1,2,4,8,16,32)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="the bench file's quick load")
    parser.add_argument("--repeats", type=int, help="runs per size")
    parser.add_argument("--database-url", help="use this PostgreSQL instead of an embedded one")
    parser.add_argument(
        "--out", type=results_root_arg, default=Path("results"), help="results root"
    )
    parser.add_argument("--no-report", action="store_true", help="skip the report at the end")
    add_fail_if(parser)


def run(args: argparse.Namespace) -> int:
    from poolbench.cli import report_run
    from poolbench.config import load_config, select
    from poolbench.results import check_free_space, check_results_root
    from poolbench.runner import Runner

    check_results_root(args.out)
    config = load_config(args.config)
    if args.variant not in config.variants:
        raise PoolbenchError(
            f"unknown variant {args.variant!r}: valid variants are {', '.join(sorted(config.variants))}"
        )
    base = select(
        config,
        experiments=[args.experiment] if args.experiment else None,
        variants=[args.variant],
        quick=args.quick,
        repeats=args.repeats,
    )[0]
    if base.load.shape == "spike":
        raise PoolbenchError(
            "a sweep needs a steady window: use an experiment with shape steady or ramp"
        )
    experiments = sweep_experiments(base, args.variant, args.sizes)
    check_free_space(args.out, experiments)
    runner = Runner(config, experiments, args.out, ["poolbench", *sys.argv[1:]], args.database_url)
    record = runner.run()
    print(f"results: {record.run_dir}")
    return report_run(record.run_dir, args.no_report, args.fail_if, args.strict_thresholds)
