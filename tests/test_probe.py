"""The pool probe inside real uvicorn apps against a real PostgreSQL.

A small FastAPI app with four engines of known shape (an async pool of 2, an async pool of 1
with a 0.2 s timeout, a sync NullPool, a sync pool that names its own connections) is
started with the probe on, driven with known holds, stopped, and its probe files are read
back; then our own apps_after, whose checked-out counts the probe must agree with
`/debug/pools` about.
"""

from __future__ import annotations

import asyncio
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import fresh_database, maintenance, with_db

from poolbench.config.variants import parse_variant
from poolbench.errors import PoolbenchError
from poolbench.infra.app_server import RunningVariant, VariantSpec
from poolbench.infra.postgres import Database
from poolbench.probe import SITE_DIR
from poolbench.results.pool_probe import read_probe

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
HOLD_S = 0.5
CONCURRENT = 10

APP = """
import os
import sys

from fastapi import FastAPI
from sqlalchemy import create_engine, text
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

URL = os.environ["DATABASE_URL"]
ASYNC_URL = URL.replace("postgresql://", "postgresql+asyncpg://")
SYNC_URL = URL.replace("postgresql://", "postgresql+psycopg://")
NAME = text("SELECT current_setting('application_name')")

pooled = create_async_engine(ASYNC_URL, pool_size=2, max_overflow=0, pool_timeout=30)
tight = create_async_engine(
    ASYNC_URL,
    pool_size=1,
    max_overflow=0,
    pool_timeout=0.2,
)
nullpool = create_engine(SYNC_URL, poolclass=NullPool)
named = create_engine(SYNC_URL, connect_args={"application_name": "my-own-name"})

app = FastAPI()


@app.get("/ping")
def ping():
    return {"ok": True}


@app.get("/hold")
async def hold(ms: int, engine: str = "pooled"):
    target = tight if engine == "tight" else pooled
    try:
        async with target.connect() as conn:
            await conn.execute(text("SELECT pg_sleep(:s)"), {"s": ms / 1000})
            return {"name": (await conn.execute(NAME)).scalar()}
    except PoolTimeout:
        return {"timeout": True}


@app.get("/null")
def null():
    with nullpool.connect() as conn:
        return {"name": conn.execute(NAME).scalar()}


@app.get("/named")
def named_route():
    with named.connect() as conn:
        return {"name": conn.execute(NAME).scalar()}


@app.get("/env")
def env():
    custom = sys.modules.get("sitecustomize")
    return {
        "PYTHONPATH": os.environ.get("PYTHONPATH"),
        "probe_dir": os.environ.get("POOLBENCH_PROBE_DIR"),
        "probe_loaded": "_poolbench_probe" in sys.modules,
        "own_sitecustomize": getattr(custom, "MARK", None),
    }
"""
OWN_SITECUSTOMIZE = "MARK = 'the app own sitecustomize ran'\n"


def _line_of(source: str, needle: str) -> int:
    return next(i for i, line in enumerate(source.splitlines(), 1) if needle in line)


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("probe_app")
    (root / "probeapp.py").write_text(textwrap.dedent(APP))
    (root / "own").mkdir()
    (root / "own" / "sitecustomize.py").write_text(OWN_SITECUSTOMIZE)
    return root


@pytest.fixture(scope="module")
def database(pg: Database) -> Iterator[str]:
    with fresh_database(pg, prefix="probe") as dbname:
        yield with_db(pg.app_url, dbname)


def _spec(app_dir: Path, probe_dir: Path | None, workers: int = 1) -> VariantSpec:
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "probeapp:app",
        "--host",
        "{host}",
        "--port",
        "{port}",
        "--workers",
        str(workers),
    ]
    return VariantSpec(
        name="probeapp",
        command=command,
        cwd=app_dir,
        health_path="/ping",
        workers=workers,
        env={"PYTHONPATH": str(app_dir / "own")},  # the app's own sitecustomize
        probe_dir=probe_dir,
    )


async def _concurrently(base: str, paths: list[str]) -> list[dict]:
    async with httpx.AsyncClient(base_url=base, timeout=30, trust_env=False) as client:
        answers = await asyncio.gather(*(client.get(p) for p in paths))
    return [a.json() for a in answers]


@pytest.fixture(scope="module")
def probed(app_dir: Path, database: str, tmp_path_factory: pytest.TempPathFactory):
    """The app driven with known holds, stopped (so its files are complete), and read back."""
    out = tmp_path_factory.mktemp("probed")
    app = RunningVariant(
        _spec(app_dir, out / "probe"), database_url=database, log_path=out / "app.log"
    )
    with app:
        base = app.base_url
        started = time.monotonic()
        held = asyncio.run(_concurrently(base, [f"/hold?ms={HOLD_S * 1000:g}"] * CONCURRENT))
        elapsed = time.monotonic() - started
        tight = asyncio.run(_concurrently(base, ["/hold?ms=1000&engine=tight"] * 2))
        with httpx.Client(base_url=base, trust_env=False) as client:
            nulls = [client.get("/null").json() for _ in range(3)]
            named = client.get("/named").json()
            env = client.get("/env").json()
    return {
        "data": read_probe(out),
        "held": held,
        "elapsed": elapsed,
        "tight": tight,
        "nulls": nulls,
        "named": named,
        "env": env,
    }


def _engine(data, needle: str):
    line = _line_of(textwrap.dedent(APP), needle)
    [engine] = [e for e in data.engines if e.site == f"probeapp:{line}"]
    return engine


def test_pool_of_two_under_ten_slow_requests_waits_about_the_hold_and_counts_eight_waiters(
    probed: dict,
) -> None:
    data = probed["data"]
    engine = _engine(data, "pooled = create_async_engine")
    assert (engine.pool_class, engine.pool_size, engine.max_overflow) == (
        "AsyncAdaptedQueuePool",
        2,
        0,
    )
    assert (engine.pool_timeout, engine.ceiling, engine.user) == (30, 2, database_user(data))
    rows = data.checkouts[
        (data.checkouts["site"] == engine.site) & (data.checkouts["kind"] == "checkout")
    ]
    waits = sorted(rows["wait_s"])
    assert len(waits) == CONCURRENT
    # Two at a time: the k-th pair cannot have its connection before k holds have ended …
    for k in range(CONCURRENT // 2):
        assert waits[2 * k] >= 0.95 * k * HOLD_S, waits
    # … and none waited longer than the whole burst took, seen from outside.
    assert waits[-1] < probed["elapsed"]
    assert min(rows["use_s"]) >= HOLD_S
    samples = data.samples[data.samples["site"] == engine.site]
    # All ten asked at once (two of them opening the pool's connections); while two held
    # the pool's connections, at most eight waited, and at some sample all eight did.
    assert samples["pending_max"].max() == CONCURRENT
    full = samples[(samples["out"] == 2) & (samples["connecting"] == 0)]
    assert full["pending"].max() == CONCURRENT - 2, samples[["out", "pending", "connecting"]]
    assert samples["out_max"].max() == 2
    assert samples.iloc[-1]["out"] == 0 and samples.iloc[-1]["checkouts"] == CONCURRENT


def database_user(data) -> str:
    return data.engines[0].user


def test_a_timeout_is_counted_with_the_time_it_waited(probed: dict) -> None:
    data = probed["data"]
    engine = _engine(data, "tight = create_async_engine")
    assert [a.get("timeout", False) for a in probed["tight"]].count(True) == 1
    rows = data.checkouts[data.checkouts["site"] == engine.site]
    [timeout] = rows[rows["kind"] == "timeout"]["wait_s"]
    # uvicorn runs uvloop: libuv's timers count whole milliseconds from a loop time cached at
    # the start of an iteration, so the pool's 0.2 s can end up to ~1 ms early by the probe's
    # precise clock (0.1996 s measured once); the wait is the timeout, not a short cut
    assert 0.2 - 0.002 <= timeout < 1.0
    assert data.samples[data.samples["site"] == engine.site]["timeouts"].max() == 1


def test_a_nullpool_engine_shows_a_connect_per_checkout_named_after_its_site(probed: dict) -> None:
    data = probed["data"]
    engine = _engine(data, "nullpool = create_engine")
    assert engine.pool_class == "NullPool" and engine.ceiling is None
    last = data.samples[data.samples["site"] == engine.site].iloc[-1]
    assert (last["checkouts"], last["connects"], last["closes"], last["open"]) == (3, 3, 3, 0)
    assert len(data.checkouts.query("site == @engine.site and kind == 'connect'")) == 3
    assert {n["name"] for n in probed["nulls"]} == {engine.site}  # what PostgreSQL saw
    assert (engine.application_name, engine.name_source) == (engine.site, "probe")


def test_an_app_that_names_its_connections_keeps_its_name(probed: dict) -> None:
    engine = _engine(probed["data"], "named = create_engine")
    assert probed["named"]["name"] == "my-own-name"
    assert (engine.application_name, engine.name_source) == ("my-own-name", "app")


def test_the_app_own_sitecustomize_still_runs_and_the_files_are_complete(probed: dict) -> None:
    assert probed["env"]["own_sitecustomize"] == "the app own sitecustomize ran"
    assert probed["env"]["probe_loaded"] is True
    assert probed["env"]["PYTHONPATH"].split(":")[0] == str(SITE_DIR)
    assert all(p.ended for p in probed["data"].processes)


def test_probe_off_leaves_the_app_environment_untouched(app_dir: Path, tmp_path: Path) -> None:
    spec = _spec(app_dir, None)
    app = RunningVariant(spec, database_url="postgresql://u@127.0.0.1:1/x", log_path=tmp_path / "a")
    assert app.app_env() == app.env()
    with app, httpx.Client(base_url=app.base_url, trust_env=False) as client:
        env = client.get("/env").json()
    assert env == {
        "PYTHONPATH": str(app_dir / "own"),
        "probe_dir": None,
        "probe_loaded": False,
        "own_sitecustomize": "the app own sitecustomize ran",
    }
    assert not (tmp_path / "probe").exists()


def test_a_relative_probe_folder_is_poolbench_s_not_the_app_s(
    app_dir: Path, database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`poolbench run` names the variant's folder relative to its own directory (results/…),
    and the app runs in its own: the files must land in poolbench's folder. The old code
    passed the relative path on, so they went to <app_dir>/results/… (and into git)."""
    monkeypatch.chdir(tmp_path)
    relative = Path("results") / "run" / "v-1"
    app = RunningVariant(
        _spec(app_dir, relative / "probe"), database_url=database, log_path=tmp_path / "app.log"
    )
    with app, httpx.Client(base_url=app.base_url, trust_env=False) as client:
        client.get("/null").raise_for_status()
    assert read_probe(tmp_path / relative) is not None
    assert not (app_dir / "results").exists()


def test_probe_key_of_a_variant() -> None:
    assert parse_variant("v", {"app_dir": "apps_after"}).probe is True
    assert parse_variant("v", {"app_dir": "apps_after", "probe": False}).probe is False
    with pytest.raises(PoolbenchError, match=r"variants.v.probe must be true or false"):
        parse_variant("v", {"app_dir": "apps_after", "probe": "no"})


@pytest.mark.parametrize("snapshot", ["before", "after"])
def test_probe_agrees_with_debug_pools_and_pg_stat_activity(
    pg: Database, tmp_path: Path, snapshot: str
) -> None:
    """Our two apps, two workers each: while requests hold connections, every engine's
    checked-out count in each worker is what its /debug/pools says; once they are done, the
    connections the probe counts open per application_name are what PostgreSQL shows."""
    spec = VariantSpec(
        name=snapshot, app_dir=ROOT / f"apps_{snapshot}", workers=2, probe_dir=tmp_path / "probe"
    )
    with fresh_database(pg, prefix=f"probe_{snapshot}") as dbname:
        app = RunningVariant(
            spec, database_url=with_db(pg.app_url, dbname), log_path=tmp_path / "app.log"
        )
        with app:
            for _ in range(4):  # the OS hands the holds and the polls to either worker: a
                # round whose polls all met the worker without holds compares nothing (seen in
                # CI); another round is another draw
                held = asyncio.run(_held_and_polled(app.base_url, tmp_path))
                if sum(debug for debug, _ in held.values()) > 0:
                    break
            time.sleep(0.5)  # every hold returned; the probe wrote it down
            with maintenance(pg) as admin:
                rows = admin.execute(
                    "SELECT application_name, count(*) FROM pg_stat_activity "
                    "WHERE datname = %s GROUP BY 1",
                    (dbname,),
                ).fetchall()
            idle = read_probe(tmp_path)
    # both workers made their engines; the polls reach whichever worker accepts them (on a
    # busy machine one can take them all, as in one CI run): each one polled must agree
    assert len(app_pids(idle)) == 2 and {pid for pid, _ in held} <= set(app_pids(idle)), held
    # the holds were seen: by a polled worker's /debug/pools, or at least by the probe (all
    # 10 holds of /items at once: 5 or more in one worker, whichever took them)
    assert sum(debug for debug, _ in held.values()) > 0 or idle.samples["out_max"].max() >= 5
    assert {k: debug for k, (debug, _) in held.items()} == {k: p for k, (_, p) in held.items()}
    assert dict(rows) == _open_by_name(idle)
    named = [e for e in idle.engines if e.application_name]
    assert named and all(e.name_source == "app" for e in named)  # the apps' own names, kept
    for e in named:  # `before:app.core.db:sync` was created in module app.core.db
        assert e.site.startswith(e.application_name.split(":")[1] + ":"), e


def app_pids(data) -> list[int]:
    return sorted({e.pid for e in data.engines})


def _open_by_name(data) -> dict[str, int]:
    """Connections open per application_name, over all processes, from the last samples."""
    last = data.samples.sort_values("t").groupby(["pid", "engine"]).last()["open"]
    names = {(e.pid, e.engine): e.application_name for e in data.engines}
    out: dict[str, int] = {}
    for key, n in last.items():
        if n and names.get(key):
            out[names[key]] = out.get(names[key], 0) + int(n)
    return out


async def _held_and_polled(base: str, out: Path) -> dict[tuple[int, str], tuple[int, int]]:
    """Hold connections of both workers' pools, then read /debug/pools and the probe:
    {(pid, engine name): (checked out per /debug/pools, checked out per the probe)}."""
    fresh = httpx.Limits(max_keepalive_connections=0)  # each poll on a new connection: any worker
    async with httpx.AsyncClient(
        base_url=base, timeout=30, trust_env=False, limits=fresh
    ) as client:
        paths = ["/items?sleep_ms=1000"] * 10 + ["/orders/1?sleep_ms=1000"] * 6
        holds = [asyncio.create_task(client.get(p)) for p in paths]
        await asyncio.sleep(0.3)  # all hold their connections from here to ~1 s
        seen: dict[tuple[int, str], int] = {}
        for _ in range(20):
            body = (await client.get("/debug/pools")).json()
            for engine in body["engines"]:
                seen[(body["pid"], engine["name"])] = engine["checked_out"]
        await asyncio.sleep(0.15)  # the probe writes every 0.1 s
        data = read_probe(out)
        assert all(r.status_code == 200 for r in await asyncio.gather(*holds))
    last = data.samples.sort_values("t").groupby(["pid", "engine"]).last()["out"]
    by_name = {(e.pid, e.application_name): (e.pid, e.engine) for e in data.engines}
    return {
        key: (debug, int(last.get(by_name[key], 0)) if key in by_name else 0)
        for key, debug in seen.items()
    }


def test_an_engine_made_with_engine_level_arguments_still_starts_under_the_probe(
    database: str, tmp_path: Path
) -> None:
    """create_engine() routes echo, logging_name, hide_parameters… by reading
    Engine.__init__'s signature: the first probe wrapped that method and every such argument
    was refused ("TypeError: Invalid argument(s) 'echo' sent to create_engine()"), so a
    third-party app (rhoboro/async-fastapi-sqlalchemy: `echo=settings.ECHO_SQL`) did not start.
    The engine still counts, under its creation site."""
    import os
    import subprocess

    from poolbench.probe import probe_env

    script = tmp_path / "made.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import asyncio
            from sqlalchemy import create_engine, text
            from sqlalchemy.ext.asyncio import create_async_engine

            url = {database!r}
            sync = create_engine(url.replace("postgresql://", "postgresql+psycopg://"),
                                 echo=False, logging_name="mine", hide_parameters=True)
            with sync.connect() as conn:
                conn.execute(text("SELECT 1"))
            made = create_async_engine(url.replace("postgresql://", "postgresql+asyncpg://"),
                                       echo=False, pool_pre_ping=True)

            async def once():
                async with made.connect() as conn:
                    await conn.execute(text("SELECT 1"))
                await made.dispose()

            asyncio.run(once())
            """
        )
    )
    env = {**os.environ, **probe_env(os.environ, tmp_path / "probe")}
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-500:]
    data = read_probe(tmp_path)
    assert data is not None
    assert sorted(e.site for e in data.engines) == ["__main__:11", "__main__:7"]
