"""Command-line options more than one command takes: their types and their flags.

Kept out of `cli` so that the commands' own modules (run, size, report, compare) can add
them without importing the command line's entry point.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
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


# --------------------------------------------------------------------------- overrides

# Each override of an experiment's setting: its field here, the experiment setting it
# replaces ("section.key"), and the flag that gives it, which an error about the value names.
SETTING_FLAGS: dict[str, tuple[str, str]] = {
    "repeats": ("repeats", "--repeats"),
    "load_processes": ("load.processes", "--load-processes"),
    "locust_workers": ("load.locust_workers", "--locust-workers"),
    "locust_workers_timeout_s": ("load.locust_workers_timeout_s", "--locust-workers-timeout"),
    "locust_master_bind": ("load.locust_master_bind", "--locust-master-bind"),
    "soak_s": ("phases.soak_s", "--soak"),
    "pg_bindir": ("postgres.bindir", "--pg-bindir"),
}


@dataclass(frozen=True)
class Overrides:
    """What the command line changes in the bench file's choice of experiments and settings.

    Built once from a command's parsed options (`from_args`) and passed whole to
    `poolbench.config.bench.select`; a field left at its default changes nothing.
    """

    experiments: tuple[str, ...] = ()  # --experiment: else the file's defaults
    variants: tuple[str, ...] = ()  # --variants (or --variant): else each experiment's own
    quick: bool = False  # --quick: the first default experiment, the file's [quick] table
    fail_if: tuple[str, ...] = ()  # --fail-if: checked against the chosen variants
    repeats: int | None = None
    load_processes: int | None = None
    locust_workers: int | None = None
    locust_workers_timeout_s: float | None = None
    locust_master_bind: str | None = None
    soak_s: float | None = None
    pg_bindir: str | None = None  # made absolute by from_args

    @classmethod
    def from_args(cls, args: argparse.Namespace, *, thresholds: bool = True) -> Overrides:
        """The overrides a command's options give; an option the command lacks is not given.

        `thresholds=False`: the command checks its --fail-if itself, later (`poolbench size`).
        """
        given = vars(args)
        experiments = given.get("experiments") or [given.get("experiment")]
        variants = given.get("variants") or [given.get("variant")]
        # each setting from its flag's argparse destination: --locust-workers-timeout → …_timeout
        settings = {
            name: given.get(flag.removeprefix("--").replace("-", "_"))
            for name, (_, flag) in SETTING_FLAGS.items()
        }
        bindir = settings["pg_bindir"]  # relative to here, not to the bench file's folder
        settings["pg_bindir"] = str(Path(bindir).resolve()) if bindir else None
        return cls(
            experiments=tuple(name for name in experiments if name),
            variants=tuple(name for name in variants if name),
            quick=bool(given.get("quick")),
            fail_if=tuple(given.get("fail_if") or ()) if thresholds else (),
            **settings,
        )

    def settings(self) -> list[tuple[str, object, str]]:
        """The experiment settings given: ("section.key", value, flag), in SETTING_FLAGS order."""
        given = []
        for name, (setting, flag) in SETTING_FLAGS.items():
            value = getattr(self, name)
            if value is not None:
                given.append((setting, value, flag))
        return given
