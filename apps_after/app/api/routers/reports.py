"""Reports: synchronous endpoints (FastAPI thread pool) on the sync engines."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import func, select

from app.api.params import SleepMs, hold_sync
from app.core.db import SessionFactory
from app.db.session import engine
from app.models import Item, Order, User

router = APIRouter(tags=["reports"])


@router.get("/reports/top-items")
def top_items(
    limit: Annotated[int, Query(ge=1, le=100)] = 10, sleep_ms: SleepMs = 0
) -> list[dict[str, Any]]:
    """Best sellers by quantity ordered (app.core.db, sync)."""
    sold = func.sum(Order.quantity).label("sold")
    query = (
        select(Item.id, Item.name, sold, func.sum(Order.total_cents).label("revenue_cents"))
        .join(Order, Order.item_id == Item.id)
        .group_by(Item.id)
        .order_by(sold.desc(), Item.id)
        .limit(limit)
    )
    with SessionFactory() as session:
        hold_sync(session, sleep_ms)
        return [row._asdict() for row in session.execute(query)]


@router.get("/stats/summary")
def summary(sleep_ms: SleepMs = 0) -> dict[str, int]:
    """Table totals (app.db.session's sync engine)."""
    query = select(
        select(func.count()).select_from(User).scalar_subquery().label("users"),
        select(func.count()).where(User.is_active).scalar_subquery().label("active_users"),
        select(func.count()).select_from(Item).scalar_subquery().label("items"),
        select(func.coalesce(func.sum(Item.stock), 0)).scalar_subquery().label("stock"),
        select(func.count()).select_from(Order).scalar_subquery().label("orders"),
        select(func.coalesce(func.sum(Order.total_cents), 0))
        .scalar_subquery()
        .label("revenue_cents"),
    )
    with engine.connect() as conn:
        hold_sync(conn, sleep_ms)
        return dict(conn.execute(query).one()._mapping)
