"""`poolbench ui`: watch the database's side live, inside Locust's web UI.

    poolbench ui [--variant NAME] [--experiment NAME] [--config FILE] [--database-url URL]
                 [--port PORT] [--out DIR] [--no-report]

Starts PostgreSQL (embedded unless --database-url), the variant's app and the collector, then
Locust with its web UI on 127.0.0.1 (a free port unless --port) and a Database tab: connections
per engine and state, free slots, PostgreSQL's PSS and the app's USS, and the model's ceiling,
refreshed every second. Ctrl-C stops everything and leaves a results folder like a run's,
so `poolbench report` works on it.

Modules: `session` (the session), `feed` (poolbench's process → the tab), `webtab` (the tab's
routes in Locust's Flask app), `locust_db_tab` (the Locust plugin file), `static/` (the tab's
script).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from poolbench.config.bench import DEFAULT_CONFIG
from poolbench.errors import PoolbenchError
from poolbench.options import Overrides, out_root

DEFAULT_VARIANT = "before"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--variant",
        default=DEFAULT_VARIANT,
        help=f"the variant to serve (default: {DEFAULT_VARIANT})",
    )
    parser.add_argument(
        "--experiment",
        metavar="NAME",
        help="whose settings to use (default: the bench file's first default)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help=f"bench file (default: {DEFAULT_CONFIG})",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="use this PostgreSQL instead of an embedded one",
    )
    parser.add_argument(
        "--port", type=int, help="the web UI's port on 127.0.0.1 (default: a free one)"
    )
    parser.add_argument(
        "--out", type=out_root, default=Path("results"), help="results root (default: results/)"
    )
    parser.add_argument("--no-report", action="store_true", help="skip the report at the end")


def run(args: argparse.Namespace) -> int:
    from poolbench.config.bench import load_config, select
    from poolbench.infra.postgres import port_is_free
    from poolbench.results.run_folder import check_results_root
    from poolbench.run import stack
    from poolbench.ui.session import UiContext, UiSession

    check_results_root(args.out)
    config = load_config(args.config)
    experiments = select(config, Overrides.from_args(args))
    if args.port is not None and not (0 < args.port < 65536 and port_is_free(args.port)):
        raise PoolbenchError(f"port {args.port} on 127.0.0.1 is not free: choose another --port")
    experiment = stack.as_recorded(experiments[:1], args.database_url)[0]
    session = UiSession(
        UiContext(
            config,
            experiment,
            config.variants[args.variant],
            args.out,
            ("poolbench", *sys.argv[1:]),
            database_url=args.database_url,
            port=args.port,
        )
    )
    record = session.run()
    print(f"results: {record.run_dir}")
    from poolbench.report import report_run  # the same summary and report as `poolbench run`

    return report_run(record.run_dir, args.no_report)
