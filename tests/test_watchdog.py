"""The watchdog on real processes: exits with their status, replacements, a crash-restart of
PostgreSQL, and users lost that the load shape did not ask for."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg
import pytest

from poolbench.collector.procfs import exit_status, read_stat
from poolbench.config.bench import LoadSettings
from poolbench.infra.postgres import embedded_server
from poolbench.run.events import RunEvents, VariantRef
from poolbench.run.watchdog import STALL_S, VariantFault, Watchdog, shape_target

pytestmark = pytest.mark.slow

# a master that keeps one worker alive, as uvicorn --workers does
SUPERVISOR = """
import subprocess, sys, time
def worker():
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
child = worker()
print(child.pid, flush=True)
while True:
    time.sleep(1.0)  # uvicorn looks every 0.5 s: a dead worker is a zombie until then
    if child.poll() is not None:
        child = worker()
"""


def _ref(tmp_path: Path) -> VariantRef:
    return VariantRef("e", "v", 1, "1/1", tmp_path)


def _collect(events: RunEvents) -> list[dict]:
    seen: list[dict] = []
    events.lifecycle.add_listener(
        lambda ref, kind, ts, **d: seen.append({"kind": kind, "ts": ts, **d})
    )
    return seen


def _until(dog: Watchdog, seen: list[dict], kind: str, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(VariantFault):
            dog.check()
        for event in seen:
            if event["kind"] == kind:
                return event
        time.sleep(0.1)
    pytest.fail(f"no {kind} event; saw {seen}")


def test_zombie_exit_status_is_read_in_popens_convention() -> None:
    killed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    exited = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    os.kill(killed.pid, signal.SIGKILL)
    time.sleep(0.5)  # both are zombies now: not reaped yet
    assert exit_status(killed.pid) == -9
    assert exit_status(exited.pid) == 3
    assert (killed.wait(), exited.wait()) == (-9, 3)
    assert read_stat(killed.pid) is None


def test_a_worker_exit_degrades_and_a_master_exit_is_a_fault(tmp_path: Path) -> None:
    master = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    worker = int(master.stdout.readline())
    time.sleep(1.2)  # a worker is announced once it has lived a second
    events = RunEvents()
    seen = _collect(events)
    try:
        with Watchdog(events, _ref(tmp_path)) as dog:
            dog.watch_app(master.pid)
            _until(dog, seen, "app_process_started")
            os.kill(worker, signal.SIGKILL)
            exited = _until(dog, seen, "app_process_exited")
            assert (exited["pid"], exited["role"], exited["exit_status"]) == (worker, "worker", -9)
            replaced = [e for e in seen if e["kind"] == "app_process_started"]
            deadline = time.monotonic() + 5
            while len(replaced) < 3 and time.monotonic() < deadline:  # master, worker, new one
                dog.check()
                replaced = [e for e in seen if e["kind"] == "app_process_started"]
                time.sleep(0.1)
            assert [e["role"] for e in replaced] == ["master", "worker", "worker"]
            assert dog.outcome()[0] == "degraded"
            os.kill(master.pid, signal.SIGKILL)
            with pytest.raises(
                VariantFault, match=rf"master process \(pid {master.pid}\) exited \(signal 9\)"
            ):
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:
                    dog.check()
                    time.sleep(0.1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(master.pid, signal.SIGKILL)  # the worker the dead master left too
        master.wait()


def test_a_worker_announced_in_the_next_phase_belongs_to_the_phase_it_started_in(
    tmp_path: Path,
) -> None:
    """On a fast machine the load can begin before a worker has lived the second that gets it
    announced: its start is still 'starting', and a worker started under load is 'load'."""
    master = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    worker = int(master.stdout.readline())
    events = RunEvents()
    seen = _collect(events)
    ref = _ref(tmp_path)
    try:
        with Watchdog(events, ref) as dog:
            dog.watch_app(master.pid)
            time.sleep(0.3)  # a start time is known to a clock tick or two, not to the ms
            load_start = time.time()
            events.phase_started.fire(ref=ref, phase="load", length_s=60, ts=load_start)
            first = _until(dog, seen, "app_process_started")
            started = _started_workers(dog, seen, 1)
            assert first["role"] == "master"
            assert [(e["pid"], e["phase"], "t" in e) for e in started] == [
                (worker, "starting", False)
            ]
            os.kill(worker, signal.SIGKILL)
            replacement = _started_workers(dog, seen, 2)[1]
            assert replacement["phase"] == "load"
            assert 0 < replacement["t"] < time.time() - load_start
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(master.pid, signal.SIGKILL)
        master.wait()


def _started_workers(dog: Watchdog, seen: list[dict], count: int) -> list[dict]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(VariantFault):
            dog.check()
        found = [e for e in seen if e["kind"] == "app_process_started" and e["role"] == "worker"]
        if len(found) >= count:
            return found
        time.sleep(0.1)
    pytest.fail(f"fewer than {count} workers announced; saw {seen}")


def test_a_postgres_crash_restart_is_seen_and_degrades(tmp_path: Path) -> None:
    """A backend killed with SIGKILL makes the postmaster restart every server process."""
    with embedded_server() as server:
        events = RunEvents()
        seen = _collect(events)
        with Watchdog(events, _ref(tmp_path)) as dog:
            dog.watch_postgres(server.postmaster_pid)
            with psycopg.connect(server.admin_url, autocommit=True) as conn:
                backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
                os.kill(backend, signal.SIGKILL)
                restarted = _until(dog, seen, "postgres_restarted", timeout=20)
        assert restarted["pid"] == server.postmaster_pid
        status, reason = dog.outcome()
        assert status == "degraded" and "restarted after a crash" in reason
        assert not [e for e in seen if e["kind"] == "postgres_exited"]


def test_a_server_restarted_by_pg_ctl_is_a_restart_not_a_fault(tmp_path: Path) -> None:
    """The postmaster exits and a new one listens on the same port: `degraded`, not `failed`."""
    with embedded_server() as server:
        events = RunEvents()
        seen = _collect(events)
        postmaster = psutil.Process(server.postmaster_pid)
        data = Path(postmaster.cwd())
        with Watchdog(events, _ref(tmp_path)) as dog:
            dog.watch_postgres(server.postmaster_pid, server.port)
            subprocess.run(
                [
                    str(Path(postmaster.exe()).with_name("pg_ctl")),
                    "-D",
                    str(data),
                    "-l",
                    str(data.parent / "server.log"),
                    "-m",
                    "fast",
                    "-w",
                    "restart",
                ],
                user=postmaster.username() if os.geteuid() == 0 else None,
                check=True,
                capture_output=True,
                timeout=60,
            )
            restarted = _until(dog, seen, "postgres_restarted")
        assert [e["kind"] for e in seen] == ["postgres_exited", "postgres_restarted"]
        assert restarted["pid"] != server.postmaster_pid
        assert dog.outcome()[0] == "degraded" and dog.fault is None


def _users_seen(tmp_path: Path, load: LoadSettings, t: float, counts: list[int]) -> list[dict]:
    """Feed Locust's user counts into a load phase of 60 s begun `t` s ago (its Locust: this
    process); the users_dropped events the watchdog fired."""
    events = RunEvents()
    seen = _collect(events)
    ref = _ref(tmp_path)
    with Watchdog(events, ref) as dog:
        events.phase_started.fire(ref=ref, phase="load", length_s=60, ts=time.time() - t)
        dog.watch_locust(os.getpid(), time.time() + 60 - t, None, shape_target(load, 60))
        for users in counts:
            events.live.fire(ref=ref, users=users)
    assert dog.outcome()[0] == ("degraded" if seen else "complete")
    return [e for e in seen if e["kind"] == "users_dropped"]


def test_users_lost_mid_load_are_a_drop_the_steady_shape_did_not_ask_for(tmp_path: Path) -> None:
    steady = LoadSettings(shape="steady", users=10)
    assert _users_seen(tmp_path, steady, 10, [2, 6, 10, 10, 10]) == []  # spawning, then all
    drops = _users_seen(tmp_path, steady, 10, [2, 6, 10, 10, 10, 7, 7, 4])
    assert [(e["users"], e["expected"]) for e in drops] == [(7, 10), (4, 10)]  # new lows once


def test_the_spike_shape_lowering_its_users_is_no_drop(tmp_path: Path) -> None:
    # 50 s into a 60 s spike: the burst (middle third) is over, 10 users are asked for
    spike = LoadSettings(shape="spike", users=100)
    assert _users_seen(tmp_path, spike, 50, [100, 10, 10]) == []
    assert [e["users"] for e in _users_seen(tmp_path, spike, 50, [100, 10, 6])] == [6]


def test_locust_ending_before_its_time_degrades(tmp_path: Path) -> None:
    events = RunEvents()
    seen = _collect(events)
    early = subprocess.Popen([sys.executable, "-c", "pass"])
    with Watchdog(events, _ref(tmp_path)) as dog:
        dog.watch_locust(early.pid, time.time() + 30, early.poll)
        event = _until(dog, seen, "locust_exited")
    assert (event["exit_status"], event["early"]) == (0, True)
    assert dog.outcome()[0] == "degraded"


def _stalled(dog: Watchdog, seen: list[dict], timeout: float = 15) -> dict:
    return _until(dog, seen, "stalled", timeout=timeout)


def test_an_app_stopped_with_sigstop_is_a_stall_with_its_span(tmp_path: Path) -> None:
    """SIGSTOP, 2 s, SIGCONT: a `stalled` event from the stop to the resume; `degraded`."""
    app = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    events = RunEvents()
    seen = _collect(events)
    ref = _ref(tmp_path)
    try:
        with Watchdog(events, ref) as dog:
            dog.watch_app(app.pid)
            load_start = time.time()
            events.phase_started.fire(ref=ref, phase="load", length_s=60, ts=load_start)
            time.sleep(0.5)
            stopped = time.time()
            os.kill(app.pid, signal.SIGSTOP)
            time.sleep(2.0)
            os.kill(app.pid, signal.SIGCONT)
            resumed = time.time()
            stall = _stalled(dog, seen)
        assert stall["causes"] == ["app_stopped"]
        assert stopped - 0.1 <= stall["ts"] <= stopped + 0.6  # polled at 4 Hz
        assert resumed - 0.1 <= stall["end"] <= resumed + 0.6
        assert stall["phase"] == "load" and 0.3 < stall["t"] < 1.2
        status, reason = dog.outcome()
        assert status == "degraded"
        assert reason.startswith(f"the variant stalled for {stall['duration_s']} s, starting at ")
        assert reason.endswith(
            "(load phase, t = " + f"{stall['t']:.1f} s): the app's processes were stopped (state T)"
        )
    finally:
        app.kill()
        app.wait()


def test_postgres_stopped_and_not_answering_the_collector_is_a_stall(tmp_path: Path) -> None:
    """Every PostgreSQL process stopped: seen in /proc, and as a collector whose newest sample
    stops advancing (it cannot query a stopped server)."""
    with embedded_server() as server:
        events = RunEvents()
        seen = _collect(events)
        pids = [
            server.postmaster_pid,
            *(p.pid for p in psutil.Process(server.postmaster_pid).children()),
        ]
        newest = [time.time()]
        try:
            with Watchdog(events, _ref(tmp_path)) as dog:
                dog.watch_postgres(server.postmaster_pid, server.port)
                dog.watch_collector(lambda: newest[0])
                for pid in pids:  # a backend may end between the listing and the signal
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGSTOP)
                time.sleep(6.0)  # past SILENT_S with no new sample
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGCONT)
                newest[0] = time.time()  # the collector's next sample
                stall = _stalled(dog, seen)
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        assert stall["causes"] == ["postgres_stopped", "postgres_silent"]
        assert 5.5 <= stall["duration_s"] <= 7.5
        assert dog.outcome()[0] == "degraded" and dog.fault is None


def test_no_request_completed_while_users_are_active_is_a_stall(tmp_path: Path) -> None:
    """Locust's figures (users, requests completed) fed as the runner does: a count that
    stops growing for STALL_S with users active is a stall; users gone, it is not."""
    events = RunEvents()
    seen = _collect(events)
    with Watchdog(events, _ref(tmp_path)) as dog:
        for requests in range(0, 60, 10):  # 20 requests a second
            dog.load_progress(10, requests)
            time.sleep(0.5)
        stuck = time.time()
        for _ in range(12):  # 6 s: the count does not move
            dog.load_progress(10, 50)
            time.sleep(0.5)
        resumed = time.time()  # before the count moves: the stall may end the moment it does
        dog.load_progress(10, 60)
        time.sleep(0.5)  # told once requests are seen completing after its causes cleared
        dog.check()
        assert [e["kind"] for e in seen] == []
        dog.load_progress(10, 70)
        stall = _stalled(dog, seen)
        assert stall["causes"] == ["no_requests"]
        assert stuck - 0.6 <= stall["ts"] <= stuck
        # the poll after the count moved; "end" is rounded to the millisecond
        assert resumed - 0.0005 <= stall["end"] <= resumed + 0.3
        dog.load_progress(0, 60)  # the users stopped: no requests is no stall
        time.sleep(STALL_S + 0.5)
        dog.check()
    assert [e["kind"] for e in seen] == ["stalled"]


def test_figures_that_have_not_been_written_yet_are_no_stall(tmp_path: Path) -> None:
    """Locust flushes its stats history every few seconds: between flushes the newest row on
    disk, and so the count, stays as it was. A stall is judged on the rows' own times, so a
    count that has not moved while no newer row came is no stall (a default `make bench`
    reported two false 5 s stalls per variant: requests.bin's longest gap was 0.14 s); one
    that newer rows show still has not moved is."""
    events = RunEvents()
    seen = _collect(events)
    base = time.time()
    with Watchdog(events, _ref(tmp_path)) as dog:
        for second in range(3):  # 20 requests a second, rows stamped by Locust
            dog.load_progress(10, 20 * second, base + second)
        for _ in range(int(2 * STALL_S) + 2):  # no newer row for over 2 × STALL_S of wall time
            dog.load_progress(10, 40, base + 2)
            time.sleep(0.5)
            dog.check()
        assert [e["kind"] for e in seen] == []
        stuck = base + 2
        for second in range(3, 3 + int(STALL_S) + 2):  # newer rows: the count has not moved
            dog.load_progress(10, 40, base + second)
        time.sleep(0.6)  # a poll finds it
        dog.load_progress(10, 60, base + 3 + int(STALL_S) + 2)
        stall = _stalled(dog, seen)
    assert stall["causes"] == ["no_requests"] and stall["ts"] == stuck


def test_the_sockets_a_process_listens_on_and_which_are_beyond_loopback() -> None:
    import socket

    from poolbench.collector.sockets import beyond_loopback, listening

    opened = []
    for family, address in (
        (socket.AF_INET, "127.0.0.1"),
        (socket.AF_INET, "0.0.0.0"),
        (socket.AF_INET6, "::1"),
    ):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.bind((address, 0))
        sock.listen()
        opened.append(sock)
    try:
        ports = [s.getsockname()[1] for s in opened]
        mine = [end for end in listening([os.getpid()]) if end[1] in ports]
        assert sorted(mine) == sorted(zip(("127.0.0.1", "0.0.0.0", "::1"), ports, strict=True))
        assert beyond_loopback(mine) == [("0.0.0.0", ports[1])]
        assert beyond_loopback([("::ffff:127.0.0.1", 1), ("::", 2)]) == [("::", 2)]
    finally:
        for sock in opened:
            sock.close()


def test_the_postmaster_alone_stopped_is_a_stall(tmp_path: Path) -> None:
    """Its backends still serve the sessions they have, but no new connection is accepted."""
    with embedded_server() as server:
        events = RunEvents()
        seen = _collect(events)
        try:
            with Watchdog(events, _ref(tmp_path)) as dog:
                dog.watch_postgres(server.postmaster_pid, server.port)
                stopped, resumed = time.time(), None
                os.kill(server.postmaster_pid, signal.SIGSTOP)
                time.sleep(1.5)
                os.kill(server.postmaster_pid, signal.SIGCONT)
                resumed = time.time()
                stall = _stalled(dog, seen)
        finally:
            if resumed is None:
                os.kill(server.postmaster_pid, signal.SIGCONT)
        assert stall["causes"] == ["postgres_stopped"]
        assert stopped - 0.1 <= stall["ts"] <= stopped + 0.6
        assert resumed - 0.1 <= stall["end"] <= resumed + 0.6
