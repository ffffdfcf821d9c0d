"""What the pool probe costs per checkout, against no instrumentation and OpenTelemetry's.

Each mode runs in its own Python process (the probe loads at interpreter start-up, as in an
app): a sync and an async engine (QueuePool / AsyncAdaptedQueuePool, pool_size 4) against a
real PostgreSQL, `--checkouts` checkouts and returns of an already-open connection per round
(no SQL: the pool path alone, where the probe's hooks are), `--rounds` rounds. The cost is the
process's CPU time (all its threads: the probe's writer thread is part of its cost), not wall
time, which on a shared machine measures the neighbours; the modes run `--trials` times,
interleaved, and the median over trials of each trial's median round is printed, in µs per
checkout, with the difference from `none`.

Modes: `none`; `probe` (poolbench's probe, as poolbench loads it: PYTHONPATH +
POOLBENCH_PROBE_DIR); `otel` (opentelemetry-instrumentation-sqlalchemy with the SDK's
MeterProvider, when installed: it listens to checkout/checkin only, so it measures connection
usage, not wait time, pending requests or timeouts).

Usage: .venv/bin/python benchmarks/probe_overhead.py [--database-url URL] [--checkouts 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from poolbench.probe import probe_env

URL = "postgresql://postgres@127.0.0.1:5432/postgres"
MODES = ("none", "probe", "otel")


def child(url: str, checkouts: int, rounds: int, mode: str) -> dict[str, float]:
    from sqlalchemy import create_engine
    from sqlalchemy.ext.asyncio import create_async_engine

    sync = create_engine(url.replace("postgresql://", "postgresql+psycopg://"), pool_size=4)
    aeng = create_async_engine(url.replace("postgresql://", "postgresql+asyncpg://"), pool_size=4)
    if mode == "otel":
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        SQLAlchemyInstrumentor().instrument(
            engines=[sync, aeng.sync_engine], meter_provider=provider
        )
    per_sync = []
    for _ in range(rounds):
        t0 = time.process_time()
        for _ in range(checkouts):
            sync.raw_connection().close()
        per_sync.append((time.process_time() - t0) / checkouts * 1e6)

    async def run_async() -> list[float]:
        out = []
        for _ in range(rounds):
            t0 = time.process_time()
            for _ in range(checkouts):
                conn = await aeng.raw_connection()
                conn.close()  # returns it to the pool (no I/O for a kept connection)
            out.append((time.process_time() - t0) / checkouts * 1e6)
        await aeng.dispose()
        return out

    per_async = asyncio.run(run_async())
    return {"sync_us": statistics.median(per_sync), "async_us": statistics.median(per_async)}


def run_mode(mode: str, args: argparse.Namespace) -> dict[str, float] | None:
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as out:
        if mode == "probe":
            env.update(probe_env(env, __import__("pathlib").Path(out)))
        argv = [
            sys.executable,
            __file__,
            "--child",
            mode,
            "--database-url",
            args.database_url,
            "--checkouts",
            str(args.checkouts),
            "--rounds",
            str(args.rounds),
        ]
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(f"{mode}: failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=URL)
    parser.add_argument("--checkouts", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--child", choices=MODES)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.database_url, args.checkouts, args.rounds, args.child)))
        return
    trials: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    for _ in range(args.trials):
        for mode in MODES:
            result = run_mode(mode, args)
            if result is not None:
                trials[mode].append(result)
    results = {
        mode: {k: statistics.median(r[k] for r in runs) for k in ("sync_us", "async_us")}
        if runs
        else None
        for mode, runs in trials.items()
    }
    base = results["none"]
    print(f"CPU µs per checkout, median of {args.trials} interleaved trials")
    print(f"{'mode':<6} {'sync µs/checkout':>17} {'async µs/checkout':>18}   (+ over none)")
    for mode, r in results.items():
        if r is None or base is None:
            print(f"{mode:<6} {'not measured':>17}")
            continue
        extra = f"+{r['sync_us'] - base['sync_us']:.2f} / +{r['async_us'] - base['async_us']:.2f}"
        print(f"{mode:<6} {r['sync_us']:>17.2f} {r['async_us']:>18.2f}   ({extra})")


if __name__ == "__main__":
    main()
