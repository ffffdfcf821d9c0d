"""Drive Locust headless as a subprocess and read its progress from its own CSV files.

Locust runs in its own process group (its `--processes` workers included) so that a
stop or Ctrl-C of the harness can take the whole tree down at once.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from poolbench.config import LoadSettings
from poolbench.errors import PoolbenchError
from poolbench.process_group import stop_group

STOP_GRACE_S = 5.0


@dataclass
class LocustProcess:
    """A running Locust: its process, where its CSV files go, and its log."""

    proc: subprocess.Popen
    csv_prefix: Path | None
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise PoolbenchError(
                f"Locust did not finish within {timeout:.0f} s; see {self.log_path}"
            ) from None

    def stop(self) -> None:
        """SIGTERM the whole group (--processes workers too), SIGKILL what is left."""
        stop_group(self.proc, STOP_GRACE_S)

    def progress(self) -> dict[str, float]:
        """Users, requests/s and totals from the last line Locust wrote (empty before)."""
        return latest_history(self.csv_prefix) if self.csv_prefix else {}


def locust_command(
    load: LoadSettings,
    host: str,
    duration_s: float,
    *,
    users: int | None = None,
    shape: str | None = None,
    csv_prefix: Path | None = None,
    json_path: Path | None = None,
) -> list[str]:
    """The `locust` command line for one phase; loopback hosts only."""
    if not host.startswith(("http://127.", "http://localhost", "http://[::1]")):
        raise PoolbenchError(f"refusing to load {host}: poolbench targets loopback only")
    cmd = [
        sys.executable, "-m", "locust", "-f", load.locustfile, "--headless",
        "--host", host, "-u", str(users or load.users), "-r", str(load.spawn_rate),
        "-t", f"{max(1, round(duration_s))}s", "--shape", shape or load.shape,
        "--hold-ms", str(load.hold_ms), "--only-summary", "--exit-code-on-error", "0",
        "--stop-timeout", "2",
    ]  # fmt: skip
    if load.processes > 1:
        cmd += ["--processes", str(load.processes)]
    if csv_prefix is not None:
        cmd += ["--csv", str(csv_prefix), "--csv-full-history"]
    if json_path is not None:
        cmd += ["--json-file", str(json_path)]  # written as <json_path>.json
    return cmd


def start_locust(cmd: list[str], log_path: Path, csv_prefix: Path | None) -> LocustProcess:
    log = log_path.open("ab")
    try:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    except OSError as exc:
        raise PoolbenchError(f"cannot start Locust: {exc}") from None
    finally:
        log.close()
    return LocustProcess(proc, csv_prefix, log_path)


def run_locust(cmd: list[str], log_path: Path, csv_prefix: Path | None, timeout: float) -> int:
    """Run a phase to its end; the process is gone whatever happens."""
    locust = start_locust(cmd, log_path, csv_prefix)
    try:
        return locust.wait(timeout)
    finally:
        locust.stop()


def latest_history(csv_prefix: Path) -> dict[str, float]:
    """The newest 'Aggregated' row of `<prefix>_stats_history.csv`, cheaply (tail only)."""
    path = Path(f"{csv_prefix}_stats_history.csv")
    try:
        with path.open("rb") as handle:
            header = handle.readline().decode()
            handle.seek(max(0, path.stat().st_size - 4096))
            lines = handle.read().decode(errors="replace").splitlines()
    except OSError:
        return {}
    names = next(csv.reader([header]), [])
    for line in reversed(lines):
        row = dict(zip(names, next(csv.reader([line]), []), strict=False))
        if row.get("Name") == "Aggregated":
            return {
                "users": _num(row.get("User Count")),
                "rps": _num(row.get("Requests/s")),
                "requests": _num(row.get("Total Request Count")),
                "failures": _num(row.get("Total Failure Count")),
                "p95_ms": _num(row.get("95%")),
            }
    return {}


def _num(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "", "N/A") else float("nan")
    except ValueError:
        return float("nan")
