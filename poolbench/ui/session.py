"""A `poolbench ui` session: one variant, driven by a person from Locust's web UI.

The stack is a run's (poolbench/run/stack.py): a fresh database, the app, the collector in this
process writing samples.csv. Locust runs with its web UI on 127.0.0.1, poolbench's plugin
(every request, the status file; no load shape: the person sets the users) and the Database
tab (poolbench/ui/locust_db_tab.py), its command from poolbench/load/locust.py. This process follows
it through the tab's /poolbench/status route and turns what the person does into the run's
events: each test started is a `load` phase, each stop starts an `idle` phase, at Locust's
own timestamps. The run record, the event log, the terminal display and the tab's feed
listen to those events as they do in a run.

The results folder is a run's (docs/results.md) and readable at any moment; quitting (Ctrl-C
or SIGTERM) stops Locust first, so it writes its final statistics and requests (the last
test's, like the `load` phase; earlier tests' as `requests-N.bin`), then the collector, the
app and the database, and marks the run `complete`. A second Ctrl-C during that is ignored:
stopping must finish, or processes would be left behind.
"""

from __future__ import annotations

import contextlib
import secrets
import shlex
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx

from poolbench.collector import CollectorThread
from poolbench.config.bench import BenchConfig, Experiment
from poolbench.config.variants import Variant
from poolbench.errors import PoolbenchError
from poolbench.infra import ledger, undo
from poolbench.infra.app_server import HOST, RunningVariant, VariantStartError
from poolbench.infra.postgres import Database, free_port
from poolbench.load import locust
from poolbench.results.pool_probe import ProbeTail
from poolbench.results.record import VariantRecord
from poolbench.results.run_folder import RunRecord
from poolbench.results.status import Status
from poolbench.run import stack
from poolbench.run.events import EventLog, RunEvents, VariantRef, keep_record
from poolbench.run.progress import ProgressDisplay
from poolbench.ui.feed import FeedHeader, FeedWriter

DB_TAB = Path(__file__).resolve().with_name("locust_db_tab.py")
TICK_S = 0.5
UI_START_TIMEOUT_S = 60.0


class UiPhase(StrEnum):
    """The phase a person's test in the web UI is in (the analysis reads these names)."""

    LOAD = "load"  # from a test's start
    IDLE = "idle"  # from its stop to the next start or the end


@dataclass(frozen=True)
class UiContext:
    """What a session serves and where it records it, given whole to `UiSession`."""

    config: BenchConfig
    experiment: Experiment
    variant: Variant
    out_root: Path  # the results root: the session's folder is made in it
    command: tuple[str, ...]  # the command line, as run.json records it
    database_url: str | None = None  # else the experiment's provider
    port: int | None = None  # the web UI's; else a free one


class UiSession:
    """Brings the stack up, serves Locust's web UI, records what happens, stops everything."""

    def __init__(self, context: UiContext, display: ProgressDisplay | None = None) -> None:
        self.context = context
        self.config, self.experiment, self.variant = (
            context.config,
            context.experiment,
            context.variant,
        )
        self.out_root, self.command = context.out_root, context.command
        self.database_url, self.port = context.database_url, context.port
        self.events = RunEvents()
        self.display = display or ProgressDisplay()
        self.display.subscribe(self.events)
        self.record: RunRecord | None = None
        self.url: str | None = None
        self._phase: UiPhase | None = None  # the open phase
        self._boundaries = 0  # test starts and stops already turned into phases
        self._entry: VariantRecord | None = None

    # ------------------------------------------------------------------ the session

    def run(self) -> RunRecord:
        experiment, variant = self.experiment, self.variant
        self.record = record = stack.create_record(
            self.config,
            [experiment],
            self.out_root,
            f"ui-{experiment.name}",
            shlex.join(self.command),
            self.database_url,
        )
        keep_record(record, self.events)
        event_log = EventLog(self.events)
        entry = self._entry = stack.new_entry(experiment, variant, 1)
        record.experiment(experiment.name, experiment.description).append(entry)
        ref = VariantRef(experiment.name, variant.name, 1, "1/1", record.variant_dir(entry))
        status, error = Status.COMPLETE, None
        try:
            with undo.recording(record.run_dir), self.display, _restored_signals():
                self.events.variant_started.fire(ref=ref)
                stack.add_census(entry, experiment, variant, ref.dir)
                record.save_variant(entry)
                with stack.database_and_app(
                    record, experiment, variant, entry, ref.dir, self.database_url
                ) as (db, app):
                    self._serve(entry, db, app, ref)
        except KeyboardInterrupt:  # before the web UI was up: nothing to keep
            status, error = (
                Status.PARTIAL,
                "interrupted (Ctrl-C or SIGTERM) before the web UI was up",
            )
            raise
        except (PoolbenchError, VariantStartError) as exc:
            status, error = Status.FAILED, str(exc)
            raise PoolbenchError(f"{experiment.name}/{variant.name}: {exc}") from None
        except Exception as exc:
            status, error = Status.FAILED, f"{type(exc).__name__}: {exc}"
            raise
        finally:
            entry.end(status, error)
            self.events.variant_ended.fire(ref=ref, status=status, error=error)
            event_log.close()
            record.finish(status, error)
        return record

    def _serve(
        self, entry: VariantRecord, db: Database, app: RunningVariant, ref: VariantRef
    ) -> None:
        collector_config = stack.collector_config(db, app, self.variant, ref.dir)
        entry.collector = stack.collector_entry(collector_config, self.variant)
        collector = CollectorThread(collector_config)
        feed_dir = (
            Path(tempfile.gettempdir()) / f"{ledger.UI_FEED_DIR_PREFIX}{secrets.token_hex(6)}"
        )
        noted = ledger.started(ledger.Kind.DATA_DIR, str(feed_dir), path=str(feed_dir))  # for clean
        feed_dir.mkdir(mode=0o700)
        probe = ProbeTail(app.spec.probe_dir) if app.spec.probe_dir else None
        feed = FeedWriter(
            feed_dir / "feed.jsonl", self._feed_header(entry), collector.latest, probe
        )
        try:
            with collector:
                feed.subscribe(self.events)
                process = self._start_locust(app, ref, feed.path)
                try:
                    collector.set_load_pid(process.pid)
                    self.events.load_started.fire(ref=ref, pid=process.pid)
                    self._wait_for_web_ui(process)
                    self._follow(process, collector, ref)
                finally:
                    process.stop()  # SIGTERM: Locust writes its final statistics and requests
                    # no poolbench shape: the window in which all users ran is the person's to say
                    entry.locust = locust.load_record(process.status(), self.experiment.load, 0.0)
                self._close_phase(ref, time.time())
        finally:
            feed.close()
            shutil.rmtree(feed_dir, ignore_errors=True)
            ledger.released(noted)

    def _start_locust(
        self, app: RunningVariant, ref: VariantRef, feed: Path
    ) -> locust.LocustProcess:
        """Locust's web UI with poolbench's plugin (every request, status file) and the tab."""
        settings, outputs = self.experiment.load, locust.LoadOutputs(ref.dir)
        port = self.port or free_port(HOST)
        master_port = free_port(settings.locust_master_bind if settings.locust_workers else HOST)
        cmd = locust.web_ui_command(
            settings,
            app.base_url,
            outputs,
            port,
            master_port,
            plugins=(DB_TAB,),
            plugin_args=("--poolbench-feed", str(feed)),
        )
        process = locust.start_locust(cmd, ref.dir / "locust.log", outputs)
        self.url = f"http://{HOST}:{port}"
        if settings.locust_workers:
            worker = locust.worker_command(settings, locust.worker_host(settings), master_port)
            self.display.message(
                f"Locust waits for {settings.locust_workers} workers (they load "
                f"{app.base_url}); on each worker machine run:\n  {locust.shell(worker)}"
            )
        return process

    def _feed_header(self, entry: VariantRecord) -> FeedHeader:
        assert self.record is not None  # set by run()
        engines, workers = entry.engines, entry.workers or 1
        return {
            "variant": self.variant.name,
            "label": entry.label,
            "experiment": self.experiment.name,
            "workers": workers,
            "engines": [
                {
                    "name": e.name,
                    "kind": e.kind,
                    "pool_size": e.pool_size,
                    "max_overflow": e.max_overflow,
                }
                for e in engines
            ],
            "ceiling": stack.connection_ceiling(entry),
            "ceiling_formula": (
                f"{workers} worker(s) × Σ(pool_size + max_overflow) over {len(engines)} engines"
                if engines
                else None
            ),
            "results": str(self.record.run_dir),
        }

    # ------------------------------------------------------------------ following Locust

    def _wait_for_web_ui(self, process: locust.LocustProcess) -> None:
        deadline = time.monotonic() + UI_START_TIMEOUT_S
        with httpx.Client(trust_env=False, timeout=2.0) as client:
            while True:
                code = process.proc.poll()
                if code is not None:
                    raise PoolbenchError(f"Locust {process.ended(code)} before its web UI answered")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.url}/poolbench/status").status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise PoolbenchError(
                        f"Locust's web UI did not answer within {UI_START_TIMEOUT_S:.0f} s "
                        f"(log: {process.log_path})"
                    )
                time.sleep(0.2)

    def _follow(
        self, process: locust.LocustProcess, collector: CollectorThread, ref: VariantRef
    ) -> None:
        """Until the person quits: phases from Locust's tests, live figures twice a second."""
        assert self.record is not None  # set by run()
        with httpx.Client(trust_env=False, timeout=2.0) as client:
            try:  # from the moment the address is out, Ctrl-C means "quit and save"
                print(f"Locust web UI: {self.url}", flush=True)  # one line, for people and scripts
                self.display.message(
                    f"variant {self.variant.name}, experiment {self.experiment.name}: open the "
                    f"Database tab. Ctrl-C stops everything and saves {self.record.run_dir}"
                )
                while True:
                    code = process.proc.poll()
                    if code is not None:
                        raise PoolbenchError(f"Locust {process.ended(code)} unexpectedly")
                    status = self._status(client)
                    self._follow_tests(status.get("tests") or [], ref)
                    stack.fire_live(self.events, ref, collector, status)
                    time.sleep(TICK_S)
            except KeyboardInterrupt:
                _ignore_signals()  # the person quit: stop everything, uninterrupted
                self.display.message("stopping: Locust, the collector, the app, PostgreSQL …")
                # a test started or stopped since the last tick still counts
                self._follow_tests(self._status(client).get("tests") or [], ref)

    def _status(self, client: httpx.Client) -> dict[str, Any]:
        try:
            answer = client.get(f"{self.url}/poolbench/status").json()
        except (httpx.HTTPError, ValueError):
            return {}  # a busy moment; the next tick asks again
        return answer if isinstance(answer, dict) else {}

    def _follow_tests(self, tests: list[dict[str, Any]], ref: VariantRef) -> None:
        """Each test start opens a `load` phase, each stop an `idle` one, at Locust's times.

        The analysis reads the phases named `load` and `idle`: those are the last test's (the
        one Locust's final statistics describe, as it clears them when a test starts). When a
        new test starts, the previous test's phases become `load N` and `idle N`.
        """
        boundaries: list[tuple[UiPhase, float, int]] = []
        for number, test in enumerate(tests, start=1):
            boundaries.append((UiPhase.LOAD, test["started"], number))
            if test.get("stopped") is not None:
                boundaries.append((UiPhase.IDLE, test["stopped"], number))
        for phase, ts, number in boundaries[self._boundaries :]:
            self._close_phase(ref, ts)
            if phase == UiPhase.LOAD and number > 1 and self._entry is not None:
                self._entry.renumber_phases((UiPhase.LOAD, UiPhase.IDLE), number - 1)
            self.events.phase_started.fire(ref=ref, phase=phase, length_s=0.0, ts=ts)
            self._phase = phase
        self._boundaries = len(boundaries)

    def _close_phase(self, ref: VariantRef, ts: float) -> None:
        if self._phase is not None:
            self.events.phase_ended.fire(ref=ref, phase=self._phase, ts=ts)
            self._phase = None


def _ignore_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


@contextlib.contextmanager
def _restored_signals() -> Iterator[None]:
    """Whatever _ignore_signals changed is undone when the session ends."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
