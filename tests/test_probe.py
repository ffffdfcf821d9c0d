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
from conftest import fresh_database, with_db

from poolbench.config_variants import parse_variant
from poolbench.errors import PoolbenchError
from poolbench.postgres import Database
from poolbench.probe import SITE_DIR
from poolbench.probe_reader import read_probe
from poolbench.variants import RunningVariant, VariantSpec

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
    command = [sys.executable, "-m", "uvicorn", "probeapp:app", "--host", "{host}",
               "--port", "{port}", "--workers", str(workers)]  # fmt: skip
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
    return {"data": read_probe(out), "held": held, "elapsed": elapsed, "tight": tight,
            "nulls": nulls, "named": named, "env": env}  # fmt: skip


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
        "AsyncAdaptedQueuePool", 2, 0,
    )  # fmt: skip
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
    assert timeout >= 0.2
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


def test_probe_key_of_a_variant() -> None:
    assert parse_variant("v", {"app_dir": "apps_after"}).probe is True
    assert parse_variant("v", {"app_dir": "apps_after", "probe": False}).probe is False
    with pytest.raises(PoolbenchError, match=r"variants.v.probe must be true or false"):
        parse_variant("v", {"app_dir": "apps_after", "probe": "no"})


def test_probe_and_debug_pools_agree_on_checked_out_in_every_worker(
    pg: Database, tmp_path: Path
) -> None:
    """apps_after, two workers: while each worker's async pool holds what /debug/pools says,
    the probe's last sample of that worker says the same."""
    spec = VariantSpec(name="after", app_dir=ROOT / "apps_after", workers=2,
                       probe_dir=tmp_path / "probe")  # fmt: skip
    with fresh_database(pg, prefix="probe_after") as dbname:
        app = RunningVariant(
            spec, database_url=with_db(pg.app_url, dbname), log_path=tmp_path / "app.log"
        )
        with app:
            agreed = asyncio.run(_held_and_polled(app.base_url, tmp_path))
    assert len(agreed) == 2, agreed  # both workers seen
    assert sum(debug for debug, _ in agreed.values()) > 0, agreed
    for pid, (debug, probe) in agreed.items():
        assert debug == probe, (pid, debug, probe)
    data = read_probe(tmp_path)
    site = next(e for e in data.engines if e.pool_class == "AsyncAdaptedQueuePool")
    assert site.site.startswith("app.db.session:")
    assert site.name_source == "app" and site.application_name == "after:app.db.session"


async def _held_and_polled(base: str, out: Path) -> dict[int, tuple[int, int]]:
    """Hold connections of both workers' async pools, then read /debug/pools and the probe."""
    fresh = httpx.Limits(max_keepalive_connections=0)  # each poll on a new connection: any worker
    async with httpx.AsyncClient(
        base_url=base, timeout=30, trust_env=False, limits=fresh
    ) as client:
        holds = [asyncio.create_task(client.get("/items?sleep_ms=1000")) for _ in range(12)]
        await asyncio.sleep(0.3)  # all 12 hold their connections from here to ~1 s
        seen: dict[int, int] = {}
        for _ in range(20):
            body = (await client.get("/debug/pools")).json()
            [engine] = [e for e in body["engines"] if e["name"] == "after:app.db.session"]
            seen[body["pid"]] = engine["checked_out"]
        await asyncio.sleep(0.15)  # the probe writes every 0.1 s
        data = read_probe(out)
        await asyncio.gather(*holds)
    result = {}
    for pid, debug in seen.items():
        rows = data.samples[
            (data.samples["pid"] == pid) & data.samples["site"].str.startswith("app.db.session:")
        ]
        pooled = [
            e.site for e in data.engines if e.pid == pid and e.pool_class == "AsyncAdaptedQueuePool"
        ]
        rows = rows[rows["site"].isin(pooled)]
        result[pid] = (debug, int(rows.iloc[-1]["out"]))
    return result
