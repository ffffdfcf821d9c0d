"""Users: one by id (app.core.database), a page of them (app.db.session)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.params import SleepMs, hold
from app.core.database import get_db
from app.db.session import get_async_db
from app.models import User

router = APIRouter(prefix="/users", tags=["users"])


def user_json(user: User) -> dict[str, Any]:
    return {"id": user.id, "name": user.name, "email": user.email, "is_active": user.is_active}


@router.get("/{user_id}")
async def get_user(
    user_id: int, db: Annotated[AsyncSession, Depends(get_db)], sleep_ms: SleepMs = 0
) -> dict[str, Any]:
    await hold(db, sleep_ms)
    user = await db.get(User, user_id)
    if user is None:
        raise HTTPException(status_code=404, detail="user not found")
    return user_json(user)


@router.get("")
async def list_users(
    db: Annotated[AsyncSession, Depends(get_async_db)],
    active: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
    sleep_ms: SleepMs = 0,
) -> list[dict[str, Any]]:
    await hold(db, sleep_ms)
    query = select(User).order_by(User.id).limit(limit).offset(offset)
    if active is not None:
        query = query.where(User.is_active == active)
    return [user_json(user) for user in await db.scalars(query)]
