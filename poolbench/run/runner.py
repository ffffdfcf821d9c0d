"""`poolbench run`: every variant of every experiment under the same load, recorded to disk.

Per variant: a fresh database (a new embedded server, or a new private database on a
given server) so each variant starts equal; the app started and waited for; the
collector started; the server's free slots checked against the pool model; warm-up, load
and idle phases, each timestamped; everything stopped. The run folder is written as it
goes, so an interrupted run is readable and says `partial`, and everything the run starts
is noted in its ledger (started.jsonl) for `poolbench clean`.

A watchdog (poolbench/run/watchdog.py) watches each variant: a fault that ends it (the app's
master or the server gone) fails that variant alone, and the run goes on with the next one,
which has its own database and app; a lesser one marks it `degraded`. The run's status is
the worst of its variants' (`run_outcome`).
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from poolbench.collector import CollectorThread, sockets
from poolbench.config.bench import BenchConfig, Experiment, LoadSettings
from poolbench.config.variants import Variant
from poolbench.errors import PoolbenchError, first_line
from poolbench.infra import postgres, undo
from poolbench.infra.app_server import RunningVariant, VariantStartError
from poolbench.infra.postgres import Database
from poolbench.load import locust
from poolbench.results.events import EventKind
from poolbench.results.record import VariantRecord
from poolbench.results.run_folder import RunRecord
from poolbench.results.status import Status
from poolbench.run import stack
from poolbench.run.events import EventLog, RunEvents, VariantRef, keep_record
from poolbench.run.preflight import check_slots
from poolbench.run.progress import ProgressDisplay
from poolbench.run.watchdog import Watchdog, shape_target

WARMUP_USERS = 4
LOCUST_GRACE_S = 60.0


@dataclass(frozen=True)
class Live:
    """One variant × repeat while it runs: what it is, where it is recorded, and what serves
    and watches it. Passed whole to each phase instead of seven loose arguments."""

    experiment: Experiment
    variant: Variant
    entry: VariantRecord  # its run.json entry, kept current on disk
    ref: VariantRef
    db: Database
    app: RunningVariant
    dog: Watchdog


def variant_order(variants: tuple[str, ...], repeat: int) -> list[str]:
    """Alternate the order on each repeat, so drift over time does not favour one variant."""
    return list(variants) if repeat % 2 == 1 else list(reversed(variants))


class Runner:
    """Runs the chosen experiments into one results folder."""

    def __init__(
        self,
        config: BenchConfig,
        experiments: list[Experiment],
        out_root: Path,
        command: list[str],
        database_url: str | None = None,
        display: ProgressDisplay | None = None,
        events: RunEvents | None = None,
    ) -> None:
        self.config = config
        self.experiments = stack.as_recorded(experiments, database_url)
        self.out_root = out_root
        self.command = command
        self.database_url = database_url
        self.display = display or ProgressDisplay()
        self.events = events or RunEvents()
        self.display.subscribe(self.events)
        self.record: RunRecord | None = None

    @property
    def _record(self) -> RunRecord:
        """The run's record, which `run` creates before any experiment runs."""
        if self.record is None:
            raise RuntimeError("the run's record is created by Runner.run first")
        return self.record

    def run(self) -> RunRecord:
        if self.database_url:  # a URL that cannot work is refused before anything is written
            postgres.check_server(self.database_url)
        stack.check_binaries(self.config, self.experiments)  # PgBouncer, when a variant needs it
        name = self.experiments[0].name if len(self.experiments) == 1 else "bench"
        self.record = stack.create_record(
            self.config,
            self.experiments,
            self.out_root,
            name,
            shlex.join(self.command),
            self.database_url,
        )
        keep_record(self.record, self.events)
        event_log = EventLog(self.events)
        try:
            with undo.recording(self.record.run_dir), self.display:
                for experiment in self.experiments:
                    self._run_experiment(experiment)
        except KeyboardInterrupt:
            self.record.finish(Status.PARTIAL, "interrupted (Ctrl-C or SIGTERM)")
            raise
        except PoolbenchError as exc:
            self.record.finish(Status.FAILED, first_line(exc))
            raise
        except Exception as exc:
            self.record.finish(Status.FAILED, f"{type(exc).__name__}: {exc}")
            raise
        finally:
            event_log.close()
        self.record.finish(*run_outcome(self.record.state.variants))
        return self.record

    def _run_experiment(self, experiment: Experiment) -> None:
        entries = self._record.experiment(
            experiment.name,
            experiment.description,
            claims=experiment.claims,
            sweep=experiment.sweep,
            fail_if=list(experiment.fail_if),
        )
        if warning := locust.hold_warning(experiment.load, experiment.phases.load_s):
            self.display.message(f"[{experiment.name}] warning: {warning}")
        total = experiment.repeats * len(experiment.variants)
        for repeat in range(1, experiment.repeats + 1):
            for name in variant_order(experiment.variants, repeat):
                position = f"{len(entries) + 1}/{total}"
                entry = stack.new_entry(experiment, self.config.variants[name], repeat)
                entries.append(entry)
                ref = VariantRef(
                    experiment.name, name, repeat, position, self._record.variant_dir(entry)
                )
                self._run_variant(experiment, self.config.variants[name], entry, ref)

    def _run_variant(
        self, experiment: Experiment, variant: Variant, entry: VariantRecord, ref: VariantRef
    ) -> None:
        """One variant from a fresh database to its end; a fault it suffers ends it alone."""
        record, out = self._record, ref.dir
        self.events.variant_started.fire(ref=ref)
        stack.add_census(entry, experiment, variant, out)
        record.save_variant(entry)
        dog = None
        try:
            with stack.database_and_app(
                record,
                experiment,
                variant,
                entry,
                out,
                self.database_url,
                on_database=lambda db: self._preflight(db, entry),
            ) as (db, app):
                self._check_bind(app, entry, variant)
                with Watchdog(self.events, ref) as dog:
                    dog.watch_app(app.pid)
                    dog.watch_postgres(db.postmaster_pid, db.port)
                    if entry.pids.pgbouncer is not None:
                        dog.watch_pgbouncer(entry.pids.pgbouncer)
                    self._phases(Live(experiment, variant, entry, ref, db, app, dog))
                status, error = dog.outcome()
        except KeyboardInterrupt:
            self._end_variant(ref, entry, Status.PARTIAL, None)
            raise
        except (PoolbenchError, VariantStartError) as exc:
            if exc.ends_run:  # bad input (e.g. its setup command fails): the run ends
                self._end_variant(ref, entry, Status.FAILED, first_line(exc))
                raise PoolbenchError(f"{experiment.name}/{variant.name}: {exc}") from None
            # the cause (the watchdog's finding), not what followed it; the next variant has
            # its own database and app: the run goes on
            if dog is not None and dog.fault is not None:
                reason = dog.fault  # already said, as the watchdog's event
            else:
                reason = one_line(exc)
                self.display.message(f"! {experiment.name}/{variant.name}: failed: {reason}")
            self._end_variant(ref, entry, Status.FAILED, reason)
            return
        self._end_variant(ref, entry, Status(status), error)

    def _check_bind(self, app: RunningVariant, entry: VariantRecord, variant: Variant) -> None:
        """The app listens on loopback only, as every server poolbench starts: one reachable
        from other machines is refused (a load test is no reason to expose it), unless the
        variant says `listen_beyond_loopback = true`: then it is recorded and warned about."""
        ends = sockets.listening(app.pids())
        entry.listening = [f"{address}:{port}" for address, port in ends]
        exposed = sockets.beyond_loopback(ends)
        if not exposed:
            return
        where = ", ".join(f"{address}:{port}" for address, port in exposed)
        if not variant.listen_beyond_loopback:
            raise PoolbenchError(
                f"the app listens on {where}, beyond loopback: poolbench runs servers on "
                "127.0.0.1 only (in a variant's command, pass --host {host}; or set "
                f"variants.{variant.name}.listen_beyond_loopback = true)"
            )
        entry.listening_warning = (
            f"the app listens on {where}, beyond loopback: other machines can reach it "
            "during the run (listen_beyond_loopback = true)"
        )
        self.display.message(
            f"warning: {entry.experiment}/{entry.variant}: {entry.listening_warning}"
        )

    def _end_variant(
        self, ref: VariantRef, entry: VariantRecord, status: Status, error: str | None
    ) -> None:
        entry.end(status, error)
        self.events.variant_ended.fire(ref=ref, status=status, error=error)

    def _phases(self, live: Live) -> None:
        experiment, variant, entry, ref = live.experiment, live.variant, live.entry, live.ref
        db, app, dog = live.db, live.app, live.dog
        phases, out = experiment.phases, ref.dir
        self.display.message(
            f"[{experiment.name}] {ref.variant}: the server, while it runs: {stack.psql_line(db)}"
        )
        collector_config = stack.collector_config(db, app, variant, out)
        collector = CollectorThread(collector_config)
        entry.collector = described = stack.collector_entry(collector_config, variant)
        on_load = self.events.load_started.add_listener(
            lambda ref, pid: collector.set_load_pid(pid)
        )
        try:
            with collector:
                dog.watch_collector(lambda: collector.latest().ts)
                self._phase(ref, "warmup", phases.warmup_s, lambda: self._warmup(live))
                self._phase(
                    ref,
                    "load",
                    phases.load_s + phases.soak_s,
                    starts_itself=True,
                    body=lambda begin: self._load(live, collector, begin),
                )
                self._phase(
                    ref,
                    "idle",
                    phases.idle_s,
                    lambda: self._idle(live, collector),
                )
        finally:
            dog.watch_collector(None)  # stopped on purpose: its silence says nothing now
            described.rows_written = collector.rows_written
            entry.watchdog = dog.describe()
            self.events.load_started.remove_listener(on_load)
            described.footprint = collector.latest().footprint()
            self._record.save_variant(entry)

    def _preflight(self, db: Database, entry: VariantRecord) -> None:
        """Free slots against the model's ceiling, before the app starts (an app that cannot
        connect may not start at all: the warning says why first; docs/results.md)."""
        entry.preflight = slots = check_slots(db.admin_url, db.dbname, entry)
        if warning := slots.warning:
            self.display.message(f"warning: {entry.experiment}/{entry.variant}: {warning}")
        self._record.save_variant(entry)

    def _phase(
        self,
        ref: VariantRef,
        name: str,
        length: float,
        body: Callable[..., None],
        starts_itself: bool = False,
    ) -> None:
        """A timestamped phase; with `starts_itself`, body(begin) calls begin(ts) when it began,
        and may call begin(ts, next_name, next_length) to end it there and start the next."""
        if length <= 0:
            return
        current: list[str] = []

        def begin(ts: float, phase: str = name, phase_length: float = length) -> None:
            if current:
                self.events.phase_ended.fire(ref=ref, phase=current.pop(), ts=ts)
            current.append(phase)
            self.events.phase_started.fire(ref=ref, phase=phase, length_s=phase_length, ts=ts)

        if not starts_itself:
            begin(time.time())
        try:
            body(begin) if starts_itself else body()
        finally:
            if current:
                self.events.phase_ended.fire(ref=ref, phase=current.pop(), ts=time.time())

    def _warmup(self, live: Live) -> None:
        """A light load over every route, so pools, caches and JIT-like paths are warm."""
        experiment, app, ref, dog = live.experiment, live.app, live.ref, live.dog
        seconds = experiment.phases.warmup_s
        cmd = locust.warmup_command(experiment.load, app.base_url, seconds, WARMUP_USERS)
        process = locust.start_locust(cmd, ref.dir / "locust.log", None)
        dog.watch_locust(process.pid, time.time() + seconds, process.proc.poll)
        deadline = time.monotonic() + seconds + LOCUST_GRACE_S
        try:
            while process.proc.poll() is None:
                if time.monotonic() > deadline:
                    raise PoolbenchError(f"Locust's warm-up overran; see {process.log_path}")
                dog.check()
                time.sleep(0.5)
            dog.check()  # a fault that ended Locust is the error, not Locust's exit code
        finally:
            dog.stop_watching_locust()
            process.stop()
        if process.proc.returncode != 0:
            raise PoolbenchError(f"Locust {process.ended(process.proc.returncode)}")

    def _load(self, live: Live, collector: CollectorThread, begin: Callable[..., None]) -> None:
        """The load phase begins when Locust's test does (after its workers joined)."""
        experiment, app, ref, dog = live.experiment, live.app, live.ref, live.dog
        settings, out = experiment.load, ref.dir
        load_s, soak_s = experiment.phases.load_s, experiment.phases.soak_s
        port = postgres.free_port(
            settings.locust_master_bind if settings.locust_workers else "127.0.0.1"
        )
        outputs = locust.LoadOutputs(out)
        cmd = locust.load_command(settings, app.base_url, load_s + soak_s, outputs, port)
        process = locust.start_locust(cmd, out / "locust.log", outputs)
        self.events.load_started.fire(ref=ref, pid=process.pid)
        if settings.locust_workers:
            self._await_workers(ref, settings, port, app.base_url)

        def tick() -> None:
            progress = process.progress()
            dog.load_progress(progress.get("users"), progress.get("requests"), progress.get("ts"))
            self._show_live(live, collector, progress)

        ended_early: float | None = None
        try:
            started = process.wait_started(settings, tick)
            applied = (process.status().get("shape") or {}).get("applied")
            dog.watch_locust(
                process.pid,
                started + load_s + soak_s,
                process.proc.poll,
                shape_target(settings, load_s + soak_s) if applied else None,
            )
            begin(started, "load", load_s)
            soak_at = started + load_s if soak_s > 0 else None
            deadline = time.monotonic() + load_s + soak_s + LOCUST_GRACE_S
            while process.proc.poll() is None:
                if time.monotonic() > deadline:
                    raise PoolbenchError(
                        f"Locust overran its {load_s + soak_s:.0f} s load phase; "
                        f"see {out / 'locust.log'}"
                    )
                if soak_at is not None and time.time() >= soak_at:
                    begin(soak_at, "soak", soak_s)  # the same Locust run, at the same users
                    soak_at = None
                tick()
                time.sleep(0.5)
            ended_early = dog.locust_ended()  # judged now, not at the watchdog's next poll
            dog.check()  # a fault that ended Locust is the error, not Locust's exit code
        finally:
            dog.stop_watching_locust()
            process.stop()
            status = process.status()
            if ended_early is not None and status.get("test_start") and not status.get("test_stop"):
                status["test_stop"] = ended_early  # killed: its figures end where it did
            record = locust.load_record(status, settings, load_s + soak_s)
            self._record.entry_for(out).locust = record
            if message := (record.get("shape") or {}).get("message"):
                self.display.message(f"[{experiment.name}] {ref.variant}: {message}")
        if process.proc.returncode != 0 and ended_early is None:
            raise PoolbenchError(process.ended(process.proc.returncode))
        if problem := locust.load_problem(outputs):  # nothing of the app was measured
            raise PoolbenchError(problem)
        # Locust ended before its time (killed, crashed): the watchdog's event degrades the
        # variant, and what it recorded until then is kept; it does not end the run

    def _await_workers(
        self, ref: VariantRef, settings: LoadSettings, port: int, target: str
    ) -> None:
        """Say what each worker machine runs; the command is also kept in events.jsonl."""
        command = locust.shell(locust.worker_command(settings, locust.worker_host(settings), port))
        self.display.message(
            f"waiting up to {settings.locust_workers_timeout_s:.0f} s for "
            f"{settings.locust_workers} Locust workers (they load {target}); "
            f"on each worker machine run:\n  {command}"
        )
        self.events.lifecycle.fire(
            ref=ref,
            kind=EventKind.LOCUST_WORKERS_AWAITED,
            ts=time.time(),
            expected=settings.locust_workers,
            command=command,
            target=target,
        )

    def _idle(self, live: Live, collector: CollectorThread) -> None:
        """No load: what the pools keep open is what stays visible here."""
        end = time.monotonic() + live.experiment.phases.idle_s
        while time.monotonic() < end:
            self._show_live(live, collector, {"users": 0, "rps": 0})
            time.sleep(min(0.5, max(0.0, end - time.monotonic())))

    def _show_live(self, live: Live, collector: CollectorThread, load: dict[str, float]) -> None:
        stack.fire_live(self.events, live.ref, collector, load)
        live.dog.check()


_RAISED = re.compile(r"\b\w*(Error|Exception|Exit)\b: ")  # `pkg.SomeError: message`


def one_line(exc: BaseException) -> str:
    """An error as one line: its first, and of the log lines quoted under it (`  | …`, an
    app's log tail) the cause: the last exception raised, else the last that says error."""
    lines = str(exc).strip().splitlines()
    quoted = [line.split("|", 1)[1].strip() for line in lines[1:] if line.lstrip().startswith("|")]
    quoted = [line for line in quoted if line]
    cause = next(
        (q for q in reversed(quoted) if _RAISED.search(q)),
        next((q for q in reversed(quoted) if "error" in q.lower()), quoted[-1] if quoted else ""),
    )
    return first_line(exc) + (f" — {cause[:300]}" if cause else "")


def run_outcome(entries: list[VariantRecord]) -> tuple[Status, str | None]:
    """The run's status from its variants' (docs/results.md): `failed` if any failed, else
    `degraded` if any was, else `complete`; the error names the variants concerned."""
    for status in (Status.FAILED, Status.DEGRADED):
        hit = [v for v in entries if v.status == status]
        if hit:
            names = "; ".join(f"{v.dir}: {v.error}" for v in hit)
            return status, f"{len(hit)} of {len(entries)} variants {status}: {names}"
    return Status.COMPLETE, None
