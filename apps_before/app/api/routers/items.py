"""Items: search (app.core.db, async) and one by id (app.db, sync)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from sqlalchemy import select

from app.api.params import SleepMs, hold, hold_sync
from app.core.db import AsyncSessionFactory
from app.db import SessionFactory
from app.models import Item

router = APIRouter(prefix="/items", tags=["items"])


def item_json(item: Item) -> dict[str, Any]:
    return {"id": item.id, "name": item.name, "price_cents": item.price_cents, "stock": item.stock}


@router.get("")
async def search_items(
    min_price: Annotated[int, Query(ge=0, description="cents")] = 0,
    q: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    sleep_ms: SleepMs = 0,
) -> list[dict[str, Any]]:
    query = select(Item).where(Item.price_cents >= min_price).order_by(Item.id).limit(limit)
    if q:
        query = query.where(Item.name.contains(q, autoescape=True))
    async with AsyncSessionFactory() as session:
        await hold(session, sleep_ms)
        return [item_json(item) for item in await session.scalars(query)]


@router.get("/{item_id}")
def get_item(item_id: int, sleep_ms: SleepMs = 0) -> dict[str, Any]:
    # A plain `def` endpoint: FastAPI runs it in its thread pool.
    with SessionFactory() as session:
        hold_sync(session, sleep_ms)
        item = session.get(Item, item_id)
        if item is None:
            raise HTTPException(status_code=404, detail="item not found")
        return item_json(item)
