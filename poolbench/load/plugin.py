"""poolbench's Locust plugin, loaded beside any locustfile: `locust -f USER_FILE,<this file>`.

A user's locustfile stays plain Locust: poolbench's options live here, prefixed `--poolbench-`,
so the user's file never sees an option it does not know. The plugin brings:

- the load shapes of `poolbench.load.shapes` (`--poolbench-shape steady|ramp|spike`,
  `--poolbench-ramp-s`), driven by Locust's -u, -r and -t. Without `--poolbench-shape` Locust
  runs as usual. When the user's locustfile defines its own LoadTestShape, that shape drives the
  users (Locust takes the first file's), poolbench's is not applied and says so in the log and
  the status file, and the test still ends at -t;
- a record of every request (`--poolbench-requests-out`, format in poolbench/results/requests.py),
  written by the process that owns the test: a local Locust, or the master, to which workers
  send their requests with Locust's own stats reports (`report_to_master` / `worker_report`);
- a status file (`--poolbench-status-out`, JSON): when the test really started and stopped
  (after the workers joined, not when Locust was launched), the workers seen, the shape applied
  and the number of requests recorded. The runner reads it for the load phase's timestamps.

In Locust's web UI (`poolbench ui`) a person may run several tests in one Locust: the status
file then describes the last one (and counts them), and so does `requests.bin`, the earlier
tests' requests being kept numbered beside it (see `RequestFiles`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Unpack

import gevent
import locust.stats
import numpy as np
from locust import LoadTestShape, events
from locust.argument_parser import LocustArgumentParser
from locust.env import Environment
from locust.runners import MasterRunner, Runner, WorkerRunner

from poolbench.files import atomic_write
from poolbench.infra.process_group import tie_to_parent
from poolbench.load import shapes
from poolbench.load.status import ShapeStatus, StatusFile
from poolbench.results.requests import TRANSFER, RequestWriter, move_requests, numbered

logger = logging.getLogger("poolbench")
# poolbench reads the stats history while the load runs (the watchdog, the live line): Locust
# flushes it only every 5 s or more by default, which left the count still for 6 s at a time
locust.stats.CSV_STATS_FLUSH_INTERVAL_SEC = 1
FLUSH_INTERVAL_S = 1.0
REPORT_KEY = "poolbench_requests"
_TIED = False  # _tie_forked_workers ran in this process


class PoolbenchShape(LoadTestShape):
    """Users over time from `--poolbench-shape`, -u and -t; ends the test at the end of -t."""

    use_common_options = True

    def tick(self) -> tuple[int, float] | None:
        assert self.runner is not None  # Locust sets the runner before it ticks a shape
        options = self.runner.environment.parsed_options
        assert options is not None  # the plugin's options exist: Locust's command line ran
        elapsed: float = self.get_run_time()  # type: ignore[no-untyped-call]  # unannotated in locust
        duration = float(options.run_time or math.inf)
        if elapsed >= duration:
            return None
        shape = shapes.SHAPES[options.poolbench_shape]
        users = shape(elapsed, options.num_users or 1, duration, options.poolbench_ramp_s)
        return users, options.spawn_rate or 1


def _tie_forked_workers() -> None:
    """Every process Locust forks from here (its `--processes` workers) dies with it.

    Locust, which dies with poolbench, forks its workers after reading its command line, and
    nothing else of theirs runs between the fork and their waiting for the master: a worker
    orphaned by a SIGKILLed poolbench waited 30-60 s for a master that was gone. SIGKILL: a
    worker has nothing to save, its requests are the master's.
    """
    global _TIED
    if _TIED:
        return
    _TIED = True
    master = os.getpid()
    os.register_at_fork(after_in_child=lambda: tie_to_parent(master, signal.SIGKILL))


@events.init_command_line_parser.add_listener  # type: ignore[untyped-decorator]  # locust's EventHook.add_listener is unannotated
def _add_options(parser: LocustArgumentParser) -> None:
    _tie_forked_workers()
    parser.add_argument(
        "--poolbench-shape",
        choices=sorted(shape.value for shape in shapes.SHAPES),
        default=None,
        include_in_web_ui=False,
        help="poolbench load shape (default: none, plain Locust)",
    )
    parser.add_argument(
        "--poolbench-ramp-s",
        type=float,
        default=0.0,
        include_in_web_ui=False,
        help="ramp shape: seconds to reach all users, then hold",
    )
    parser.add_argument(
        "--poolbench-requests-out",
        default=None,
        include_in_web_ui=False,
        help="record every request to this file (poolbench requests format)",
    )
    parser.add_argument(
        "--poolbench-status-out",
        default=None,
        include_in_web_ui=False,
        help="write the test's real start/stop and workers to this JSON file",
    )


class Recorder:
    """Buffers the requests of this process as TRANSFER rows until they are taken."""

    def __init__(self) -> None:
        self.keys: list[tuple[str, str]] = []
        self._codes: dict[tuple[str, str], int] = {}
        self._rows: list[tuple[float, float, int, bool, int]] = []
        self._users: dict[int, int] = {}  # greenlet → a small user number

    def on_request(
        self,
        request_type: object,
        name: object,
        response_time: float | None,
        exception: BaseException | None,
        start_time: float | None = None,
        **_: Any,
    ) -> None:
        key = (str(request_type), str(name))
        code = self._codes.get(key)
        if code is None:
            code = self._codes[key] = len(self.keys)
            self.keys.append(key)
        response = math.nan if response_time is None else float(response_time)
        if start_time is None:  # a custom client that does not say when it started
            start_time = time.time() - (0.0 if math.isnan(response) else response / 1000.0)
        # the request event fires in the greenlet of the user that made the request
        user = self._users.setdefault(id(gevent.getcurrent()), len(self._users))
        self._rows.append((start_time, response, code, exception is None, user))

    def take(self) -> np.ndarray:
        rows, self._rows = self._rows, []
        return np.array(rows, dtype=TRANSFER)


class Status:
    """The status file: written whole (temp file + rename) at every change."""

    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None
        self.data: StatusFile = {
            "launched": time.time(),
            "test_start": None,
            "test_stop": None,
            "tests": 0,
            "workers": 0,
            "shape": None,
            "requests": None,
        }

    def update(self, **values: Unpack[StatusFile]) -> None:
        self.data.update(values)
        if self.path is not None:
            atomic_write(self.path, json.dumps(self.data) + "\n")


def _shape_status(environment: Environment) -> ShapeStatus | None:
    """Whether poolbench's shape drives the users; never imposes it on a user's own shape."""
    assert environment.parsed_options is not None  # checked by _init
    requested = environment.parsed_options.poolbench_shape
    current = environment.shape_class
    ours = isinstance(current, PoolbenchShape)
    if not requested:
        if ours:  # loaded but not asked for: plain -u/-r/-t, as without the plugin
            environment.shape_class = None
        return None
    if current is None or ours:
        return {"requested": requested, "class": "PoolbenchShape", "applied": True}
    message = (
        f"poolbench: the locustfile defines its own load shape {type(current).__name__}; "
        f"it drives the users and --poolbench-shape {requested} is not applied"
    )
    logger.warning(message)
    return {
        "requested": requested,
        "class": type(current).__name__,
        "applied": False,
        "message": message,
    }


def _stop_at_run_time(environment: Environment) -> None:
    """Asked for a poolbench shape but the user's own drives the users: it may outlast -t
    (Locust ignores -t under a shape), and poolbench's phase has a length, so end it there."""
    options, shape = environment.parsed_options, environment.shape_class
    assert options is not None  # checked by _init
    if not options.poolbench_shape or isinstance(shape, PoolbenchShape | None):
        return
    if run_time := options.run_time:
        assert environment.runner is not None  # set before a test starts
        gevent.spawn_later(run_time, environment.runner.stop)


@events.init.add_listener  # type: ignore[untyped-decorator]  # locust's EventHook.add_listener is unannotated
def _init(environment: Environment, runner: Runner, **_: Any) -> None:
    options = environment.parsed_options
    if options is None or not hasattr(options, "poolbench_shape"):
        return  # used as a library, without Locust's command line
    if isinstance(runner, WorkerRunner):
        _init_worker(environment)
        return
    status = Status(options.poolbench_status_out)
    status.update(shape=_shape_status(environment))
    files = None
    if options.poolbench_requests_out:
        files = RequestFiles(Path(options.poolbench_requests_out))
    _init_owner(environment, runner, status, files)


class RequestFiles:
    """The requests file of the current test: `requests.bin` is always the last test's.

    Headless Locust runs one test. In its web UI a person may run several, and Locust clears
    its statistics when each starts; so does this: when a test starts after another, the
    previous test's file is kept numbered (`requests-1.bin`, `requests-2.bin`, …), and
    `requests.bin` holds the same requests as Locust's final statistics.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tests = 0
        self.writer = RequestWriter(path, time.time())

    def test_started(self) -> None:
        self.tests += 1
        if self.tests > 1:
            self.writer.close()
            move_requests(self.path, numbered(self.path, self.tests - 1))
            self.writer = RequestWriter(self.path, time.time())


def _init_worker(environment: Environment) -> None:
    """A worker sends its requests to the master with every stats report (and the last one)."""
    recorder = Recorder()
    environment.events.request.add_listener(recorder.on_request)

    def report(client_id: str, data: dict[str, Any]) -> None:
        rows = recorder.take()
        data[REPORT_KEY] = {"keys": [list(k) for k in recorder.keys], "rows": rows.tobytes()}

    environment.events.report_to_master.add_listener(report)


def _init_owner(
    environment: Environment, runner: Runner, status: Status, files: RequestFiles | None
) -> None:
    """The process that owns the test: status file, and the requests file if asked for."""
    events_ = environment.events
    events_.test_start.add_listener(
        lambda **_: status.update(test_start=time.time(), tests=status.data["tests"] + 1)
    )
    events_.test_start.add_listener(lambda **_: _stop_at_run_time(environment))
    events_.test_stop.add_listener(lambda **_: status.update(test_stop=time.time()))
    if isinstance(runner, MasterRunner):
        joined: set[str] = set()  # worker_connect fires before Locust counts the worker

        def worker_joined(client_id: str, **_: Any) -> None:
            joined.add(client_id)
            status.update(workers=len(joined))

        events_.worker_connect.add_listener(worker_joined)
    if files is None:
        return
    if isinstance(runner, MasterRunner):
        events_.worker_report.add_listener(
            lambda client_id, data: _from_worker(files.writer, runner, client_id, data)
        )
        flush: Callable[[], None] | None = None
    else:
        recorder = Recorder()
        events_.request.add_listener(recorder.on_request)

        def flush_requests() -> None:
            files.writer.write(recorder.take(), recorder.keys)

        flush = flush_requests

        gevent.spawn(_every, FLUSH_INTERVAL_S, flush)

    def test_started(**_: Any) -> None:
        if flush is not None:  # what came before belongs to the previous file
            flush()
        files.test_started()

    events_.test_start.add_listener(test_started)

    def close(**_: Any) -> None:
        if flush is not None:
            flush()
        files.writer.close()
        status.update(requests=files.writer.count)

    events_.quit.add_listener(close)


def _from_worker(
    writer: RequestWriter, runner: MasterRunner, client_id: str, data: dict[str, Any]
) -> None:
    batch = data.get(REPORT_KEY)
    if not batch:
        return
    rows = np.frombuffer(batch["rows"], dtype=TRANSFER)
    keys = [(str(method), str(name)) for method, name in batch["keys"]]
    writer.write(rows, keys, worker=1 + runner.get_worker_index(client_id))


def _every(interval: float, action: Callable[[], None]) -> None:
    while True:
        gevent.sleep(interval)
        action()
