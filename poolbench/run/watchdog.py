"""The watchdog: notices when a process a variant depends on exits, restarts or loses users.

Without it a run whose app was killed mid-load said `complete` and reported the crash as
results. It watches, from the variant's start-up to its end:

- the app's process tree: the master poolbench started, and every descendant (uvicorn
  workers). A process that lives a second or more is announced (`app_process_started`,
  with its pid and start time); its exit is `app_process_exited` (pid, `role` master or
  worker, or helper for multiprocessing's resource tracker; `exit_status` when the process
  could still be read: Popen's convention, negative for a signal). Short-lived children
  (under a second) are ignored.
- the PostgreSQL server, when its postmaster is visible from this host: its exit
  (`postgres_exited`), and a restart (`postgres_restarted`): either a new postmaster listens
  on the server's port within RESTART_GRACE_S of the exit (a restart by pg_ctl or systemd),
  or the postmaster stays but re-creates every server process after a backend crashed
  (crash recovery, seen as a new checkpointer).
- Locust, per phase: an exit before its time (`locust_exited`, `early`: true), and a fall of
  its user count that the load shape did not ask for (`users_dropped`: `users`, `expected`).
- stalls: a process of the app or of PostgreSQL stopped (state T), no request completed for
  STALL_S while users are active (Locust's figures, fed by the runner), or the collector's
  newest sample SILENT_S old (PostgreSQL not answering it). A frozen process neither exits nor
  drops users, and a run that froze looked clean; now the span from the first cause to the
  poll that finds none left is one `stalled` event (`ts` its start, `end`, `causes`).

Each event goes to the run's hub as a `lifecycle` event (so events.jsonl records it, with
`phase` and `t` = seconds into that phase) and decides the variant's fate:

- the app's master gone, or the postmaster gone and no server back within
  RESTART_GRACE_S: the variant cannot go on. `check()` raises `VariantFault`; the runner
  ends the variant `failed` with the event in the error.
- anything else (a worker died and was replaced, a crash-restart, users lost, Locust ended
  early, a stall): the variant runs to its end and is `degraded`, with the reasons.

A thread polls /proc at `POLL_HZ` (a read per watched process: ~0.15 ms a poll for an app
of five processes and a postmaster, 0.06 % of a core; no psutil process scans; the stall
check's state of every server process adds ~0.5 ms a poll at 100 backends, 0.2 % of a core,
measured here). It only observes and queues; the runner calls `check()` from its own thread
twice a second, which fires the queued events there, so the hub's listeners (the event log,
the display) are never called from two threads.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil

from poolbench.collector import procfs
from poolbench.config.bench import LoadSettings
from poolbench.errors import PoolbenchError
from poolbench.load import shapes
from poolbench.results.events import STALL_CAUSES, EventKind
from poolbench.results.status import Status
from poolbench.run.events import RunEvents, VariantRef

POLL_HZ = 4.0
MIN_LIFETIME_S = 1.0  # a child that lives less than this is a helper, not a server process
RESTART_GRACE_S = 5.0  # a postmaster gone this long without a successor: the server is down
EARLY_EXIT_SLACK_S = 2.0  # Locust may end this much before its phase's nominal end
SHAPE_LAG_S = 3.0  # Locust's CSV (written each second) trails what its shape asked for
END_MARGIN_S = 2.0  # users leaving in the last seconds of a phase are Locust stopping
STALL_S = 5.0  # no request completed this long while users are active: the load is stalled
STALL_GAPS = 10  # ... or this many of its usual gaps between completions, when longer
SILENT_S = 5.0  # the collector's newest sample this old: PostgreSQL is not answering it


class VariantFault(PoolbenchError):
    """A process the variant cannot go on without is gone; the message says which and when."""


@dataclass
class _Tracked:
    """A process being watched: its identity (pid and start time in ticks) and its role."""

    pid: int
    start: float
    role: str
    announced: bool = False

    def gone(self) -> bool:
        stat = procfs.read_stat(self.pid)
        return stat is None or stat.zombie or stat.start != self.start


def _track(pid: int | None, role: str) -> _Tracked | None:
    stat = procfs.read_stat(pid) if pid else None
    if pid is None or stat is None or stat.zombie:
        return None
    return _Tracked(pid, stat.start, role)


def _epoch(start_ticks: float) -> float:
    """A process's start time as epoch seconds, to the clock tick (/proc/stat's btime is
    whole seconds; /proc/uptime has hundredths)."""
    with open("/proc/uptime") as handle:
        uptime = float(handle.read().split()[0])
    return time.time() - uptime + start_ticks / os.sysconf("SC_CLK_TCK")


def shape_target(load: LoadSettings, duration: float) -> Callable[[float], int]:
    """Users poolbench's load shape asks for t s into a load phase of `duration` s."""
    shape = shapes.SHAPES[load.shape]
    return lambda t: int(shape(max(0.0, t), load.users, duration, load.ramp_s))


@dataclass
class _Stall:
    """A stall: since when, every cause seen during it (in order), and when its causes
    cleared (None: under way)."""

    start: float
    causes: dict[str, None] = field(default_factory=dict)
    end: float | None = None


@dataclass
class _Progress:
    """Requests completed in a load phase, as Locust's statistics show them, on Locust's
    clock: its history file is flushed every few seconds, so a count that has not moved on
    disk says nothing until a newer row shows it still has not."""

    first: float  # when users were first seen active
    count: float = 0.0  # requests completed so far
    since: float = 0.0  # when that count was first seen
    newest: float = 0.0  # the time the newest figures describe

    def stalled_since(self, now: float) -> float | None:
        """When the last request completed, if the newest figures show that is longer ago
        than a stall."""
        usual_gap = (self.since - self.first) / self.count if self.count else 0.0
        quiet = self.newest - self.since
        return self.since if quiet >= max(STALL_S, STALL_GAPS * usual_gap) else None


@dataclass
class _Phase:
    name: str = "starting"
    start: float = field(default_factory=time.time)
    length: float = 0.0


class Watchdog:
    """Watches one variant. `with Watchdog(...) as dog:` then `dog.watch_*`, `dog.check()`."""

    def __init__(self, events: RunEvents, ref: VariantRef) -> None:
        self.events, self.ref = events, ref
        self.reasons: list[str] = []  # why the variant is degraded, in order
        self.fault: str | None = None  # set when the variant cannot go on
        self._queue: queue.SimpleQueue[tuple[str, float, dict[str, Any]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._phases = [_Phase()]  # in order; an event belongs to the phase its time falls in
        self._app: _Tracked | None = None
        self._workers: dict[int, _Tracked] = {}
        self._postmaster: _Tracked | None = None
        self._pgbouncer: _Tracked | None = None
        self._port: int | None = None
        self._checkpointer: _Tracked | None = None
        self._recovering = False  # the checkpointer is gone: crash recovery under way
        self._down: tuple[float, str] | None = None  # the postmaster exited: when, and why
        self._next_search = 0.0
        self._locust: tuple[_Tracked, float, Callable[[], int | None] | None] | None = None
        self._locust_early: float | None = None  # when Locust was seen to end before its time
        self._target: Callable[[float], int] | None = None
        self._users_checked = False  # a load phase's users were judged against its shape
        self._users_peak = 0.0
        self._users_low: float | None = None
        self._stall: _Stall | None = None
        self._progress: _Progress | None = None  # the load's, while users are active
        self._sampled: Callable[[], float | None] | None = None  # the collector's newest sample
        self._app_stopped, self._postgres_stopped = _StoppedCheck(), _StoppedCheck()
        self._listeners = [
            (events.phase_started, events.phase_started.add_listener(self._on_phase_started)),
            (events.live, events.live.add_listener(self._on_live)),
        ]

    # ------------------------------------------------------------------ what to watch

    def watch_app(self, pid: int) -> None:
        """The app's master (and, found by polling, its workers)."""
        with self._lock:
            self._app = _track(pid, "master")
            if self._app is None:
                self._fail(
                    self._event(EventKind.APP_PROCESS_EXITED, time.time(), pid=pid, role="master")
                )
                return
            self._app.announced = True
            self._event(
                EventKind.APP_PROCESS_STARTED, _epoch(self._app.start), pid=pid, role="master"
            )
            self._poll_app()

    def watch_postgres(self, pid: int | None, port: int | None = None) -> None:
        """The postmaster, when visible from here (None: a server elsewhere, not watched);
        `port`, where a restarted server would listen again."""
        with self._lock:
            self._postmaster, self._port = _track(pid, "postmaster"), port
            if pid and self._postmaster is None:
                self._fail(self._event(EventKind.POSTGRES_EXITED, time.time(), pid=pid))
            self._checkpointer = self._find_checkpointer()

    def watch_pgbouncer(self, pid: int) -> None:
        """PgBouncer between the app and the server: without it the app reaches nothing."""
        with self._lock:
            self._pgbouncer = _track(pid, "pgbouncer")
            if self._pgbouncer is None:
                self._fail(self._event("pgbouncer_exited", time.time(), pid=pid))

    def watch_locust(
        self,
        pid: int,
        ends_at: float,
        returncode: Callable[[], int | None] | None = None,
        target: Callable[[float], int] | None = None,
    ) -> None:
        """Locust for the current phase: it should run until `ends_at` (epoch s); `target`,
        the users its shape asks for t s into the phase (None: a shape poolbench cannot
        judge, e.g. the locustfile's own)."""
        with self._lock:
            tracked = _track(pid, "locust") or _Tracked(pid, -1.0, "locust")
            self._locust, self._locust_early = (tracked, ends_at, returncode), None
            self._target, self._users_peak, self._users_low = target, 0.0, None

    def locust_ended(self) -> float | None:
        """Judge Locust's exit now (the runner saw it end): when it ended before its time, the
        time it was seen to end (the event is queued and the variant degraded), else None."""
        with self._lock:
            if self._locust is None:
                return self._locust_early
            self._poll_locust()
            return self._locust_early

    def stop_watching_locust(self) -> None:
        with self._lock:
            self._locust, self._target, self._progress = None, None, None

    def watch_collector(self, newest_sample: Callable[[], float | None] | None) -> None:
        """The collector's newest sample time (epoch s): one that stops advancing means
        PostgreSQL is not answering it (None: the collector stopped, on purpose)."""
        with self._lock:
            self._sampled = newest_sample

    def load_progress(
        self, users: float | None, requests: float | None, ts: float | None = None
    ) -> None:
        """The load's users and requests completed so far (Locust's statistics, from the
        runner's thread), as of `ts` (the row's own time; now when not given): no request
        completed for a while with users active is a stall."""
        seen = ts if ts is not None and ts == ts else time.time()
        with self._lock:
            if users == 0:
                self._progress = None
            if not users or users != users or requests is None or requests != requests:
                return  # no users, or no figures yet (NaN)
            progress = self._progress
            if progress is None:
                self._progress = _Progress(seen, requests, seen, seen)
                return
            progress.newest = max(progress.newest, seen)
            if requests > progress.count:
                progress.count, progress.since = requests, seen

    def describe(self) -> dict[str, Any]:
        """What variant.json records about the watch."""
        return {
            "poll_hz": POLL_HZ,
            "app": self._app is not None,
            "postgres": self._postmaster is not None,
            **({"pgbouncer": True} if self._pgbouncer is not None else {}),
            "users": self._users_checked,
        }

    # ------------------------------------------------------------------ the runner's side

    def check(self) -> None:
        """Fire what the watch found (in the caller's thread); raise VariantFault if fatal."""
        while True:
            try:
                kind, ts, details = self._queue.get_nowait()
            except queue.Empty:
                break
            self.events.lifecycle.fire(ref=self.ref, kind=kind, ts=ts, **details)
        if self.fault is not None:
            raise VariantFault(self.fault)

    def outcome(self) -> tuple[str, str | None]:
        """`failed` (a fault found too late to raise), `degraded` with the reasons, or
        `complete`."""
        if self.fault is not None:
            return Status.FAILED, self.fault
        if not self.reasons:
            return Status.COMPLETE, None
        return Status.DEGRADED, "; ".join(self.reasons)

    def start(self) -> Watchdog:
        self._thread = threading.Thread(target=self._main, name="poolbench-watchdog", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling (before the runner stops the processes on purpose); fire the rest."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            if self._down is not None:  # the run ended before a server came back
                self._fail(self._down[1])
            if self._stall is not None:  # the variant ended stalled (or just after one)
                end = self._stall.end
                self._end_stall(
                    self._stall, time.time() if end is None else end, ongoing=end is None
                )
            self._app_stopped.close()
            self._postgres_stopped.close()
        for hook, listener in self._listeners:
            hook.remove_listener(listener)
        with contextlib.suppress(VariantFault):
            self.check()

    def __enter__(self) -> Watchdog:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ findings

    @property
    def _phase(self) -> _Phase:
        return self._phases[-1]

    def _phase_at(self, ts: float) -> _Phase:
        """The phase `ts` falls in: a worker is announced a second after it started, by then
        maybe in the next phase, and it belongs to the one it started in."""
        return next((p for p in reversed(self._phases) if p.start <= ts), self._phases[0])

    def _event(self, kind: str, ts: float, **details: Any) -> str:
        """Queue a lifecycle event (with its phase and time into it); return it as a line."""
        phase = self._phase_at(ts)
        details = {**details, "phase": phase.name}
        if phase.name != "starting":  # seconds into the phase (the report's time axis)
            details["t"] = round(ts - phase.start, 2)
        self._queue.put((kind, ts, details))
        return describe_event(kind, ts, details)

    def _fail(self, reason: str) -> None:
        if self.fault is None:
            self.fault = reason

    def _degrade(self, reason: str) -> None:
        self.reasons.append(reason)

    # ------------------------------------------------------------------ polling

    def _main(self) -> None:
        while not self._stop.wait(1.0 / POLL_HZ):
            with self._lock:
                self._poll_app()
                self._poll_postgres()
                self._poll_pgbouncer()
                self._poll_locust()
                self._poll_stall()

    def _poll_app(self) -> None:
        app = self._app
        if app is None:
            return
        if app.gone():
            self._app = None
            status = procfs.exit_status(app.pid)
            self._fail(
                self._event(
                    EventKind.APP_PROCESS_EXITED,
                    time.time(),
                    pid=app.pid,
                    role="master",
                    exit_status=status,
                )
            )
            return
        now = time.time()
        for pid in set(procfs.tree([app.pid])[1:]) - set(self._workers):
            role = "helper" if "resource_tracker" in procfs.cmdline(pid) else "worker"
            tracked = _track(pid, role)
            if tracked is not None:
                self._workers[pid] = tracked
        for pid, worker in list(self._workers.items()):
            if worker.gone():
                del self._workers[pid]
                if worker.announced:
                    reason = self._event(
                        EventKind.APP_PROCESS_EXITED,
                        now,
                        pid=pid,
                        role=worker.role,
                        exit_status=procfs.exit_status(pid),
                    )
                    if worker.role != "helper":
                        self._degrade(reason)
            elif not worker.announced and now - _epoch(worker.start) >= MIN_LIFETIME_S:
                worker.announced = True
                self._event(
                    EventKind.APP_PROCESS_STARTED, _epoch(worker.start), pid=pid, role=worker.role
                )

    def _poll_postgres(self) -> None:
        if self._down is not None:
            self._await_postmaster(self._down)
            return
        postmaster = self._postmaster
        if postmaster is None:
            return
        if postmaster.gone():
            now = time.time()
            status = procfs.exit_status(postmaster.pid)
            reason = self._event(
                EventKind.POSTGRES_EXITED, now, pid=postmaster.pid, exit_status=status
            )
            self._postmaster, self._checkpointer, self._down = None, None, (now, reason)
            return
        old = self._checkpointer
        if old is not None and not old.gone():
            return
        if old is not None:
            self._checkpointer, self._recovering = None, True
        self._checkpointer = self._find_checkpointer()
        if self._checkpointer is not None and self._recovering:
            self._recovering = False
            self._degrade(
                self._event(
                    EventKind.POSTGRES_RESTARTED,
                    _epoch(self._checkpointer.start),
                    pid=postmaster.pid,
                    crash_recovery=True,
                )
            )

    def _poll_pgbouncer(self) -> None:
        bouncer = self._pgbouncer
        if bouncer is not None and bouncer.gone():
            self._pgbouncer = None
            status = procfs.exit_status(bouncer.pid)
            self._fail(
                self._event("pgbouncer_exited", time.time(), pid=bouncer.pid, exit_status=status)
            )

    def _await_postmaster(self, down: tuple[float, str]) -> None:
        """After the postmaster exited: a new one on the same port is a restart; none within
        RESTART_GRACE_S, and the server is down."""
        since, reason = down
        now = time.time()
        if now >= self._next_search:
            self._next_search = now + 1.0
            new = self._listener_on_port()
            if new is not None:
                self._down, self._postmaster = None, new
                self._checkpointer = self._find_checkpointer()
                self._degrade(
                    self._event(EventKind.POSTGRES_RESTARTED, _epoch(new.start), pid=new.pid)
                )
                return
        if now - since >= RESTART_GRACE_S:
            self._down = None
            self._fail(f"{reason}; no server came back within {RESTART_GRACE_S:.0f} s")

    def _listener_on_port(self) -> _Tracked | None:
        """The process listening on the server's port (a postmaster), when visible."""
        if self._port is None:
            return None
        try:
            sockets = psutil.net_connections(kind="tcp")
        except (psutil.Error, OSError):
            return None
        for sock in sockets:
            if sock.status == psutil.CONN_LISTEN and sock.laddr and sock.laddr.port == self._port:
                found = _track(sock.pid, "postmaster")
                if found is not None:
                    return found
        return None

    def _find_checkpointer(self) -> _Tracked | None:
        postmaster = self._postmaster
        if postmaster is None:
            return None
        for pid in procfs.tree([postmaster.pid], depth=1)[1:]:
            if "checkpointer" in procfs.cmdline(pid):
                return _track(pid, "checkpointer")
        return None

    def _poll_locust(self) -> None:
        if self._locust is None:
            return
        locust, ends_at, returncode = self._locust
        code = returncode() if returncode is not None else None
        if code is None and not locust.gone():
            return
        self._locust = None
        now = time.time()
        if now < ends_at - EARLY_EXIT_SLACK_S:
            self._locust_early = now
            if code is None:
                code = procfs.exit_status(locust.pid)
            self._degrade(
                self._event(
                    EventKind.LOCUST_EXITED,
                    now,
                    pid=locust.pid,
                    exit_status=code,
                    early=True,
                    expected_end=round(ends_at, 3),
                )
            )

    def _poll_stall(self) -> None:
        """A stall spans from its first cause to the poll that finds none left. Under load it
        is told once requests are seen completing after that: Locust's figures trail by a
        second or two, and a cause found meanwhile (no request completed) is the same stall."""
        now = time.time()
        causes = self._stall_causes(now)
        stall = self._stall
        if causes:
            if stall is None:
                self._stall = stall = _Stall(min(causes.values()))
            stall.start = min(stall.start, *causes.values())
            stall.causes.update(dict.fromkeys(causes))
            stall.end = None
        elif stall is not None:
            if stall.end is None:
                stall.end = now
            if self._progress is None or self._progress.since > stall.end:
                self._end_stall(stall, stall.end)

    def _stall_causes(self, now: float) -> dict[str, float]:
        """What is stalled now, each with since when it is known to be."""
        causes: dict[str, float] = {}
        app = [self._app.pid, *self._workers] if self._app is not None else []
        if self._app_stopped.any(app):
            causes["app_stopped"] = now
        postmaster = self._postmaster
        server = procfs.tree([postmaster.pid], depth=1) if postmaster is not None else []
        if self._postgres_stopped.any(server):
            causes["postgres_stopped"] = now
        if self._progress is not None and (since := self._progress.stalled_since(now)):
            causes["no_requests"] = since
        newest = self._sampled() if self._sampled is not None else None
        if newest is not None and self._down is None and now - newest >= SILENT_S:
            causes["postgres_silent"] = newest
        return causes

    def _end_stall(self, stall: _Stall, end: float, ongoing: bool = False) -> None:
        self._stall = None
        details = {
            "end": round(end, 3),
            "duration_s": round(end - stall.start, 1),
            "causes": list(stall.causes),
        }
        if ongoing:
            details["ongoing"] = True  # the variant ended before the stall did
        self._degrade(self._event(EventKind.STALLED, stall.start, **details))

    # ------------------------------------------------------------------ hub listeners

    def _on_phase_started(self, ref: VariantRef, phase: str, length_s: float, ts: float) -> None:
        if ref != self.ref:
            return
        self._phases.append(_Phase(phase, ts, length_s))

    def _on_live(self, ref: VariantRef, users: float | None = None, **_: Any) -> None:
        """Users fell below what they were and below what the shape asks for: a drop."""
        phase, target = self._phase, self._target
        if ref != self.ref or phase.name != "load" or target is None or users is None:
            return
        if users != users:  # NaN: Locust has written no figures yet
            return
        t = time.time() - phase.start
        if t > phase.length - END_MARGIN_S:
            return
        self._users_checked = True
        floor = min(target(t - lag) for lag in (0.0, SHAPE_LAG_S / 2, SHAPE_LAG_S))
        expected = min(self._users_peak, floor)
        self._users_peak = max(self._users_peak, users)
        if users < expected and (self._users_low is None or users < self._users_low):
            self._users_low = users
            self._degrade(
                self._event(
                    EventKind.USERS_DROPPED,
                    time.time(),
                    users=int(users),
                    expected=int(expected),
                    peak=int(self._users_peak),
                )
            )


class _StoppedCheck:
    """Is any of a set of processes stopped (state T: SIGSTOP, or a tracer)? Their
    /proc/<pid>/stat re-read through held descriptors, the state letter only: ~0.5 ms a poll
    for a postmaster and 100 backends, where opening each file took 1.5 ms."""

    def __init__(self) -> None:
        self._files = procfs.HeldFiles("stat")

    def any(self, pids: list[int]) -> bool:
        stopped = False
        for pid in pids:
            if not procfs.HAS_PROC:
                stopped |= (stat := procfs.read_stat(pid)) is not None and stat.stopped
                continue
            data = self._files.read(pid)
            if data:
                end = data.rindex(b")")
                stopped |= data[end + 2 : end + 3] in (b"T", b"t")
        self._files.end_sweep()  # closes what this look did not read: processes gone
        return stopped

    def close(self) -> None:
        self._files.close()


def describe_event(kind: str, ts: float, details: dict[str, Any]) -> str:
    """A lifecycle event as one line of an error or reason, with its time."""
    when = f"at {time.strftime('%H:%M:%S', time.localtime(ts))} " + (
        f"({details.get('phase')} phase, t = {details['t']:.1f} s)"
        if details.get("t") is not None
        else "(while starting)"
    )
    status = details.get("exit_status")
    how = (
        "" if status is None else f" (signal {-status})" if status < 0 else f" (exit code {status})"
    )
    pid = details.get("pid")
    if kind == EventKind.APP_PROCESS_STARTED:
        return f"an app process (pid {pid}, {details.get('role')}) started {when}"
    if kind == EventKind.APP_PROCESS_EXITED and details.get("role") == "master":
        return f"the app's master process (pid {pid}) exited{how} {when}"
    if kind == EventKind.APP_PROCESS_EXITED:
        return f"an app {details.get('role', 'worker')} (pid {pid}) exited{how} {when}"
    if kind == EventKind.POSTGRES_EXITED:
        return f"the PostgreSQL server (postmaster pid {pid}) exited{how} {when}"
    if kind == EventKind.POSTGRES_RESTARTED and details.get("crash_recovery"):
        return f"the PostgreSQL server restarted after a crash (all connections lost) {when}"
    if kind == EventKind.POSTGRES_RESTARTED:
        return f"the PostgreSQL server restarted (new postmaster pid {pid}) {when}"
    if kind == EventKind.PGBOUNCER_EXITED:
        return f"PgBouncer (pid {pid}) exited{how} {when}"
    if kind == EventKind.LOCUST_EXITED:
        return f"Locust (pid {pid}) exited before its time{how} {when}"
    if kind == EventKind.STALLED:
        causes = "; ".join(STALL_CAUSES.get(c, c) for c in details.get("causes") or [])
        until = " until the variant ended" if details.get("ongoing") else ""
        return (
            f"the variant stalled for {details.get('duration_s')} s{until}, "
            f"starting {when}: {causes}"
        )
    if kind == EventKind.USERS_DROPPED:
        return (
            f"Locust's users fell to {details.get('users')} (the shape asked for "
            f"{details.get('expected')}) {when}"
        )
    return f"{kind} {when}"
