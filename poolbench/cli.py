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
import os
import signal
import sys
import traceback

from poolbench import __version__, redact
from poolbench.errors import PoolbenchError

EXIT_FAILED = 1  # a run that could not finish (here: a write the disk refused)
EXIT_INTERRUPTED = 130
DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


PLUGGED = {
    "run": ("poolbench.run.command", "run experiments and record them under results/"),
    "report": ("poolbench.report", "write summary.json, report.md/.html and charts for a run"),
    "compare": (
        "poolbench.report.compare_runs",
        "compare runs: the same table across results folders",
    ),
    "size": ("poolbench.run.size_sweep", "measure the pool size a variant needs: a sweep of sizes"),
    "watch": ("poolbench.collector.watch", "sample a PostgreSQL (and app pids) live, without load"),
    "lint": ("poolbench.lint.census", "list every SQLAlchemy engine a codebase creates"),
    "ui": ("poolbench.ui", "serve one variant under Locust's web UI, with a live Database tab"),
    "clean": ("poolbench.run.clean", "stop and remove what runs killed hard left behind"),
}


def _plug(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str, wanted: str | None
) -> None:
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


# Commands that compute in this one process on small matrices (fits of a few columns): numpy's
# OpenBLAS threads, one per core, only spin there. ~0.2 s of CPU per `poolbench report` of an
# hour's run, the same figures. Set before numpy is first imported; a value you set is kept.
SINGLE_THREADED_BLAS = {"report", "compare"}


def single_threaded_blas(command: str | None) -> None:
    """One OpenBLAS thread for a command that gains nothing from more (SINGLE_THREADED_BLAS)."""
    if command in SINGLE_THREADED_BLAS:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


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
    wanted = _wanted(sys.argv[1:] if argv is None else argv)
    single_threaded_blas(wanted)
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
        print(
            redact.mask_text(
                f"poolbench {args.command}: error: cannot write {where}: {exc.strerror}"
            ),
            file=sys.stderr,
        )
        return EXIT_FAILED
    except Exception:
        return _bug()


def _bug() -> int:
    """A bug: its traceback helps, its secrets must not show."""
    print(redact.mask_text(traceback.format_exc()), file=sys.stderr, end="")
    return 1


if __name__ == "__main__":
    sys.exit(main())
