"""Create and fill the schema at start-up with deterministic data (once, even with many workers)."""

from __future__ import annotations

from sqlalchemy import func, insert, select, text

from app.db.session import engine
from app.models import Base, Item, Order, User

USERS, ITEMS, ORDERS = 1000, 200, 5000
SEED_LOCK = 7_300_001  # pg_advisory_xact_lock key: one worker seeds, the others wait


def price_cents(item_id: int) -> int:
    return 100 + (item_id * 397) % 9900  # 1.00 to 99.99


def user_row(i: int) -> dict[str, object]:
    name = f"user{i:04d}"
    return {"id": i, "name": name, "email": f"{name}@example.com", "is_active": i % 5 != 0}


def item_row(i: int) -> dict[str, object]:
    # Every 50th item is sold out, so POST /orders can answer 409.
    stock = 0 if i % 50 == 0 else 1000
    return {"id": i, "name": f"item-{i:03d}", "price_cents": price_cents(i), "stock": stock}


def order_row(i: int) -> dict[str, object]:
    item_id, quantity = (i * 13) % ITEMS + 1, i % 5 + 1
    return {
        "id": i,
        "user_id": (i * 7) % USERS + 1,
        "item_id": item_id,
        "quantity": quantity,
        "total_cents": price_cents(item_id) * quantity,
    }


def seed_database() -> None:
    with engine.begin() as conn:
        conn.execute(select(func.pg_advisory_xact_lock(SEED_LOCK)))
        Base.metadata.create_all(conn)
        if conn.scalar(select(func.count()).select_from(User)):
            return
        conn.execute(insert(User), [user_row(i) for i in range(1, USERS + 1)])
        conn.execute(insert(Item), [item_row(i) for i in range(1, ITEMS + 1)])
        conn.execute(insert(Order), [order_row(i) for i in range(1, ORDERS + 1)])
        # The rows above carry explicit ids: move the sequence past them for POST /orders.
        conn.execute(
            text("SELECT setval(pg_get_serial_sequence('orders', 'id'), :n)"), {"n": ORDERS}
        )
