"""The `poolbench` command: run, report, watch, lint, ui, clean.

Every user-facing failure is a PoolbenchError, printed as one line with a non-zero exit;
Ctrl-C and SIGTERM unwind through the same cleanup (exit 130), so no child is left.
Everything printed goes through poolbench.redact first: the URL given with --database-url
(or DATABASE_URL) is registered as a secret before anything else happens.

Exit codes: 0 success; 1 a run with a failed variant or a file it could not write (`run`), a
finding (`lint`), something left behind (`clean`); 2 bad input (PoolbenchError); 3 a
threshold breached; 4 damaged data (`report`, see docs/results.md); 130 interrupted.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import math
import os
import signal
import sys
import traceback
from pathlib import Path

from poolbench import __version__, redact
from poolbench.errors import PoolbenchError
from poolbench.files import results_root_arg

EXIT_VARIANT_FAILED = 1
EXIT_INTERRUPTED = 130
DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def _names(text: str) -> list[str]:
    """A comma-separated list of names, at least one."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("needs at least one variant name, e.g. before,after")
    return names


def _count(text: str) -> int:
    """A whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def _duration(text: str) -> float:
    """Seconds, or a number with s, m or h: 300, 90s, 10m, 1h."""
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        value = float(number) * units[unit]
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(
            f"a positive duration such as 300, 10m or 1h, got {text!r}"
        )
    return value


def _load_overrides(args: argparse.Namespace) -> dict:
    """The load settings given on the command line (poolbench.config.LoadSettings fields)."""
    given = {
        "locust_workers": args.locust_workers,
        "locust_workers_timeout_s": args.locust_workers_timeout,
        "locust_master_bind": args.locust_master_bind,
    }
    return {key: value for key, value in given.items() if value is not None}


def add_fail_if(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fail-if", action="append", metavar="EXPR", default=[],
                        help="a threshold, e.g. 'after.p95_ms > 1.2 * before.p95_ms' (repeatable): "
                        "a breach exits with code 3")  # fmt: skip
    parser.add_argument("--strict-thresholds", action="store_true",
                        help="an inconclusive threshold (untested difference) fails too")  # fmt: skip


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=Path("scenarios/bench.toml"),
                        help="bench file (default: scenarios/bench.toml)")  # fmt: skip
    parser.add_argument("--experiment", action="append", dest="experiments", metavar="NAME",
                        help="experiment to run (repeatable; default: the file's defaults)")  # fmt: skip
    parser.add_argument("--variants", type=_names,
                        help="comma-separated variants, e.g. before,after")  # fmt: skip
    parser.add_argument("--quick", action="store_true",
                        help="a small, fast run (pool_size=4, ~25 s per variant)")  # fmt: skip
    parser.add_argument("--repeats", type=int, help="runs per variant (alternating order)")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"),
                        help="use this PostgreSQL instead of an embedded one (superuser or pg_monitor + CREATEROLE/CREATEDB)")  # fmt: skip
    parser.add_argument("--pg-bindir", metavar="DIR",
                        help="run the throwaway PostgreSQL from these binaries (e.g. /usr/lib/postgresql/15/bin: every contrib extension)")  # fmt: skip
    parser.add_argument("--load-processes", type=int,
                        help="Locust processes (passed as --processes)")  # fmt: skip
    parser.add_argument("--locust-workers", type=_count, metavar="N",
                        help="a Locust master waits for N workers started separately (prints their command)")  # fmt: skip
    parser.add_argument("--locust-workers-timeout", type=float, metavar="S",
                        help="seconds to wait for the workers to join (default 120)")  # fmt: skip
    parser.add_argument("--locust-master-bind", metavar="ADDRESS",
                        help="where the Locust master listens (default 127.0.0.1; exposing it is deliberate)")  # fmt: skip
    parser.add_argument("--soak", type=_duration, metavar="DURATION",
                        help="continue the load at constant users this long (e.g. 10m): the leak test's window")  # fmt: skip
    parser.add_argument("--out", type=results_root_arg, default=Path("results"),
                        help="results root (default: results/)")  # fmt: skip
    parser.add_argument("--no-report", action="store_true", help="skip the report at the end")
    add_fail_if(parser)


def _cmd_run(args: argparse.Namespace) -> int:
    from poolbench.clean import clean_before_run
    from poolbench.config import load_config, parse_fail_if, select
    from poolbench.results import check_free_space, check_results_root
    from poolbench.runner import Runner

    parse_fail_if(args.fail_if, "--fail-if")
    check_results_root(args.out)
    config = load_config(args.config)
    experiments = select(
        config,
        experiments=args.experiments,
        variants=args.variants,
        quick=args.quick,
        repeats=args.repeats,
        load_processes=args.load_processes,
        load=_load_overrides(args),
        soak_s=args.soak,
        pg_bindir=str(Path(args.pg_bindir).resolve()) if args.pg_bindir else None,
        fail_if=args.fail_if,
    )
    clean_before_run(args.out, args.database_url)
    check_free_space(args.out, experiments)
    runner = Runner(config, experiments, args.out, ["poolbench", *sys.argv[1:]], args.database_url)
    record = runner.run()
    print(f"results: {record.run_dir}")
    gated = report_run(record.run_dir, args.no_report, args.fail_if, args.strict_thresholds)
    if record.data["status"] != "complete":
        print(f"poolbench run: {record.data['status']}: {record.data['error']}", file=sys.stderr)
    return EXIT_VARIANT_FAILED if record.data["status"] == "failed" else gated


def report_run(
    run_dir: Path, skip_report: bool, fail_if: list[str] | None = None, strict: bool = False
) -> int:
    """The short text summary, then the report; both from one analysis of the run. Thresholds
    are checked (and their breach is the exit code) even when the report is skipped."""
    from poolbench.analysis import analyse
    from poolbench.gates import gate_exit, print_gates
    from poolbench.report import apply_thresholds, build_report
    from poolbench.results import load_run
    from poolbench.summary_text import text_summary

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


PLUGGED = {
    "report": ("poolbench.report", "write summary.json, report.md/.html and charts for a run"),
    "compare": ("poolbench.comparison", "compare runs: the same table across results folders"),
    "size": ("poolbench.size", "measure the pool size a variant needs: a sweep of sizes"),
    "watch": ("poolbench.watch", "sample a PostgreSQL (and app pids) live, without load"),
    "lint": ("poolbench.lint", "list every SQLAlchemy engine a codebase creates"),
    "ui": ("poolbench.ui", "serve one variant under Locust's web UI, with a live Database tab"),
    "clean": ("poolbench.clean", "stop and remove what runs killed hard left behind"),
}


def _plug(subparsers: argparse._SubParsersAction, name: str, wanted: str | None) -> None:
    """Register a subcommand whose module offers add_arguments(parser) and run(args).

    Only the command being run has its module imported (report and compare pull in pandas,
    scipy and matplotlib, ~2 s): the others are listed by name and help alone.
    """
    module, help_text = PLUGGED[name]
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    if name == wanted:
        mod = importlib.import_module(module)
        mod.add_arguments(parser)
        parser.set_defaults(func=mod.run)


def _wanted(argv: list[str]) -> str | None:
    """The subcommand named on the command line: the first word that is not an option."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="poolbench",
        description="Compare app architectures against a real PostgreSQL under Locust load.",
    )
    parser.add_argument("--version", action="version", version=f"poolbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run experiments and record them under results/",
                         description="Run experiments and record them under results/.")  # fmt: skip
    _add_run_arguments(run)
    run.set_defaults(func=_cmd_run)
    wanted = _wanted(sys.argv[1:] if argv is None else argv)
    for name in PLUGGED:
        _plug(sub, name, wanted)
    return parser


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    redact.install()
    redact.register_url(os.environ.get("DATABASE_URL"))
    args = build_parser(argv).parse_args(argv)
    redact.register_url(getattr(args, "database_url", None))
    try:
        return int(args.func(args) or 0)
    except PoolbenchError as exc:  # prefixed as argparse prefixes a subcommand's errors
        print(redact.mask_text(f"poolbench {args.command}: error: {exc}"), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("poolbench: interrupted; children stopped, run marked partial", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:
        if exc.errno not in DISK_ERRORS:
            return _bug()
        # a write no caller turned into a WriteFailed (poolbench.files): still one line
        where = exc.filename or "a file"
        print(redact.mask_text(f"poolbench {args.command}: error: cannot write {where}: "
                               f"{exc.strerror}"), file=sys.stderr)  # fmt: skip
        return EXIT_VARIANT_FAILED
    except Exception:
        return _bug()


def _bug() -> int:
    """A bug: its traceback helps, its secrets must not show."""
    print(redact.mask_text(traceback.format_exc()), file=sys.stderr, end="")
    return 1


if __name__ == "__main__":
    sys.exit(main())
