"""The two app snapshots against a real PostgreSQL, started as real uvicorn processes.

Each snapshot gets its own fresh database (owned by the non-superuser app role) and is
started once per module. The `exercised` fixture calls every route once, in order,
then records what pg_stat_activity and /debug/pools say; the tests check those records.
Expected values follow from the deterministic seed in app/seed.py.
"""

from __future__ import annotations

import ast
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
from psycopg import sql

from poolbench.infra.app_server import RunningVariant, VariantSpec, VariantStartError, start_variant
from poolbench.infra.postgres import Database

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOTS = {"before": ROOT / "apps_before", "after": ROOT / "apps_after"}

# The consolidation touches exactly these files; app/db/session.py already held the engines.
CONSOLIDATED_FILES = {
    "app/api/dependencies.py",
    "app/core/database.py",
    "app/core/db.py",
    "app/db/__init__.py",
}
BEFORE_POOLS = {  # application_name suffix -> kind, for the long-lived engines
    "app.db.session": "async",
    "app.db.session:sync": "sync",
    "app.core.database": "async",
    "app.api.dependencies": "async",
    "app.core.db": "async",
    "app.core.db:sync": "sync",
    "app.db": "async",
    "app.db:sync": "sync",
}
AFTER_POOLS = {"app.db.session": "async", "app.db.session:sync": "sync"}


# --------------------------------------------------------------------------- the seed, again


def price_cents(item_id: int) -> int:
    return 100 + (item_id * 397) % 9900


def seeded_orders() -> list[tuple[int, int, int, int]]:
    """(order id, item id, quantity, total) as app/seed.py writes them."""
    rows = []
    for i in range(1, 5001):
        item, quantity = (i * 13) % 200 + 1, i % 5 + 1
        rows.append((i, item, quantity, price_cents(item) * quantity))
    return rows


# --------------------------------------------------------------------------- fixtures


def _with_dbname(url: str, dbname: str) -> str:
    return urlsplit(url)._replace(path=f"/{dbname}").geturl()


@dataclass
class Exercised:
    """An app after one call of every route, and what the database saw."""

    app: RunningVariant
    admin_url: str  # superuser, connected to the app's database
    dbname: str
    responses: dict[str, httpx.Response] = field(default_factory=dict)
    before_write: dict[str, int] = field(default_factory=dict)
    after_write: dict[str, int] = field(default_factory=dict)
    activity: Counter[str] = field(default_factory=Counter)
    pools: dict[str, Any] = field(default_factory=dict)
    settled_seconds: float = 0.0


def connections(admin_url: str, dbname: str) -> Counter[str]:
    """Client connections to `dbname` per application_name (this query's own excluded)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        rows = conn.execute(
            """
            SELECT application_name, count(*) FROM pg_stat_activity
            WHERE datname = %s AND backend_type = 'client backend' AND pid <> pg_backend_pid()
            GROUP BY 1
            """,
            (dbname,),
        ).fetchall()
    return Counter(dict(rows))


def _db_state(admin_url: str) -> dict[str, int]:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        orders, stock7, stock100 = conn.execute(
            "SELECT (SELECT count(*) FROM orders),"
            " (SELECT stock FROM items WHERE id = 7), (SELECT stock FROM items WHERE id = 100)"
        ).fetchone()
    return {"orders": orders, "stock_7": stock7, "stock_100": stock100}


def _pool_counts(pools: dict[str, Any]) -> Counter[str]:
    counts = Counter({e["name"]: e["checked_in"] + e["checked_out"] for e in pools["engines"]})
    return +counts  # engines without a connection drop out, as in pg_stat_activity


@pytest.fixture(scope="module", params=["before", "after"])
def exercised(
    request: pytest.FixtureRequest, pg: Database, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Exercised]:
    label = request.param
    dbname = f"{pg.dbname}_{label}_apps"
    with psycopg.connect(pg.admin_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
        )
        admin.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(dbname), sql.Identifier(pg.app_user)
            )
        )
    spec = VariantSpec(name=label, app_dir=SNAPSHOTS[label])
    log = tmp_path_factory.mktemp(f"app-{label}") / "app.log"
    try:
        with start_variant(
            spec, database_url=_with_dbname(pg.app_url, dbname), log_path=log
        ) as app:
            run = Exercised(app=app, admin_url=_with_dbname(pg.admin_url, dbname), dbname=dbname)
            _call_every_route(run)
            yield run
    finally:
        with psycopg.connect(pg.admin_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
            )


def _call_every_route(run: Exercised) -> None:
    with httpx.Client(base_url=run.app.base_url, trust_env=False, timeout=30) as client:
        get = client.get
        r = run.responses
        r["ping"] = get("/ping")
        r["user"] = get("/users/42")
        r["user_missing"] = get("/users/99999")
        r["users"] = get("/users", params={"active": "false", "limit": 3, "offset": 1})
        r["items"] = get("/items", params={"min_price": 9000, "q": "item-1"})
        r["item"] = get("/items/50")
        r["order"] = get("/orders/17")
        r["top_items"] = get("/reports/top-items", params={"limit": 3})
        r["summary"] = get("/stats/summary")
        r["health"] = get("/health")
        run.before_write = _db_state(run.admin_url)
        r["post"] = client.post("/orders", json={"user_id": 3, "item_id": 7, "quantity": 4})
        r["post_409"] = client.post("/orders", json={"user_id": 3, "item_id": 100})
        r["post_404"] = client.post("/orders", json={"user_id": 99999, "item_id": 1})
        run.after_write = _db_state(run.admin_url)
        # Closed connections leave pg_stat_activity a moment after the client lets go:
        # wait until the health check's are gone and the pools agree with the server.
        started = time.monotonic()
        while True:
            run.pools = get("/debug/pools").json()
            run.activity = connections(run.admin_url, run.dbname)
            settled = not _health_connections(run.activity)
            if settled and run.activity == _pool_counts(run.pools):
                break
            if time.monotonic() - started > 5:
                break
            time.sleep(0.05)
        run.settled_seconds = time.monotonic() - started


def _health_connections(activity: Counter[str]) -> list[str]:
    return [name for name in activity if ":app.api.health" in name]


# --------------------------------------------------------------------------- routes


def test_ping(exercised: Exercised) -> None:
    assert exercised.responses["ping"].json() == {"pong": True}


def test_get_user_by_id(exercised: Exercised) -> None:
    assert exercised.responses["user"].json() == {
        "id": 42,
        "name": "user0042",
        "email": "user0042@example.com",
        "is_active": True,
    }
    assert exercised.responses["user_missing"].status_code == 404


def test_list_users_filters_and_pages(exercised: Exercised) -> None:
    users = exercised.responses["users"].json()
    assert [u["id"] for u in users] == [10, 15, 20]  # every 5th user is inactive; skip one
    assert {u["is_active"] for u in users} == {False}
    assert users[0]["email"] == "user0010@example.com"


def test_search_items_by_price_and_name(exercised: Exercised) -> None:
    items = exercised.responses["items"].json()
    expected = [i for i in range(1, 201) if price_cents(i) >= 9000 and "item-1" in f"item-{i:03d}"]
    assert [item["id"] for item in items] == expected
    assert items[0] == {"id": 123, "name": "item-123", "price_cents": 9331, "stock": 1000}


def test_get_item_sync_endpoint(exercised: Exercised) -> None:
    assert exercised.responses["item"].json() == {
        "id": 50,
        "name": "item-050",
        "price_cents": 150,
        "stock": 0,
    }


def test_get_order_joins_user_and_item(exercised: Exercised) -> None:
    assert exercised.responses["order"].json() == {
        "id": 17,
        "quantity": 3,
        "total_cents": 26502,
        "user": {"id": 120, "name": "user0120"},
        "item": {"id": 22, "name": "item-022", "price_cents": 8834},
    }


def test_top_items_report(exercised: Exercised) -> None:
    sold: Counter[int] = Counter()
    revenue: Counter[int] = Counter()
    for _, item, quantity, total in seeded_orders():
        sold[item] += quantity
        revenue[item] += total
    top = sorted(sold, key=lambda item: (-sold[item], item))[:3]
    expected = [
        {"id": i, "name": f"item-{i:03d}", "sold": sold[i], "revenue_cents": revenue[i]}
        for i in top
    ]
    assert exercised.responses["top_items"].json() == expected
    assert [row["id"] for row in expected] == [3, 8, 13]


def test_stats_summary(exercised: Exercised) -> None:
    assert exercised.responses["summary"].json() == {
        "users": 1000,
        "active_users": 800,
        "items": 200,
        "stock": 196_000,  # 196 items x 1000, four sold out
        "orders": 5000,
        "revenue_cents": sum(total for *_, total in seeded_orders()),
    }


def test_post_order_writes_in_one_transaction(exercised: Exercised) -> None:
    response = exercised.responses["post"]
    assert response.status_code == 201
    assert response.json() == {
        "id": 5001,
        "user_id": 3,
        "item_id": 7,
        "quantity": 4,
        "total_cents": price_cents(7) * 4,
        "stock_left": 996,
    }
    before, after = exercised.before_write, exercised.after_write
    assert after["orders"] == before["orders"] + 1 == 5001
    assert after["stock_7"] == before["stock_7"] - 4 == 996


def test_post_order_out_of_stock_is_409_and_writes_nothing(exercised: Exercised) -> None:
    assert exercised.responses["post_409"].status_code == 409
    assert exercised.responses["post_409"].json() == {"detail": "out of stock"}
    assert exercised.responses["post_404"].status_code == 404
    assert exercised.after_write["stock_100"] == exercised.before_write["stock_100"] == 0
    # only the successful order was added (checked above): 409 and 404 rolled back


def test_sleep_ms_holds_the_connection_and_is_bounded(exercised: Exercised) -> None:
    base = exercised.app.base_url
    started = time.monotonic()
    response = httpx.get(f"{base}/users/1", params={"sleep_ms": 300}, trust_env=False)
    assert response.json()["id"] == 1
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    assert httpx.get(f"{base}/items/9", params={"sleep_ms": 200}, trust_env=False).json()["id"] == 9
    assert time.monotonic() - started >= 0.2
    too_long = httpx.get(f"{base}/items", params={"sleep_ms": 5000}, trust_env=False)
    assert too_long.status_code == 422


# --------------------------------------------------------------------------- connections


def test_health_is_ok_and_leaves_no_connection(exercised: Exercised) -> None:
    assert exercised.responses["health"].json() == {"status": "ok"}
    assert _health_connections(exercised.activity) == []


def test_connections_per_application_name(exercised: Exercised) -> None:
    label = exercised.app.label
    expected = BEFORE_POOLS if label == "before" else AFTER_POOLS
    names = {f"{label}:{suffix}" for suffix in expected}
    assert set(exercised.activity) == names, exercised.activity
    # sequential requests: one connection per pool (two if a request overlapped a release)
    assert all(1 <= n <= 2 for n in exercised.activity.values()), exercised.activity


def test_debug_pools_agrees_with_pg_stat_activity(exercised: Exercised) -> None:
    label = exercised.app.label
    expected = BEFORE_POOLS if label == "before" else AFTER_POOLS
    engines = {e["name"]: e for e in exercised.pools["engines"]}
    assert {name: e["kind"] for name, e in engines.items()} == {
        f"{label}:{suffix}": kind for suffix, kind in expected.items()
    }
    assert exercised.pools["pid"] == exercised.app.pid  # one worker: the master serves
    for engine in engines.values():
        assert engine["size"] == 5 and engine["max_overflow"] == 10
        assert engine["checked_out"] == 0 and engine["overflow"] == 0  # idle now
        pool_class = "AsyncAdaptedQueuePool" if engine["kind"] == "async" else "QueuePool"
        assert engine["pool_class"] == pool_class
    assert _pool_counts(exercised.pools) == exercised.activity


# --------------------------------------------------------------------------- start-up


def test_missing_database_url_fails_start_with_a_clear_message(tmp_path: Path) -> None:
    spec = VariantSpec(name="after", app_dir=SNAPSHOTS["after"])
    variant = RunningVariant(spec, database_url="", log_path=tmp_path / "app.log")
    with pytest.raises(VariantStartError) as caught:
        variant.start()
    assert "exited with code" in str(caught.value).splitlines()[0]
    assert "RuntimeError: DATABASE_URL is not set" in str(caught.value)
    assert variant.pids() == []


def test_two_workers_seed_once(pg: Database, tmp_path: Path) -> None:
    """Both workers run the start-up seeding at once; the advisory lock lets one do it."""
    dbname = f"{pg.dbname}_two_workers"
    with psycopg.connect(pg.admin_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(dbname), sql.Identifier(pg.app_user)
            )
        )
    try:
        spec = VariantSpec(name="after", app_dir=SNAPSHOTS["after"], workers=2)
        with start_variant(
            spec, database_url=_with_dbname(pg.app_url, dbname), log_path=tmp_path / "app.log"
        ) as app:
            deadline = time.monotonic() + 20  # /ping answers once the first worker is up
            while (tmp_path / "app.log").read_text().count("Application startup complete") < 2:
                assert time.monotonic() < deadline, (tmp_path / "app.log").read_text()
                time.sleep(0.1)
            summary = httpx.get(f"{app.base_url}/stats/summary", trust_env=False).json()
        assert summary["users"] == 1000 and summary["orders"] == 5000
        assert "Traceback" not in (tmp_path / "app.log").read_text()
    finally:
        with psycopg.connect(pg.admin_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
            )


# --------------------------------------------------------------------------- the two snapshots


def _files(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_snapshots_differ_only_in_the_engine_wiring() -> None:
    before, after = _files(SNAPSHOTS["before"]), _files(SNAPSHOTS["after"])
    assert set(before) == set(after), "a file exists in only one snapshot"
    assert {name for name in before if before[name] != after[name]} == CONSOLIDATED_FILES


def _engine_calls(root: Path) -> Counter[str]:
    """module -> number of create_engine / create_async_engine calls in its source."""
    calls: Counter[str] = Counter()
    for path in sorted((root / "app").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in {
                "create_engine",
                "create_async_engine",
            }:
                module = path.relative_to(root).with_suffix("").as_posix()
                calls[re.sub(r"/__init__$", "", module).replace("/", ".")] += 1
    return calls


def test_engine_creation_sites_before_and_after() -> None:
    """Ten engines in six modules before (two are health.py's temporary ones), four after."""
    assert _engine_calls(SNAPSHOTS["before"]) == {
        "app.db.session": 2,
        "app.db": 2,
        "app.core.db": 2,
        "app.core.database": 1,
        "app.api.dependencies": 1,
        "app.api.health": 2,
    }
    assert _engine_calls(SNAPSHOTS["after"]) == {"app.db.session": 2, "app.api.health": 2}
