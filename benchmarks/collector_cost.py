"""What the collector costs at 120 PostgreSQL backends under load, and where it goes.

A throwaway embedded PostgreSQL (as `make bench` starts), an 8 MB table, 120 client
backends of the target database kept busy reading it from a few load threads (so every
backend's memory counters keep moving, as under a real load), and the collector with its
`make bench` settings (10 Hz connections, 1.1 Hz memory, refresh 2 s, 1 % memory budget).
Measured after a warm-up, in CPU seconds of the collector's own threads (/proc/self/task),
not the wall clock: the machine is shared.

Prints: the collector's CPU as % of one core (budget 2 %, 1.2 % on a fast machine), the
longest a moved process's memory waited (`memory_refresh_max_s`, budget 2 s), and the
breakdown per thread and per activity: the connection thread (10 Hz pg_stat_activity
samples, churn, plans), the sweeps thread (process tree and stat reads, statm checks,
smaps_rollup re-reads: their count and CPU), the rest. `--profile` adds cProfile's top
functions per collector thread.

`--ramp 20 --moving` is closer to a `make bench` before variant (its 120 backends arrive over a
20 s ramp, and their memory keeps moving under load): the default load under-states its cost.

`--accuracy` also reads every PostgreSQL process's smaps_rollup afresh after each of the
collector's memory sweeps (in this script's own thread, not counted as the collector's) and
prints how far the collector's PostgreSQL PSS and USS sums were from that truth (median, 95th
percentile, worst): what a cheaper rule gives up.

Usage: .venv/bin/python benchmarks/collector_cost.py [--backends 120] [--seconds 30] [--profile]
       [--ramp S] [--moving] [--accuracy]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import math
import os
import pstats
import random
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import psycopg

from poolbench.collector import CollectorConfig, CollectorThread
from poolbench.collector.procfs import read_memory
from poolbench.infra.postgres import embedded_server

CPU_BUDGET_PCT = {"slow machine (make test ≥ 250 CPU s)": 2.0, "fast machine (< 200)": 1.2}
REFRESH_BUDGET_S = 2.0
_CLK_TCK = float(os.sysconf("SC_CLK_TCK"))
PROFILES: dict[str, cProfile.Profile] = {}
NATIVE: dict[str, int] = {}  # collector thread name -> its native id
THREADS = {
    "poolbench-collector": "connection",
    "poolbench-collector-sweeps": "sweeps",
    "poolbench-collector-pools": "pools",
}


def thread_cpu() -> dict[str, float]:
    """CPU seconds per collector thread (by its name), from /proc/self/task/<tid>/stat."""
    out: dict[str, float] = {}
    for name, tid in NATIVE.items():
        try:
            with open(f"/proc/self/task/{tid}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2 :].split()
        out[name] = (int(fields[11]) + int(fields[12])) / _CLK_TCK
    return out


def watch_threads(profile: bool) -> None:
    """Note each collector thread's native id (and profile it: CPU time, not wall time)."""
    original = threading.Thread.run

    def run(self: threading.Thread) -> None:
        if not self.name.startswith("poolbench-collector"):
            original(self)
            return
        name = THREADS.get(self.name, self.name)
        NATIVE[name] = threading.get_native_id()
        if profile:
            PROFILES[name] = cProfile.Profile(time.thread_time)
            PROFILES[name].runcall(original, self)
        else:
            original(self)

    threading.Thread.run = run  # type: ignore[method-assign]


def load(
    url: str, args: argparse.Namespace, stop: threading.Event, threads: int = 6
) -> list[threading.Thread]:
    """`args.backends` sessions kept busy from a few threads; with `--ramp S` they connect
    one by one over S seconds (as a `make bench` ramp brings the before app's 120), with
    `--moving` their queries build strings of varying size, so their memory moves as a real
    app's backends' does (the synthetic table scans alone stop moving it once mapped)."""
    began = time.monotonic()
    query = (
        "SELECT length(string_agg(x, '')) FROM (SELECT x FROM pages LIMIT %s) s"
        if args.moving
        else "SELECT count(*) FROM pages WHERE length(x) > 0"
    )

    def work(mine: list[int]) -> None:
        conns: list[psycopg.Connection] = []
        while not stop.is_set():
            due = [i for i in mine[len(conns) :] if time.monotonic() - began >= opens_at(i)]
            conns += [
                psycopg.connect(url, application_name=f"load-{i % 4}", autocommit=True) for i in due
            ]
            for conn in conns:
                conn.execute(query, (random.randrange(100, 3000),) if args.moving else None)
            time.sleep(0.05)
        for conn in conns:
            conn.close()

    def opens_at(i: int) -> float:
        return args.ramp * i / args.backends

    workers = [
        threading.Thread(
            target=work,
            args=(list(range(i, args.backends, threads)),),
            name=f"load{i}",
            daemon=True,
        )
        for i in range(threads)
    ]
    for w in workers:
        w.start()
    return workers


def fresh_postgres_sums(postmaster: int, swept_at: float) -> tuple[int, int]:
    """(PSS, USS) of the postmaster and its children that existed at the sweep (a backend
    started since is not in the collector's sum yet: a membership lag, not staleness), each
    read now."""
    pss = uss = 0
    try:
        procs = [psutil.Process(postmaster), *psutil.Process(postmaster).children()]
    except psutil.Error:
        return 0, 0
    for proc in procs:
        try:
            if proc.create_time() > swept_at:
                continue
            values = read_memory(proc.pid)
        except (OSError, psutil.Error):
            continue
        if values is not None:
            pss, uss = pss + values[1], uss + values[2]
    return pss, uss


def errors_against_truth(collector: CollectorThread, postmaster: int) -> tuple[float, float]:
    """After a new memory sweep: |collector - fresh| / fresh for PostgreSQL's PSS and USS."""
    latest = collector.latest()
    pss = latest.memory.get(("mem_pss_bytes", "postgres", ""))
    uss = latest.memory.get(("mem_uss_bytes", "postgres", ""))
    true_pss, true_uss = fresh_postgres_sums(postmaster, latest.memory_ts or 0.0)
    if not pss or not uss or not true_pss or not true_uss:
        return math.nan, math.nan
    return abs(pss - true_pss) / true_pss, abs(uss - true_uss) / true_uss


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", type=int, default=120)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=8.0)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--ramp", type=float, default=0.0, help="connect the backends over S s (measured)"
    )
    parser.add_argument(
        "--moving", action="store_true", help="queries that move the backends' memory"
    )
    parser.add_argument(
        "--accuracy", action="store_true", help="compare PostgreSQL's PSS/USS with fresh reads"
    )
    parser.add_argument(
        "--memory-budget", default="0.01", help="memory_cpu_budget (a fraction of a core, or none)"
    )
    args = parser.parse_args()
    watch_threads(args.profile)
    stop = threading.Event()
    with (
        embedded_server(settings={"max_connections": str(args.backends + 40)}) as pg,
        tempfile.TemporaryDirectory() as tmp,
    ):
        with psycopg.connect(pg.app_url, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE pages AS SELECT repeat('x', 200) AS x FROM generate_series(1, 35000)"
            )
        budget = None if args.memory_budget == "none" else float(args.memory_budget)
        config = CollectorConfig(
            pg.admin_url,
            pg.dbname,
            Path(tmp) / "samples.csv",
            postmaster_pid=pg.postmaster_pid,
            memory_cpu_budget=budget,
        )
        workers = [] if args.ramp else load(pg.app_url, args, stop)
        with CollectorThread(config) as collector:
            time.sleep(args.warmup)
            if args.ramp:  # the ramp is measured: it is what spends a budget
                workers = load(pg.app_url, args, stop)
            first, cpu0, t0 = collector.latest(), thread_cpu(), time.monotonic()
            refresh, seen_ts, errors = 0.0, first.memory_ts, []
            while time.monotonic() - t0 < args.seconds:
                time.sleep(0.05 if args.accuracy else 0.5)
                latest = collector.latest()
                refresh = max(refresh, latest.memory_interval or 0.0)
                if args.accuracy and latest.memory_ts != seen_ts:
                    seen_ts = latest.memory_ts
                    errors.append(errors_against_truth(collector, pg.postmaster_pid))
            last, cpu1, t1 = collector.latest(), thread_cpu(), time.monotonic()
            footprint = collector.latest().footprint()
        stop.set()
        for w in workers:
            w.join(10)
    show(args, first, last, cpu0, cpu1, t1 - t0, refresh, footprint)
    if errors:
        show_accuracy(errors)
    return 0


def show_accuracy(errors: list[tuple[float, float]]) -> None:
    table = np.array(errors, dtype=float)
    table = table[np.isfinite(table).all(axis=1)]
    print(f"  PostgreSQL memory against fresh reads of every process ({len(table)} sweeps):")
    for i, name in enumerate(("PSS", "USS")):
        p50, p95, worst = (100 * q for q in np.quantile(table[:, i], [0.5, 0.95, 1.0]))
        print(f"    {name}: off by {p50:.2f} % (median), {p95:.2f} % (95th), {worst:.2f} % (worst)")


def show(args, first, last, cpu0, cpu1, span, refresh, footprint) -> None:
    per_thread = {name: cpu - cpu0.get(name, 0.0) for name, cpu in cpu1.items()}
    total = sum(per_thread.values())
    reads = last.memory_reads_total - first.memory_reads_total
    urgent = last.memory_urgent_total - first.memory_urgent_total
    mem_cpu = last.memory_cpu_s_total - first.memory_cpu_s_total
    samples = last.samples - first.samples
    print(
        f"collector at {args.backends} backends, {span:.0f} s after {args.warmup:.0f} s of "
        "warm-up (CPU of its threads):"
    )
    print(f"  total            {100 * total / span:5.2f} % of a core")
    for name, cpu in sorted(per_thread.items()):
        print(f"  {name:16} {100 * cpu / span:5.2f} %")
    print(
        f"  of which smaps_rollup re-reads {100 * mem_cpu / span:5.2f} % "
        f"({reads / span:.1f} reads/s, {1000 * mem_cpu / max(reads, 1):.2f} ms each)"
    )
    print(
        f"    re-reads due within 2 s (moved, forked, new, drifted) {urgent / span:.1f}/s, "
        f"the others (a sharer moved, the 30 s check; first reads) {(reads - urgent) / span:.1f}/s"
    )
    print(
        f"  connections samples: {samples / span:.1f}/s, "
        f"{1000 * per_thread.get('connection', 0.0) / max(samples, 1):.2f} ms of the "
        "connection thread's CPU each (churn and plans included)"
    )
    print(
        f"  memory refreshed within {refresh:.2f} s here, {footprint['memory_refresh_max_s']} s "
        f"over the whole run (budget {REFRESH_BUDGET_S:.0f} s)"
    )
    for machine, budget in CPU_BUDGET_PCT.items():
        verdict = "within" if 100 * total / span <= budget else "OVER"
        print(f"  budget {budget:.1f} % on a {machine}: {verdict}")
    for name, profile in PROFILES.items():
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(15)
        print(f"--- {name} thread, CPU seconds\n" + "\n".join(out.getvalue().splitlines()[6:24]))


if __name__ == "__main__":
    raise SystemExit(main())
