"""postgres.log read back: sessions, refusals and the exact connection count, on real logs.

Every log here is written by a real embedded PostgreSQL during the test; nothing is a
hand-edited fixture. The cut-log tests cut that real text.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import psycopg
import pytest
from conftest import fresh_database, with_db

from poolbench.analysis import timeline
from poolbench.collector import APPLICATION_NAME, CollectorConfig, CollectorThread
from poolbench.infra.postgres import Database, embedded_server
from poolbench.results import pglog
from poolbench.results.samples import connections_wide, read_samples

pytestmark = pytest.mark.slow

ODD_NAME = "odd app [1] ünï 'q' |x| " + "x" * 60  # spaces, brackets, non-ASCII, > 63 bytes
SECRET = "hunter2-secret"


def _backend(conn: psycopg.Connection) -> tuple[int, str]:
    """The backend's pid and its application_name as pg_stat_activity shows it."""
    return conn.execute(
        "SELECT pid, application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()"
    ).fetchone()


def _connect_until_refused(url: str, name: str, conns: list, limit: int = 50) -> str:
    """Open connections until the server refuses one; the refusal's message."""
    for _ in range(limit):
        try:
            conns.append(psycopg.connect(url, application_name=name, autocommit=True))
        except psycopg.OperationalError as exc:
            return str(exc)
    raise AssertionError(f"{limit} connections and no refusal")


def _connect(url: str, name: str = "", timeout: float = 30) -> psycopg.Connection:
    """Connect, retrying while slots are still held by backends that are exiting (or while
    the server recovers from a crash)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return psycopg.connect(url, application_name=name, connect_timeout=2)
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A small server (10 slots, 3 reserved) put through every case, its log kept."""
    kept = tmp_path_factory.mktemp("pglog") / "postgres.log"
    facts: dict = {"log": kept}
    with embedded_server(settings={"max_connections": "10"}, keep_log=kept) as db:
        facts["dbname"] = db.dbname
        facts["live_log"] = db.server_log
        with psycopg.connect(
            with_db(db.admin_url, "postgres"), autocommit=True, application_name="test-admin"
        ) as admin:
            # an odd application_name, a multi-line statement, a password in a failed statement
            t0 = time.time()
            with psycopg.connect(db.app_url, application_name=ODD_NAME, autocommit=True) as odd:
                facts["odd_pid"], facts["odd_seen"] = _backend(odd)
                with contextlib.suppress(psycopg.Error):
                    odd.execute("SELECT 1/0,\n  'multi\nline'")
                with contextlib.suppress(psycopg.Error):
                    odd.execute(f"CREATE ROLE intruder LOGIN PASSWORD '{SECRET}'")
            facts["odd_window"] = (t0, time.time())
            # the collector's own name in the target database: left out as the collector does
            with psycopg.connect(db.app_url, application_name=APPLICATION_NAME) as own:
                facts["collector_pid"] = _backend(own)[0]
            # a burst up to both refusals: reserved slots (app role), then every slot
            conns: list[psycopg.Connection] = []
            facts["burst_start"] = time.time()
            facts["reserved_refusal"] = _connect_until_refused(db.app_url, "burst", conns)
            facts["n_burst"] = len(conns)
            facts["full_refusal"] = _connect_until_refused(db.admin_url, "super", conns)
            facts["n_super"] = len(conns) - facts["n_burst"]
            for conn in conns:
                conn.close()
            facts["burst_end"] = time.time()
            admin.execute("CHECKPOINT")  # a line from another process
            # a crash: one backend killed, the other one ends without a disconnection line
            killed, survivor = _connect(db.app_url, "held"), _connect(db.app_url, "held")
            facts["killed_pid"], facts["survivor_pid"] = _backend(killed)[0], _backend(survivor)[0]
        os.kill(facts["killed_pid"], signal.SIGKILL)
        _connect(db.app_url).close()  # the server is back after its crash recovery
        with contextlib.suppress(psycopg.Error):
            killed.close()
            survivor.close()
        last = _connect(db.app_url, "last")
        facts["last_pid"] = _backend(last)[0]  # still open when the server is stopped
    with contextlib.suppress(psycopg.Error):
        last.close()
    facts["text"] = kept.read_text()
    facts["parsed"] = pglog.read_log(kept)
    return facts


def _session(log: pglog.ServerLog, pid: int) -> pglog.Session:
    [found] = [s for s in log.sessions if s.pid == pid]
    return found


def test_sessions_carry_names_and_times_as_the_server_saw_them(scenario: dict) -> None:
    log = scenario["parsed"]
    odd = _session(log, scenario["odd_pid"])
    assert odd.application_name == scenario["odd_seen"]  # cleaned and cut, as pg_stat_activity
    assert len(odd.application_name) == pglog.NAMEDATALEN_BYTES
    assert (odd.user, odd.database) == ("poolbench_app", scenario["dbname"])
    start, end = scenario["odd_window"]
    assert start - 0.001 <= odd.received_at <= odd.authorized_at <= min(end, odd.ended_at)
    assert odd.end == "disconnection" and odd.established
    assert odd.session_time_s == pytest.approx(odd.ended_at - odd.received_at, abs=0.01)
    assert odd.client and odd.client.startswith("127.0.0.1:")
    assert log.unparsed_lines == 0 and not log.cut
    assert not scenario["live_log"].exists()  # the server's own directory is gone


def test_multi_line_messages_and_other_processes_are_read_not_counted(scenario: dict) -> None:
    recs = [r for r in pglog.records(scenario["text"].splitlines(keepends=True)) if r]
    statement = [r for r in recs if r.level == "STATEMENT" and "multi" in r.message]
    assert statement and "'multi\nline'" in statement[0].message
    checkpoint = [r for r in recs if r.message.startswith("checkpoint starting: immediate")]
    assert checkpoint and checkpoint[0].pid not in {s.pid for s in scenario["parsed"].sessions}


def test_refusals_are_counted_apart_and_never_become_sessions(scenario: dict) -> None:
    log = scenario["parsed"]
    assert "reserved for roles with the SUPERUSER attribute" in scenario["reserved_refusal"]
    assert "too many clients already" in scenario["full_refusal"]
    reserved, full = log.refusals
    assert reserved.message.startswith("remaining connection slots are reserved")
    assert (reserved.user, reserved.application_name) == ("poolbench_app", "burst")
    assert full.message == "sorry, too many clients already" and full.user is None
    refused = _session(log, reserved.pid)  # authorized, then refused: not a session
    assert refused.end == "startup_failed" and not refused.established
    burst = [s for s in log.sessions if s.application_name == "burst" and s.established]
    assert len(burst) == scenario["n_burst"]


def test_every_backend_started_is_kept_with_how_it_ended_and_why_refused(scenario: dict) -> None:
    """Issue 22: a real server's log, both kinds of FATAL 53300 and the backends behind them."""
    log = scenario["parsed"]
    reserved, full = log.refusals
    assert (reserved.reason, full.reason) == (pglog.RESERVED, pglog.NO_SLOT)
    # the log stamps milliseconds (%m), so a backend forked in the burst's first millisecond
    # can read up to 1 ms before the clock the test read before it
    start, end = scenario["burst_start"] - 0.001, scenario["burst_end"]
    burst = [b for b in log.backends if start <= b.started_at <= end]
    # each connection of the burst, then the two refused attempts: every one a fork
    assert len(burst) == scenario["n_burst"] + scenario["n_super"] + 2
    by_pid = {b.pid: b for b in burst}
    assert by_pid[reserved.pid].authorized and by_pid[reserved.pid].refused == pglog.RESERVED
    assert not by_pid[full.pid].authorized and by_pid[full.pid].refused == pglog.NO_SLOT
    assert sum(b.refused is None for b in burst) == scenario["n_burst"] + scenario["n_super"]


def test_timeline_has_the_exact_peaks_and_leaves_the_collector_out(scenario: dict) -> None:
    tl = timeline.timelines(scenario["parsed"], scenario["dbname"])
    n_burst, n_super = scenario["n_burst"], scenario["n_super"]
    assert tl.by_application["burst"].peak().count == n_burst
    assert tl.by_application["super"].peak().count == n_super
    # 10 slots: the burst, the superusers and test-admin (in the postgres database) held all
    assert n_burst + n_super + 1 == 10
    peak = tl.total.peak()
    assert peak.count == n_burst + n_super
    assert scenario["burst_start"] - 0.001 <= peak.ts <= scenario["burst_end"]
    assert APPLICATION_NAME not in tl.by_application
    assert _session(scenario["parsed"], scenario["collector_pid"]).database == scenario["dbname"]
    everyone = timeline.timelines(scenario["parsed"], scenario["dbname"], exclude=())
    assert everyone.by_application[APPLICATION_NAME].peak().count == 1
    assert tl.by_application["burst"].counts[-1] == tl.by_application["super"].counts[-1] == 0


def test_a_crash_ends_the_killed_backend_and_every_other(scenario: dict) -> None:
    log = scenario["parsed"]
    killed = _session(log, scenario["killed_pid"])
    survivor = _session(log, scenario["survivor_pid"])
    assert killed.end == "killed" and killed.session_time_s is None
    assert survivor.end == "server_stopped" and survivor.ended_at >= killed.ended_at
    last = _session(log, scenario["last_pid"])  # open at the stop: the shutdown ends it
    assert last.end == "disconnection" and last.error.startswith("57P01 ")
    assert timeline.timelines(log, scenario["dbname"]).total.counts[-1] == 0


def test_a_log_cut_mid_line_drops_that_line_and_keeps_the_rest(scenario: dict) -> None:
    text, pid = scenario["text"], scenario["odd_pid"]
    authorized = text.index(f"[{pid}] 00000 LOG:  connection authorized")
    line_end = text.index("\n", authorized) + 1
    inside = pglog.parse_log(text[: line_end - 10])  # cut inside the odd name
    assert inside.cut and pid not in {s.pid for s in inside.sessions}
    assert inside.unparsed_lines == 0
    after = pglog.parse_log(text[:line_end])  # whole line: the session is open at the end
    odd = _session(after, pid)
    assert not after.cut and odd.ended_at is None and odd.end is None
    tl = timeline.timelines(after, scenario["dbname"])
    assert tl.total.counts[-1] == 1 and tl.by_application[odd.application_name].at(1e12) == 1


def test_the_kept_log_masks_the_password(scenario: dict) -> None:
    assert SECRET not in scenario["text"]
    assert "CREATE ROLE intruder LOGIN PASSWORD ***" in scenario["text"]


def test_spikes_between_samples_known_answer() -> None:
    """Steps 1, 3, 1, 0 at t = 1, 2, 3, 4; samples at 0, 1.5 (saw 1) and 5 (saw 0)."""
    tl = timeline.Timeline((1.0, 2.0, 3.0, 4.0), (1, 3, 1, 0))
    check = timeline.compare_with_samples(tl, [0.0, 1.5, 5.0])
    assert check.exact == timeline.Peak(3, 2.0) and check.sampled == timeline.Peak(1, 1.5)
    assert check.missed == 2
    [spike] = check.spikes
    assert (spike.gap_start, spike.gap_end, spike.start, spike.end) == (1.5, 5.0, 2.0, 3.0)
    assert (spike.peak, spike.peak_ts, spike.sampled, spike.above_s) == (3, 2.0, 1, 1.0)
    assert timeline.compare_with_samples(tl, [0.0, 1.5, 5.0], min_duration_s=1.5).spikes == []
    assert timeline.compare_with_samples(tl, [0.0, 2.5, 5.0]).spikes == []  # a sample saw 3


# --------------------------------------------------------------------------- vs the collector


def _next_sample(collector: CollectorThread, after: float | None, timeout: float = 5) -> float:
    deadline = time.monotonic() + timeout
    while (ts := collector.latest().ts) is None or (after is not None and ts <= after):
        assert time.monotonic() < deadline, "the collector took no sample"
        time.sleep(0.01)
    return ts


def _burst_between_samples(
    collector: CollectorThread, url: str, n: int
) -> tuple[float, float, float]:
    """Open n connections and close them all between two 1 Hz samples (retried if not):
    when the first opened, when the last close began, when it had returned."""
    for _ in range(3):
        sampled_at = _next_sample(collector, _next_sample(collector, None))
        start = time.time()
        conns = [psycopg.connect(url, application_name="burst") for _ in range(n)]
        for conn in conns[:-1]:
            conn.close()
        last_close = time.time()  # the last backend ends after this, whatever the scheduler does
        conns[-1].close()
        end = time.time()
        # the backends leave pg_stat_activity a moment after close() returns: give them 0.2 s
        if _next_sample(collector, sampled_at) > end + 0.2:
            return start, last_close, end
    pytest.fail("could not fit the burst between two samples")


def _session_ended(log_path: Path, dbname: str, n: int) -> pglog.ServerLog:
    """The live log, once the burst's n disconnections are written (they follow the close)."""
    deadline = time.monotonic() + 10
    while True:
        log = pglog.read_log(log_path)
        ended = [s for s in log.sessions if s.database == dbname and s.end == "disconnection"]
        if len([s for s in ended if s.application_name == "burst"]) >= n:
            return log
        assert time.monotonic() < deadline, "the burst's disconnections never reached the log"
        time.sleep(0.1)


def test_a_burst_between_two_samples_is_found_by_the_log_only(pg: Database, tmp_path: Path) -> None:
    n = 12
    with fresh_database(pg, "pglog") as dbname:
        out = tmp_path / "samples.csv"
        config = CollectorConfig(
            with_db(pg.admin_url, dbname),
            dbname,
            out,
            connections_hz=1.0,
            monitor_dbname=None,  # the collector's own session is in the target's log too
        )
        url = with_db(pg.app_url, dbname)
        with CollectorThread(config) as collector, psycopg.connect(url) as untagged:
            start, last_close, end = _burst_between_samples(collector, url, n)
            _next_sample(collector, end + 1.0)
            untagged.execute("SELECT 1")
        log = _session_ended(pg.server_log, dbname, n)
    wide = connections_wide(read_samples(out))
    assert [c for c in wide.columns if c.startswith("untagged:")]  # labelled by its owner
    exact = timeline.timelines(log, dbname)
    assert set(exact.by_application) == {"burst", ""}  # the collector's session is left out
    found = timeline.compare_by_application(exact, list(wide.index), wide)
    check = found.by_application["burst"]
    assert check.exact.count == n and start - 0.001 <= check.exact.ts <= end
    assert check.sampled.count < n
    [spike] = check.spikes
    assert spike.gap_start < start and end < spike.gap_end
    assert (spike.peak, spike.sampled) == (n, check.sampled.count)
    assert start - 0.001 <= spike.start < spike.end < spike.gap_end
    assert spike.end >= last_close - 0.001  # the log's times are cut to the millisecond
    untagged_check = found.by_application[""]  # the collector's untagged:… labels, folded
    assert untagged_check.exact.count == untagged_check.sampled.count == 1
    assert not untagged_check.spikes and found.sampled_only == []
    assert found.total.exact.count == n + 1 and len(found.total.spikes) == 1
