"""`poolbench size`: measure the pool size a variant needs, by a sweep.

One variant runs under the experiment's load at a series of pool sizes per worker (default
1, 2, 4, 8, 16, 32; max_overflow 0), each a fresh database and app (an experiment per size,
marked as points of one sweep in run.json). The report charts goodput and latency against pool
size and recommends the smallest size as good as the best (poolbench.analysis.pool_sweep).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from poolbench.errors import PoolbenchError
from poolbench.options import Overrides, add_fail_if, out_root

if TYPE_CHECKING:
    from poolbench.config.bench import Experiment

DEFAULT_SIZES = (1, 2, 4, 8, 16, 32)


def _sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        sizes = []
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError(f"comma-separated pool sizes of at least 1, got {text!r}")
    return sizes


def sweep_experiments(experiment: Experiment, variant: str, sizes: list[int]) -> list[Experiment]:
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
    parser.add_argument(
        "--config",
        type=Path,
        default=Path("scenarios/bench.toml"),
        help="bench file (default: scenarios/bench.toml)",
    )
    parser.add_argument("--experiment", help="whose load and settings (default: the first default)")
    parser.add_argument("--variant", default="after", help="the variant to size (default: after)")
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=list(DEFAULT_SIZES),
        help="pool sizes per worker (default: 1,2,4,8,16,32)",
    )
    parser.add_argument("--quick", action="store_true", help="the bench file's quick load")
    parser.add_argument("--repeats", type=int, help="runs per size")
    parser.add_argument("--database-url", help="use this PostgreSQL instead of an embedded one")
    parser.add_argument("--out", type=out_root, default=Path("results"), help="results root")
    parser.add_argument("--no-report", action="store_true", help="skip the report at the end")
    add_fail_if(parser)


def run(args: argparse.Namespace) -> int:
    from poolbench.config.bench import select
    from poolbench.run.command import checked_config, run_and_report

    config = checked_config(args)
    if args.variant not in config.variants:
        raise PoolbenchError(
            f"unknown variant {args.variant!r}: "
            f"valid variants are {', '.join(sorted(config.variants))}"
        )
    base = select(config, Overrides.from_args(args, thresholds=False))[0]
    if base.load.shape == "spike":
        raise PoolbenchError(
            "a sweep needs a steady window: use an experiment with shape steady or ramp"
        )
    experiments = sweep_experiments(base, args.variant, args.sizes)
    return run_and_report(config, experiments, args)
