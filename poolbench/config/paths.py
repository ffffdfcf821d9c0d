"""Paths a bench file names, checked when it is read, so a wrong one fails before a run."""

from __future__ import annotations

import os
from pathlib import Path

from poolbench.errors import PoolbenchError

SERVER_PROGRAMS = ("initdb", "pg_ctl", "postgres")


def check_bindir(bindir: Path) -> Path:
    """A directory holding initdb, pg_ctl and postgres, as an absolute path; else one line."""
    bindir = bindir.expanduser().resolve()
    missing = [p for p in SERVER_PROGRAMS if not os.access(bindir / p, os.X_OK)]
    if missing:
        raise PoolbenchError(
            f"PostgreSQL bindir {bindir} has no executable {', '.join(missing)}: point it at the "
            "directory holding initdb and pg_ctl (e.g. /usr/lib/postgresql/15/bin; "
            "`pg_config --bindir` prints it)"
        )
    return bindir
