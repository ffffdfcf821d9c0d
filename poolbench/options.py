"""Command-line options more than one command takes: their types and their flags.

Kept out of `cli` so that the commands' own modules (run, size, report, compare) can add
them without importing the command line's entry point.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def names(text: str) -> list[str]:
    """A comma-separated list of names, at least one."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("needs at least one variant name, e.g. before,after")
    return names


def count(text: str) -> int:
    """A whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def duration(text: str) -> float:
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


def out_root(text: str) -> Path:
    """The results root: a folder poolbench can write in (created if need be), never ""."""
    if not text.strip():
        raise argparse.ArgumentTypeError('must name a folder, e.g. results (not "")')
    return Path(text)


def add_fail_if(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--fail-if",
        action="append",
        metavar="EXPR",
        default=[],
        help="a threshold, e.g. 'after.p95_ms > 1.2 * before.p95_ms' (repeatable): "
        "a breach exits with code 3",
    )
    parser.add_argument(
        "--strict-thresholds",
        action="store_true",
        help="an inconclusive threshold (untested difference) fails too",
    )
