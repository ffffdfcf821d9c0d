"""Orders: one with its user and item (app.api.dependencies), placing one (app.db)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.dependencies import get_database_session
from app.api.params import SleepMs, hold
from app.db import AsyncSessionFactory
from app.models import Item, Order, User

router = APIRouter(prefix="/orders", tags=["orders"])


class NewOrder(BaseModel):
    user_id: int
    item_id: int
    quantity: int = Field(default=1, ge=1, le=100)


@router.get("/{order_id}")
async def get_order(
    order_id: int,
    db: Annotated[AsyncSession, Depends(get_database_session)],
    sleep_ms: SleepMs = 0,
) -> dict[str, Any]:
    await hold(db, sleep_ms)
    query = (
        select(Order, User, Item)
        .join(User, Order.user_id == User.id)
        .join(Item, Order.item_id == Item.id)
        .where(Order.id == order_id)
    )
    row = (await db.execute(query)).first()
    if row is None:
        raise HTTPException(status_code=404, detail="order not found")
    order, user, item = row
    return {
        "id": order.id,
        "quantity": order.quantity,
        "total_cents": order.total_cents,
        "user": {"id": user.id, "name": user.name},
        "item": {"id": item.id, "name": item.name, "price_cents": item.price_cents},
    }


@router.post("", status_code=201)
async def place_order(new: NewOrder, sleep_ms: SleepMs = 0) -> dict[str, Any]:
    """Insert the order and take the quantity off the item's stock, in one transaction (held
    `sleep_ms` before it locks the item, so a hold fills this route's pool, not a lock queue)."""
    async with AsyncSessionFactory() as session, session.begin():
        await hold(session, sleep_ms)
        item = await session.get(Item, new.item_id, with_for_update=True)
        if item is None or await session.get(User, new.user_id) is None:
            raise HTTPException(status_code=404, detail="user or item not found")
        if item.stock < new.quantity:
            raise HTTPException(status_code=409, detail="out of stock")
        item.stock -= new.quantity
        order = Order(
            user_id=new.user_id,
            item_id=new.item_id,
            quantity=new.quantity,
            total_cents=item.price_cents * new.quantity,
        )
        session.add(order)
        await session.flush()
        return {
            "id": order.id,
            "user_id": order.user_id,
            "item_id": order.item_id,
            "quantity": order.quantity,
            "total_cents": order.total_cents,
            "stock_left": item.stock,
        }
