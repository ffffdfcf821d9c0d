"""Synthetic results directories with known answers, for tests and timing.

A `VariantSpec` describes what a variant "did": per engine, how many connections it held in
each part of the load phase and of the idle phase, how many of them were active, how much
memory PostgreSQL and the app used, what Locust saw. `write_run()` turns specs into a results
directory that follows docs/results.md (run.json, variant.json, samples.csv, Locust CSVs), so
a test can compute the expected answer by hand from the spec and compare.

Samples are placed in the middle of their sampling interval (t = start + (i + 0.5) / hz), so no
sample sits on a phase boundary and "which phase is this sample in" never depends on rounding.

Run as a script to time the report on a one-hour run:

    .venv/bin/python tests/synthetic.py --hour [DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

MiB = 1024 * 1024
T0 = 1_764_393_300.0
PERCENTILE_COLUMNS = [
    "50%",
    "66%",
    "75%",
    "80%",
    "90%",
    "95%",
    "98%",
    "99%",
    "99.9%",
    "99.99%",
    "100%",
]


@dataclass
class EngineSpec:
    """One engine: its pool settings and the connections it holds over time.

    `load` and `idle` are segments (fraction of the phase, connections held). The first
    `active` connections of a segment are `active`, the next `idle_in_transaction` are
    "idle in transaction", the rest "idle"; in the idle phase all are "idle".
    """

    name: str
    pool_size: int = 20
    max_overflow: int = 0
    kind: str = "async"
    module: str = ""
    load: list[tuple[float, int]] = field(default_factory=lambda: [(1.0, 20)])
    idle: list[tuple[float, int]] | None = None  # default: min(pool_size, max load level)
    warmup: int = 0
    active: int = 5
    idle_in_transaction: int = 0
    listed: bool = True  # appears in variant.json `engines`
    # a backlog still served in the idle phase: (fraction of the idle phase, active connections)
    idle_active: list[tuple[float, int]] | None = None

    def idle_segments(self) -> list[tuple[float, int]]:
        if self.idle is not None:
            return self.idle
        return [(1.0, min(self.pool_size, max(level for _, level in self.load)))]


@dataclass
class ServerLogSpec:
    """The server's own log (postgres.log) of a variant, with a known answer.

    Each engine's connections at its highest load level are sessions from the load phase's start
    to the idle phase's end. In the second half of the load phase (after the pools filled),
    evenly spaced: `reserved` backends that authenticate and are refused ("remaining connection
    slots are reserved"), `no_slot` backends refused before authenticating ("too many clients
    already"), and `short_sessions` that authenticate and disconnect 10 ms later. So, in that
    half: started = reserved + no_slot + short_sessions, authenticated = reserved +
    short_sessions, refused = reserved + no_slot.
    """

    reserved: int = 0
    no_slot: int = 0
    short_sessions: int = 0
    database: str = "bench"


@dataclass
class VariantSpec:
    name: str
    engines: list[EngineSpec]
    experiment: str = "seed-claim"
    repeat: int = 1
    workers: int = 1
    status: str = "complete"
    error: str | None = None
    warmup_s: float = 2.0
    load_s: float = 10.0
    idle_s: float = 4.0
    conn_hz: float = 10.0
    mem_hz: float = 1.0
    users: int = 150
    # Locust: per-second requests/s ~ N(rps, rps_sd), seeded by `seed`
    rps: float = 600.0
    rps_sd: float = 10.0
    rps_trend_per_s: float = 0.0  # requests/s gained (lost, if negative) each second of load
    latency_ms: tuple[float, float, float] = (20.0, 60.0, 90.0)  # p50, p95, p99
    latency_sd: float = 1.0
    failures: list[tuple[str, str, str, int]] = field(default_factory=list)
    seed: int = 1
    # churn: new sessions per second during the load phase, plus `sessions_fill` opened in its
    # first second (the pools filling)
    sessions_new_per_s: float = 0.0
    sessions_fill: int = 0
    # memory
    pss_per_connection: int = 1 * MiB
    uss_per_connection: int = MiB // 2
    rss_per_connection: int = 16 * MiB
    postmaster_pss: int = 10 * MiB
    other_pss: int = 6 * MiB
    pg_leak_bytes_per_s: float = 0.0  # added to the backends during the load phase
    app_uss: int = 60 * MiB
    app_pss: int = 65 * MiB
    app_rss: int = 80 * MiB
    app_leak_bytes_per_s: float = 0.0
    # allocator arenas filling: the app's USS/PSS/RSS climb by this over the first
    # `app_warmup_s` seconds of the load, then hold
    app_warmup_bytes: int = 0
    app_warmup_s: float = 0.0
    # (fraction of the load phase, USS from then on): e.g. one of four workers exits
    app_uss_drop: tuple[float, int] | None = None
    # PSS of pages shared by the backends (shared_buffers they touched), spread over them:
    # PostgreSQL PSS = fixed + shared_pss + n × pss_per_connection while n > 0
    shared_pss: int = 0
    # clients of other databases on the same server (a shared `--database-url`): connections
    # they hold in warm-up, load and idle, and the PSS of each one's backend
    other_clients: tuple[int, int, int] = (0, 0, 0)
    other_client_pss: int = 2 * MiB
    # PostgreSQL PSS growing with time whatever the backend count (pages faulted in)
    pss_drift_bytes_per_s: float = 0.0
    # the collector's CPU components (PostgreSQL as one tree)
    cpu: dict[str, float] = field(
        default_factory=lambda: {"app": 80.0, "postgres": 53.0, "load": 30.0, "collector": 3.0}
    )
    census: list[dict] | dict | None = None  # written as census.json when given
    pool_metrics: bool = False  # write the app's /debug/pools view (app_pool_*, 1 Hz)
    app_log: str = "INFO started\n"
    write_locust: bool = True
    # every request (requests.bin): ~rps per second evenly spaced, response times cycling
    # through `latency_cycle` (ms) when given, else log-normal around latency_ms[0]; every
    # `fail_every`-th request fails (0: none)
    write_requests: bool = True
    latency_cycle: tuple[float, ...] = ()
    fail_every: int = 0
    failed_ms: float = 2.0
    ramp_s: float = 2.0  # Locust's user count climbs to `users` over this, then holds
    events: list[dict] = field(default_factory=list)  # written to events.jsonl
    preflight: dict | None = None  # variant.json `preflight` (the slot check), when given
    app_settings: dict = field(
        default_factory=lambda: {"pool_size": 20, "max_overflow": 0, "pool_timeout": 30}
    )
    server_log: ServerLogSpec | None = None  # written as postgres.log when given
    max_connections: int = 200  # slots_left = max_connections − 3 reserved − connections
    server_settings: dict | None = None  # variant.json database.settings (pg_settings units)

    @property
    def dir(self) -> str:
        return f"{self.experiment}/{self.name}-{self.repeat}"

    def phases(self) -> list[dict]:
        w0 = T0
        l0 = w0 + self.warmup_s
        i0 = l0 + self.load_s
        return [
            {"name": "warmup", "start": w0, "end": l0},
            {"name": "load", "start": l0, "end": i0},
            {"name": "idle", "start": i0, "end": i0 + self.idle_s},
        ]


def _ticks(start: float, end: float, hz: float) -> np.ndarray:
    n = round((end - start) * hz)
    return start + (np.arange(n) + 0.5) / hz


def _segment_levels(ts: np.ndarray, start: float, end: float, segments) -> np.ndarray:
    """The connection level at each tick of a phase, from (fraction, level) segments."""
    out = np.zeros(len(ts), dtype=float)
    edge = start
    total = sum(f for f, _ in segments)
    for fraction, level in segments:
        stop = edge + (end - start) * fraction / total
        out[(ts >= edge) & (ts < stop)] = level
        edge = stop
    return out


def engine_levels(spec: VariantSpec, engine: EngineSpec, ts: np.ndarray) -> np.ndarray:
    """Connections this engine holds at each tick (the known answer)."""
    (_, w0, w1), (_, l0, l1), (_, i0, i1) = (
        (p["name"], p["start"], p["end"]) for p in spec.phases()
    )
    out = np.zeros(len(ts), dtype=float)
    out[(ts >= w0) & (ts < w1)] = engine.warmup
    mask = (ts >= l0) & (ts < l1)
    out[mask] = _segment_levels(ts[mask], l0, l1, engine.load)
    mask = (ts >= i0) & (ts < i1)
    out[mask] = _segment_levels(ts[mask], i0, i1, engine.idle_segments())
    return out


def _rows(ts, metric, value, application_name="", state="", wait_event_type="", component=""):
    n = len(ts)
    return pd.DataFrame(
        {
            "ts": ts,
            "metric": np.repeat(metric, n),
            "application_name": np.repeat(application_name, n),
            "state": np.repeat(state, n),
            "wait_event_type": np.repeat(wait_event_type, n),
            "component": np.repeat(component, n),
            "value": value,
        }
    )


def others_at(spec: VariantSpec, ts: np.ndarray) -> np.ndarray:
    """Connections other databases' clients hold at each tick (by phase)."""
    out = np.zeros(len(ts))
    for phase, n in zip(spec.phases(), spec.other_clients, strict=True):
        out[(ts >= phase["start"]) & (ts < phase["end"])] = n
    return out


def samples_frame(spec: VariantSpec) -> pd.DataFrame:
    phases = spec.phases()
    start, end = phases[0]["start"], phases[-1]["end"]
    load = phases[1]
    ts = _ticks(start, end, spec.conn_hz)
    in_load = (ts >= load["start"]) & (ts < load["end"])
    parts = []
    total = np.zeros(len(ts))
    for engine in spec.engines:
        level = engine_levels(spec, engine, ts)
        total += level
        active = np.where(in_load, np.minimum(level, engine.active), 0)
        if engine.idle_active:
            idle = spec.phases()[2]
            in_idle = (ts >= idle["start"]) & (ts < idle["end"])
            busy = _segment_levels(ts, idle["start"], idle["end"], engine.idle_active)
            active = np.where(in_idle, np.minimum(level, busy), active)
        iit = np.where(in_load, np.minimum(level - active, engine.idle_in_transaction), 0)
        idle = level - active - iit
        for state, value, wait in (
            ("active", active, "Client"),
            ("idle in transaction", iit, ""),
            ("idle", idle, ""),
        ):
            keep = value > 0  # the collector writes only groups that exist
            if keep.any():
                parts.append(_rows(ts[keep], "connections", value[keep], engine.name, state, wait))
    parts.append(_rows(ts, "connections_total", total))
    parts.append(_rows(ts, "max_connections", np.full(len(ts), float(spec.max_connections))))
    free = spec.max_connections - 3.0 - total - others_at(spec, ts)
    parts.append(_rows(ts, "slots_left", np.maximum(free, 0.0)))

    # 1 Hz series: churn, memory, processes, cpu
    mts = _ticks(start, end, spec.mem_hz)
    m_load = (mts >= load["start"]) & (mts < load["end"])
    since_load = np.clip(mts - load["start"], 0, load["end"] - load["start"])
    churn = np.where(m_load, spec.sessions_new_per_s / spec.mem_hz, 0.0)
    if spec.sessions_fill and m_load.any():
        churn[np.argmax(m_load)] += spec.sessions_fill
    parts.append(_rows(mts, "sessions_new", churn))
    for metric in ("sessions_abandoned", "sessions_fatal", "xact_rollback"):
        parts.append(_rows(mts, metric, np.zeros(len(mts))))
    parts.append(_rows(mts, "xact_commit", np.where(m_load, spec.rps / spec.mem_hz, 0.0)))

    if spec.pool_metrics:
        for engine in spec.engines:
            level = engine_levels(spec, engine, mts)
            out = np.where(m_load, np.minimum(level, engine.active + engine.idle_in_transaction), 0)
            parts.append(_rows(mts, "app_pool_checked_out", out, engine.name))
            parts.append(_rows(mts, "app_pool_checked_in", level - out, engine.name))
            parts.append(
                _rows(mts, "app_pool_size", np.full(len(mts), float(engine.pool_size)), engine.name)
            )

    leak = spec.pg_leak_bytes_per_s * since_load
    per_conn = {
        "mem_pss_bytes": spec.pss_per_connection,
        "mem_uss_bytes": spec.uss_per_connection,
        "mem_rss_bytes": spec.rss_per_connection,
    }
    total_conn = sum(engine_levels(spec, e, mts) for e in spec.engines)
    spread = np.divide(spec.shared_pss, total_conn, out=np.zeros(len(mts)), where=total_conn > 0)
    for i, engine in enumerate(spec.engines):
        level = engine_levels(spec, engine, mts)
        keep = level > 0
        if not keep.any():
            continue
        share = leak / len(spec.engines) if i < len(spec.engines) else 0
        for metric, size in per_conn.items():
            value = level * size + (share if metric != "mem_rss_bytes" else 0)
            if metric == "mem_pss_bytes":
                value = value + level * spread
            parts.append(
                _rows(mts[keep], metric, value[keep], engine.name, component="postgres_backends")
            )
        parts.append(
            _rows(mts[keep], "processes", level[keep], engine.name, component="postgres_backends")
        )
    others = others_at(spec, mts)
    extra = others * spec.other_client_pss
    drift = spec.pss_drift_bytes_per_s * (mts - mts[0])  # shared pages: PSS only
    for component, pss in (
        ("postgres_postmaster", spec.postmaster_pss),
        ("postgres_other", spec.other_pss),
    ):
        for metric in ("mem_pss_bytes", "mem_uss_bytes", "mem_rss_bytes"):
            value = np.full(len(mts), float(pss))
            if component == "postgres_postmaster" and metric == "mem_pss_bytes":
                value += np.where(total_conn > 0, 0, spec.shared_pss)  # alone, it holds them all
            if component == "postgres_other":
                value = value + extra + (drift if metric == "mem_pss_bytes" else 0.0)
            parts.append(_rows(mts, metric, value, component=component))
        n = 1.0 + (others if component == "postgres_other" else 0.0)
        parts.append(_rows(mts, "processes", np.full(len(mts), 1.0) * n, component=component))
    # the collector also writes `postgres`: every server process (the sum of the parts above)
    for metric, size in per_conn.items():
        fixed = spec.postmaster_pss + spec.other_pss
        value = total_conn * size + fixed + (leak if metric != "mem_rss_bytes" else 0) + extra
        value = value + (drift if metric == "mem_pss_bytes" else 0.0)
        if metric == "mem_pss_bytes":
            value = value + spec.shared_pss
        parts.append(_rows(mts, metric, value, component="postgres"))
    parts.append(_rows(mts, "processes", total_conn + 2 + others, component="postgres"))
    app_growth = spec.app_leak_bytes_per_s * since_load
    if spec.app_warmup_bytes:
        app_growth = app_growth + spec.app_warmup_bytes * np.clip(
            since_load / spec.app_warmup_s, 0.0, 1.0
        )
    for metric, base in (
        ("mem_uss_bytes", spec.app_uss),
        ("mem_pss_bytes", spec.app_pss),
        ("mem_rss_bytes", spec.app_rss),
    ):
        value = base + app_growth
        if spec.app_uss_drop and metric == "mem_uss_bytes":
            at = load["start"] + spec.app_uss_drop[0] * spec.load_s
            value = np.where(mts >= at, spec.app_uss_drop[1], value)
        parts.append(_rows(mts, metric, value, component="app"))
    for component, percent in spec.cpu.items():
        parts.append(_rows(mts, "cpu_percent", np.where(m_load, percent, 1.0), component=component))
    frame = pd.concat(parts, ignore_index=True)
    return frame.sort_values("ts", kind="stable", ignore_index=True)


def _log_line(ts: float, pid: int, sqlstate: str, level: str, message: str) -> str:
    stamp = pd.Timestamp(ts, unit="s", tz="UTC").strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return f"{stamp} UTC [{pid}] {sqlstate} {level}:  {message}\n"


def server_log_text(spec: VariantSpec) -> str:
    """postgres.log for `spec.server_log` (see ServerLogSpec for the known answer)."""
    log, (_, load, idle) = spec.server_log, spec.phases()
    db, user, lines, pid = log.database, "bench", [], 20_000
    auth = f"connection authorized: user={user} database={db}"

    def start(ts: float, name: str | None) -> None:
        lines.append(
            (
                ts,
                _log_line(
                    ts, pid, "00000", "LOG", f"connection received: host=127.0.0.1 port={pid}"
                ),
            )
        )
        if name is not None:
            lines.append(
                (
                    ts + 0.001,
                    _log_line(ts + 0.001, pid, "00000", "LOG", f"{auth} application_name={name}"),
                )
            )

    def end(ts: float, began: float) -> None:
        lines.append(
            (
                ts,
                _log_line(
                    ts,
                    pid,
                    "00000",
                    "LOG",
                    f"disconnection: session time: 0:00:{ts - began:06.3f} "
                    f"user={user} database={db} host=127.0.0.1 port={pid}",
                ),
            )
        )

    for engine in spec.engines:
        for _ in range(max(level for _, level in engine.load)):
            pid += 1
            start(load["start"], engine.name)
            end(idle["end"], load["start"])
    kinds = ["reserved"] * log.reserved + ["no_slot"] * log.no_slot + ["short"] * log.short_sessions
    half = (load["end"] - load["start"]) / 2
    for i, kind in enumerate(kinds):
        pid += 1
        ts = load["start"] + half + half * (i + 0.5) / len(kinds)
        start(ts, None if kind == "no_slot" else "app")
        if kind == "reserved":
            lines.append(
                (
                    ts + 0.002,
                    _log_line(
                        ts + 0.002,
                        pid,
                        "53300",
                        "FATAL",
                        "remaining connection slots are reserved for roles "
                        "with the SUPERUSER attribute",
                    ),
                )
            )
        elif kind == "no_slot":
            lines.append(
                (
                    ts + 0.002,
                    _log_line(ts + 0.002, pid, "53300", "FATAL", "sorry, too many clients already"),
                )
            )
        else:
            end(ts + 0.01, ts + 0.001)
    return "".join(line for _, line in sorted(lines, key=lambda x: x[0]))


def _history(spec: VariantSpec) -> tuple[pd.DataFrame, np.ndarray]:
    """Locust's per-second history: rows for one endpoint and for "Aggregated"."""
    load = spec.phases()[1]
    seconds = np.arange(int(load["start"]) + 1, int(load["end"]) + 1)
    rng = np.random.default_rng(spec.seed)
    rps = np.maximum(rng.normal(spec.rps, spec.rps_sd, len(seconds)), 0.0)
    p50, p95, p99 = spec.latency_ms
    noise = rng.normal(0, spec.latency_sd, len(seconds))
    users = users_at(spec, seconds)
    total = np.cumsum(rps).round()
    rows = []
    for i, second in enumerate(seconds):
        pct = [p50 + noise[i], 0, 0, 0, 0, p95 + noise[i], 0, p99 + noise[i], 0, 0, 0]
        pct = [round(v) for v in pct]
        for kind, name, share in (("GET", "/items", 1.0), ("", "Aggregated", 1.0)):
            rows.append(
                [
                    *(second, int(users[i]), kind, name, f"{rps[i] * share:2f}", "0.000000"),
                    *pct,
                    *(int(total[i]), 0, p50, p50 + 2, 1, 200, 120),
                ]
            )
    columns = [
        *("Timestamp", "User Count", "Type", "Name", "Requests/s", "Failures/s"),
        *PERCENTILE_COLUMNS,
        "Total Request Count",
        "Total Failure Count",
        "Total Median Response Time",
        "Total Average Response Time",
        "Total Min Response Time",
        "Total Max Response Time",
        "Total Average Content Size",
    ]
    return pd.DataFrame(rows, columns=columns), rps


def users_at(spec: VariantSpec, seconds: np.ndarray) -> np.ndarray:
    """Locust's user count at each history timestamp: a ramp of `ramp_s`, then `users`."""
    elapsed = seconds - spec.phases()[1]["start"]
    if spec.ramp_s <= 0:
        return np.full(len(seconds), float(spec.users))
    return np.minimum(spec.users, np.ceil(spec.users * elapsed / spec.ramp_s)).clip(min=1)


def request_arrays(spec: VariantSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start epoch s, response ms, ok) of every request of the load phase: the known answer."""
    load = spec.phases()[1]
    rng = np.random.default_rng(spec.seed + 100)
    starts = []
    for second in range(int(spec.load_s)):
        rate = spec.rps + spec.rps_trend_per_s * (second + 0.5 - spec.load_s / 2)
        n = max(1, round(rng.normal(rate, spec.rps_sd)))
        starts.append(load["start"] + second + (np.arange(n) + 0.5) / n)
    start = np.concatenate(starts)
    if spec.latency_cycle:
        response = np.resize(np.asarray(spec.latency_cycle, dtype=float), start.size)
    else:
        response = rng.lognormal(np.log(spec.latency_ms[0]), 0.5, start.size).round(3)
    ok = np.ones(start.size, dtype=bool)
    if spec.fail_every:
        ok[:: spec.fail_every] = False
        response[~ok] = spec.failed_ms
    return start, response, ok


def write_requests(spec: VariantSpec, vdir: Path) -> None:
    from poolbench.results.requests import REQUESTS_FILE, TRANSFER, RequestWriter

    start, response, ok = request_arrays(spec)
    rows = np.empty(start.size, dtype=TRANSFER)
    rows["start"], rows["response_ms"], rows["ok"], rows["name"] = start, response, ok, 0
    rows["user"] = np.arange(start.size) % spec.users
    writer = RequestWriter(vdir / REQUESTS_FILE, T0)
    writer.write(rows, [("GET", "/items")])
    writer.close()


def write_locust(spec: VariantSpec, vdir: Path) -> None:
    history, rps = _history(spec)
    history.to_csv(vdir / "locust_stats_history.csv", index=False)
    requests = int(rps.sum().round())
    failures = sum(n for *_, n in spec.failures)
    p50, p95, p99 = spec.latency_ms
    pct = [p50, p50, p50, p50, p95, p95, p99, p99, p99, p99, p99 * 2]
    columns = [
        "Type",
        "Name",
        "Request Count",
        "Failure Count",
        "Median Response Time",
        "Average Response Time",
        "Min Response Time",
        "Max Response Time",
        "Average Content Size",
        "Requests/s",
        "Failures/s",
        *PERCENTILE_COLUMNS,
    ]
    mean_rps = requests / spec.load_s
    figures = [requests, failures, p50, p50 + 2, 1, p99 * 2, 120, mean_rps, failures / spec.load_s]
    stats = pd.DataFrame(
        # one endpoint, so the "Aggregated" row repeats its figures
        [
            [method, name, *figures, *pct]
            for method, name in (("GET", "/items"), ("", "Aggregated"))
        ],
        columns=columns,
    )
    stats.to_csv(vdir / "locust_stats.csv", index=False)
    failures_frame = pd.DataFrame(
        [
            [m, n, e, c, "2026-11-29T05:15:00Z", "2026-11-29T05:15:09Z"]
            for m, n, e, c in spec.failures
        ],
        columns=["Method", "Name", "Error", "Occurrences", "First Seen", "Last Seen"],
    )
    failures_frame.to_csv(vdir / "locust_failures.csv", index=False)
    (vdir / "locust_exceptions.csv").write_text("Count,Message,Traceback,Nodes\n")
    (vdir / "locust.json").write_text("[]\n")
    (vdir / "locust.log").write_text("")


def variant_json(spec: VariantSpec) -> dict:
    return {
        "experiment": spec.experiment,
        "variant": spec.name,
        "repeat": spec.repeat,
        "dir": spec.dir,
        "status": spec.status,
        "error": spec.error,
        "label": spec.name,
        "app_dir": f"apps_{spec.name}",
        "workers": spec.workers,
        "app": spec.app_settings,
        "load": {"shape": "ramp", "users": spec.users, "spawn_rate": 50, "load_processes": 1},
        "engines": [
            {
                "name": e.name,
                "module": e.module or e.name.split(":", 1)[-1],
                "kind": e.kind,
                "pool_size": e.pool_size,
                "max_overflow": e.max_overflow,
            }
            for e in spec.engines
            if e.listed
        ],
        "phases": spec.phases(),
        "pids": {"app": 1234, "load": 1300, "postmaster": 999},
        "preflight": spec.preflight
        if spec.preflight is not None
        else {
            "reserved": 3,
            "poolbench_clients": 0,  # the synthetic slots_left leaves no room for a collector
            "other_clients": spec.other_clients[0],
        },
        **({"database": _database(spec)} if spec.server_log or spec.server_settings else {}),
    }


def _database(spec: VariantSpec) -> dict:
    """variant.json's `database`: what the server was
    (poolbench.infra.postgres.Database.describe)."""
    name = spec.server_log.database if spec.server_log else "bench"
    return {"dbname": name, "settings": spec.server_settings or {}}


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """The file `frame.to_csv(path, index=False)` writes (NaN as an empty field), twice as fast
    for the hour-long run: each distinct float is formatted once (a sample's ts and value
    repeat across its series)."""

    def as_text(column: pd.Series) -> np.ndarray:
        if column.dtype.kind != "f":
            return column.to_numpy(dtype=object)
        distinct, where = np.unique(column.to_numpy(), return_inverse=True)
        text = ["" if x != x else str(x) for x in distinct.tolist()]  # x != x: NaN
        return np.array(text, dtype=object)[where]

    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(frame.columns)
        writer.writerows(zip(*(as_text(frame[c]) for c in frame.columns), strict=True))


def write_run(
    root: Path,
    specs: list[VariantSpec],
    *,
    run_id: str = "20261129-051500-synthetic",
    status: str = "complete",
    command: str = "poolbench run --quick",
    claims: dict[str, dict] | None = None,
    sweeps: dict[str, dict] | None = None,
) -> Path:
    """Write a results directory for `specs` under `root/run_id` and return its path."""
    run_dir = Path(root) / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    experiments: dict[str, list[dict]] = {}
    for spec in specs:
        vdir = run_dir / spec.dir
        vdir.mkdir(parents=True, exist_ok=True)
        entry = variant_json(spec)
        experiments.setdefault(spec.experiment, []).append(entry)
        (vdir / "variant.json").write_text(json.dumps(entry, indent=2))
        write_csv(samples_frame(spec), vdir / "samples.csv")
        if spec.write_locust:
            write_locust(spec, vdir)
        if spec.write_requests:
            write_requests(spec, vdir)
        if spec.events:
            (vdir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in spec.events))
        (vdir / "app.log").write_text(spec.app_log)
        if spec.census is not None:
            (vdir / "census.json").write_text(json.dumps(spec.census))
        if spec.server_log is not None:
            (vdir / "postgres.log").write_text(server_log_text(spec))
    ends = [p["end"] for s in specs for p in s.phases()]
    run = {
        "schema": 1,
        "run_id": run_id,
        "status": status,
        "error": None,
        "command": command,
        "started_at": T0,
        "finished_at": max(ends),
        "config": {"postgres": {"url": "postgresql://bench:***@127.0.0.1:5432/bench"}},
        "environment": {
            "python": "3.11.7",
            "platform": "Linux-6.1-x86_64",
            "cpu_count": 2,
            "hostname": "synthetic",
            "git_revision": "7ee7b57",
            "packages": {"sqlalchemy": "2.1.9", "asyncpg": "0.32.0", "locust": "2.47.0"},
            "postgres": {
                "provider": "embedded",
                "server_version": "16.14",
                "settings": {"max_connections": "200"},
            },
        },
        "experiments": [
            {
                "name": name,
                "description": f"synthetic {name}",
                "claims": (claims or {}).get(name, {}),
                **({"sweep": sweeps[name]} if sweeps and name in sweeps else {}),
                "variants": entries,
            }
            for name, entries in experiments.items()
        ],
    }
    (run_dir / "run.json").write_text(json.dumps(run, indent=2))
    return run_dir


# --- ready-made runs -------------------------------------------------------------------------

SEED_MODULES = [
    "app.db.session",
    "app.core.database",
    "app.api.dependencies",
    "app.core.db",
    "app.db",
]


def seed_claim_specs(**overrides) -> list[VariantSpec]:
    """Five engines of pool 20 vs one: the seed's scenario, with a 10 % ramp in the load phase.

    Known answers (per variant, load phase 10 s at 10 Hz = 100 samples):
    before: 10 samples at 5 × 10 = 50, 90 at 5 × 20 = 100 → peak 100, p95 100, mean 95, idle 100.
    after: 10 samples at 10, 90 at 20 → peak 20, p95 20, mean 19, idle 20.
    """
    ramp = [(0.1, 10), (0.9, 20)]
    before = VariantSpec(
        name="before",
        engines=[EngineSpec(name=f"before:{m}", load=ramp, active=4) for m in SEED_MODULES],
        **overrides,
    )
    after = VariantSpec(
        name="after",
        engines=[EngineSpec(name="after:app.db.session", load=ramp, active=20)],
        seed=2,
        **overrides,
    )
    return [before, after]


def hour_specs(engines: int = 8) -> list[VariantSpec]:
    """A one-hour load phase at 10 Hz: 36,000 samples per 10 Hz series.

    Per variant: `engines` × (active, idle) connection series, one "idle in transaction" series,
    connections_total, max_connections and slots_left = 2 × 8 + 1 + 3 = 20 series at 10 Hz,
    plus the 1 Hz memory/CPU series.
    """
    specs = []
    for name, n in (("before", engines), ("after", 1)):
        specs.append(
            VariantSpec(
                name=name,
                engines=[
                    EngineSpec(name=f"{name}:app.m{i}", load=[(0.05, 10), (0.95, 20)], active=6)
                    for i in range(n)
                ],
                warmup_s=0.0,
                load_s=3600.0,
                idle_s=60.0,
                seed=len(specs) + 1,
                rps=100.0,
            )
        )
    # the "after" variant gets as many 10 Hz series as "before" (engines × 2 states)
    specs[1].engines = [
        EngineSpec(name=f"after:app.m{i}", load=[(0.05, 2), (0.95, 4)], active=2, pool_size=4)
        for i in range(engines)
    ]
    for spec in specs:
        spec.engines[0].idle_in_transaction = 1
    return specs


def _time_hour(directory: Path) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from poolbench.report import build_report

    t = time.perf_counter()
    run_dir = write_run(directory, hour_specs(), run_id="hour")
    generated = time.perf_counter() - t
    frame = pd.read_csv(run_dir / "seed-claim/before-1/samples.csv", keep_default_na=False)
    rows = len(frame)
    per_series = frame.groupby(["metric", "application_name", "state", "component"]).size()
    t = time.perf_counter()
    build_report(run_dir)
    took = time.perf_counter() - t
    print(
        f"generated {run_dir} in {generated:.1f} s: {rows} rows per variant, "
        f"{int((per_series >= 36_000).sum())} series with ≥36,000 samples per variant, 2 variants"
    )
    print(f"poolbench report: {took:.2f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hour", action="store_true", help="time the report on a one-hour run")
    parser.add_argument("dir", nargs="?", help="where to write (default: a temporary directory)")
    args = parser.parse_args(argv)
    if args.dir:
        directory = Path(args.dir)
        if args.hour:
            return _time_hour(directory)
        print(write_run(directory, seed_claim_specs()))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        if args.hour:
            return _time_hour(Path(tmp))
        print(write_run(Path(tmp), seed_claim_specs()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def write_probe(vdir: Path, processes: dict[int, dict]) -> None:
    """The pool probe's files for a variant, in its format (poolbench/probe/site):
    `processes` maps a pid to {"engines": [engine line fields], "samples": [sample fields],
    "records": [(t, a, b, engine, kind)], "names": {engine: (name, source)}}."""
    from poolbench.results.pool_probe import RECORD_DTYPE

    folder = vdir / "probe"
    folder.mkdir(parents=True, exist_ok=True)
    for pid, p in processes.items():
        lines = [
            {
                "type": "process",
                "schema": 1,
                "pid": pid,
                "ppid": 1,
                "t": T0,
                "python": "3.11.7",
                "sqlalchemy": "2.1.9",
                "interval_s": 0.1,
            }
        ]
        lines += [{"type": "engine", **e} for e in p["engines"]]
        lines += [
            {"type": "application_name", "engine": e, "name": n, "source": s, "t": T0}
            for e, (n, s) in p.get("names", {}).items()
        ]
        lines += [{"type": "sample", **s} for s in p["samples"]]
        lines.append({"type": "end", "t": T0 + 100})
        (folder / f"{pid}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
        records = np.array([tuple(r) for r in p["records"]], dtype=RECORD_DTYPE)
        (folder / f"{pid}.bin").write_bytes(records.tobytes())
