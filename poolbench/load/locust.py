"""Drive Locust as a subprocess: the one place that builds Locust command lines.

Every command loads the user's locustfile with poolbench's plugin beside it
(`-f USER_FILE,poolbench/load/plugin.py`): the user's file gets only `load.locust_args`, the
plugin gets the `--poolbench-*` options (shape, request records, status file). Headless for
`poolbench run` (warm-up, load phase, workers), with its web UI for `poolbench ui`. Locust
runs in its own process group (its `--processes` workers included) so that a stop or Ctrl-C
of the harness takes the whole tree down at once. A master (for `--processes` or workers started on
other machines) listens on 127.0.0.1 at a free port unless told otherwise.
"""

from __future__ import annotations

import csv
import json
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from poolbench.config.bench import LoadSettings
from poolbench.errors import PoolbenchError
from poolbench.infra.masked_log import MaskedLog, log_tail
from poolbench.infra.process_group import stop_group
from poolbench.load import shapes
from poolbench.load.status import StatusFile
from poolbench.redact import mask_text
from poolbench.results.requests import REQUESTS_FILE

STOP_GRACE_S = 5.0
PLUGIN = Path(__file__).resolve().with_name("plugin.py")
STATUS_FILE = "load.json"
START_TIMEOUT_S = 60.0  # from launch to the first user, when no workers are awaited
LOOPBACK = ("http://127.", "http://localhost", "http://[::1]")
MAX_QUOTED = 3  # exceptions (and failures) quoted when a load measured nothing


@dataclass(frozen=True)
class LoadOutputs:
    """Where a load phase's Locust writes: CSV/JSON stats, every request, its status file."""

    dir: Path

    @property
    def csv_prefix(self) -> Path:
        return self.dir / "locust"

    @property
    def status(self) -> Path:
        return self.dir / STATUS_FILE


@dataclass
class LocustProcess:
    """A running Locust: its process, where its files go, and its log (masked on the way)."""

    proc: subprocess.Popen[bytes]
    log: MaskedLog
    outputs: LoadOutputs | None = None

    @property
    def log_path(self) -> Path:
        return self.log.path

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
        """SIGTERM the whole group (--processes workers too), SIGKILL what is left; then the
        log is complete."""
        stop_group(self.proc, STOP_GRACE_S)
        self.log.close()

    def progress(self) -> dict[str, float]:
        """Users, requests/s and totals from the last line Locust wrote (empty before)."""
        return latest_history(self.outputs.csv_prefix) if self.outputs else {}

    def status(self) -> StatusFile:
        """The plugin's status file (real start and stop, workers, shape); empty before."""
        if self.outputs is None:
            return {}
        try:
            data = json.loads(self.outputs.status.read_text())
        except (OSError, ValueError):
            return {}
        return cast(StatusFile, data) if isinstance(data, dict) else {}

    def wait_started(self, load: LoadSettings, tick: Callable[[], None]) -> float:
        """When the test really began (the plugin's test_start), waiting for workers if any.

        Locust exiting first (it gives up on workers after `locust_workers_timeout_s`), or not
        starting in time, is a one-line error that says why.
        """
        expected = load.locust_workers
        timeout = START_TIMEOUT_S + (load.locust_workers_timeout_s if expected else 0.0)
        deadline = time.monotonic() + timeout
        while (started := self.status().get("test_start")) is None:
            code = self.proc.poll()
            if code is not None or time.monotonic() > deadline:
                joined = self.status().get("workers", 0)
                self.stop()
                if expected and joined < expected:
                    raise PoolbenchError(
                        f"only {joined} of {expected} Locust workers joined within "
                        f"{load.locust_workers_timeout_s:g} s; start each with the command "
                        f"printed above (see {self.log_path})"
                    )
                raise PoolbenchError(f"Locust {self.ended(code)} before the load began")
            tick()
            time.sleep(0.2)
        return float(started)

    def ended(self, code: int | None) -> str:
        """`exited with code N: <last log line>` (or `did not start`), for error messages."""
        what = f"exited with code {code}" if code is not None else "did not start in time"
        tail = log_tail(self.log_path, 1, prefer="error", chars=300) or "empty log"
        return f"{what}: {tail} (see {self.log_path})"


# --------------------------------------------------------------------------- command lines


def _files(load: LoadSettings, *plugins: Path) -> str:
    """The -f value: the user's locustfile first (its shape, if any, wins), then the plugins."""
    return ",".join(str(f) for f in (Path(load.locustfile).resolve(), PLUGIN, *plugins))


def _locust(load: LoadSettings, host: str, files: str, users: int) -> list[str]:
    """What every command shares: loopback target, users and rate, the locustfile's own args."""
    if not host.startswith(LOOPBACK):
        raise PoolbenchError(f"refusing to load {host}: poolbench targets loopback only")
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        files,
        "--host",
        host,
        "-u",
        str(users),
        "-r",
        str(load.spawn_rate),
        "--exit-code-on-error",
        "0",
        "--stop-timeout",
        "2",
        *load.locust_args,
    ]


def _base(load: LoadSettings, host: str, seconds: float, users: int) -> list[str]:
    return [
        *_locust(load, host, _files(load), users),
        "--headless",
        "-t",
        f"{max(1, round(seconds))}s",
        "--only-summary",
    ]


def _recorded(outputs: LoadOutputs) -> list[str]:
    """Every request, the status file, and Locust's statistics as CSV and JSON."""
    return [
        "--poolbench-requests-out",
        str(outputs.dir / REQUESTS_FILE),
        "--poolbench-status-out",
        str(outputs.status),
        "--csv",
        str(outputs.csv_prefix),
        "--csv-full-history",
        "--json-file",
        str(outputs.csv_prefix),  # Locust appends .json
    ]


def _master(load: LoadSettings, port: int) -> list[str]:
    """A master on `load.locust_master_bind` at `port`: for --processes, or remote workers."""
    bind = ["--master-bind-host", load.locust_master_bind, "--master-bind-port", str(port)]
    if load.locust_workers:
        return [
            "--master",
            "--expect-workers",
            str(load.locust_workers),
            "--expect-workers-max-wait",
            f"{load.locust_workers_timeout_s:g}",
            *bind,
        ]
    if load.processes > 1:  # the forked workers connect to --master-port
        return ["--processes", str(load.processes), *bind, "--master-port", str(port)]
    return []


def warmup_command(load: LoadSettings, host: str, seconds: float, users: int) -> list[str]:
    """Plain Locust, a few users, nothing recorded: no shape, no request file, no workers."""
    return _base(load, host, seconds, users)


def load_command(
    load: LoadSettings, host: str, seconds: float, outputs: LoadOutputs, master_port: int
) -> list[str]:
    """The load phase: poolbench's shape, every request recorded, stats to CSV and JSON."""
    return [
        *_base(load, host, seconds, load.users),
        "--poolbench-shape",
        load.shape,
        "--poolbench-ramp-s",
        f"{load.ramp_s:g}",
        *_recorded(outputs),
        *_master(load, master_port),
    ]


def web_ui_command(
    load: LoadSettings,
    host: str,
    outputs: LoadOutputs,
    web_port: int,
    master_port: int,
    plugins: tuple[Path, ...] = (),
    plugin_args: tuple[str, ...] = (),
) -> list[str]:
    """Locust's web UI on 127.0.0.1:`web_port`, every request recorded, for `poolbench ui`.

    A person starts, changes and stops the users from the page, so poolbench's shape is not
    applied and there is no run time; `load.users` only fills in the form. `plugins` are more
    Locust files loaded after poolbench's plugin (the Database tab), `plugin_args` their options.
    """
    return [
        *_locust(load, host, _files(load, *plugins), load.users),
        "--web-host",
        "127.0.0.1",
        "--web-port",
        str(web_port),
        *_recorded(outputs),
        *_master(load, master_port),
        *plugin_args,
    ]


def worker_command(load: LoadSettings, master_host: str, master_port: int) -> list[str]:
    """What each worker machine runs to join the master (this machine's paths)."""
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        _files(load),
        "--worker",
        "--master-host",
        master_host,
        "--master-port",
        str(master_port),
    ]


def worker_host(load: LoadSettings) -> str:
    """The address workers dial: loopback (this machine, or an SSH tunnel) unless exposed."""
    bind = load.locust_master_bind
    if bind in ("*", "0.0.0.0", "::", ""):
        import socket

        return socket.getfqdn()
    return bind


def shell(cmd: list[str]) -> str:
    return shlex.join(cmd)


def hold_warning(load: LoadSettings, load_s: float) -> str | None:
    """A warning when all users run for less than `shapes.MIN_HOLD_S` of the load phase."""
    hold = shapes.hold_s(load.shape, load.users, load_s, load.ramp_s, load.spawn_rate)
    if hold >= shapes.MIN_HOLD_S:
        return None
    return (
        f"the {load.shape} load holds all {load.users} users for only {hold:.0f} s "
        f"(< {shapes.MIN_HOLD_S:.0f} s): throughput and latency compare poorly on so short a window"
    )


def load_record(status: StatusFile, load: LoadSettings, load_s: float) -> dict[str, Any]:
    """What variant.json keeps of the load: real start/stop, workers, shape, full-load window."""
    record = {
        key: status.get(key)
        for key in ("launched", "test_start", "test_stop", "tests", "workers", "shape", "requests")
    }
    shape = status.get("shape") or {}
    start = status.get("test_start")
    if start is not None and shape.get("applied"):
        begin, end = shapes.full_load_window(
            load.shape, load.users, load_s, load.ramp_s, load.spawn_rate
        )
        stop = status.get("test_stop") or start + end
        record["full_load"] = [start + begin, min(start + end, stop)]
    else:
        record["full_load"] = None  # the user's own shape: poolbench cannot say
    return record


def _csv_rows(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8", errors="replace") as handle:
            return list(csv.DictReader(handle))
    except OSError:
        return []


_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<function>\S+)')


def _exception(row: dict[str, str]) -> str:
    """An exception of locust_exceptions.csv as its message and where it was raised (the last
    frame of its traceback: Locust records no exception type)."""
    frames = list(_FRAME.finditer(row.get("Traceback") or ""))
    message = (row.get("Message") or "").strip() or "an exception"
    if not frames:
        return message
    where = frames[-1]
    return f"{message} (in {where['function']}, {Path(where['file']).name}:{where['line']})"


def load_problem(outputs: LoadOutputs) -> str | None:
    """Why a load phase measured nothing of the app, in one line, or None: no request made
    (its users failed, e.g. in `on_start`) or every request failed; with the first exceptions
    its users raised (locust_exceptions.csv) and failures (locust_failures.csv)."""
    prefix = outputs.csv_prefix
    total = next(
        (r for r in _csv_rows(Path(f"{prefix}_stats.csv")) if r.get("Name") == "Aggregated"), None
    )
    if total is None:
        return None  # no statistics (Locust killed): the watchdog's event says what happened
    requests, failures = _num(total.get("Request Count")), _num(total.get("Failure Count"))
    if requests > 0 and failures < requests:
        return None
    what = "the load made no requests" if requests == 0 else f"all {requests:.0f} requests failed"
    seen = [
        f"{_exception(r)} ×{r.get('Count', '?')}"
        for r in _csv_rows(Path(f"{prefix}_exceptions.csv"))[:MAX_QUOTED]
    ]
    seen += [
        f"{r.get('Method', '')} {r.get('Name', '')}: {r.get('Error', '').strip()} "
        f"×{r.get('Occurrences', '?')}"
        for r in _csv_rows(Path(f"{prefix}_failures.csv"))[:MAX_QUOTED]
    ]
    first = "; ".join(mask_text(x[:200]) for x in seen) or "no exception recorded"
    return f"{what}: {first} (see {prefix.name}_exceptions.csv, _failures.csv and locust.log)"


# --------------------------------------------------------------------------- processes


def start_locust(cmd: list[str], log_path: Path, outputs: LoadOutputs | None) -> LocustProcess:
    """Locust with its output appended to `log_path` through `MaskedLog`, as the app's is: the
    warm-up and the load share the file."""
    log = MaskedLog(log_path, mode="ab")
    try:
        proc = log.spawn(cmd, what="locust")
    except OSError as exc:
        raise PoolbenchError(f"cannot start Locust: {exc}") from None
    return LocustProcess(proc, log, outputs)


def run_locust(cmd: list[str], log_path: Path, timeout: float) -> None:
    """Run a phase to its end; the process is gone whatever happens; failure is an error."""
    locust = start_locust(cmd, log_path, None)
    try:
        code = locust.wait(timeout)
    finally:
        locust.stop()
    if code != 0:
        raise PoolbenchError(f"Locust {locust.ended(code)}")


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
                "ts": _num(row.get("Timestamp")),  # what time these figures describe
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
