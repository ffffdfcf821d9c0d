"""Query parameters shared by the read endpoints."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

# ?sleep_ms=N holds the connection N ms longer (SELECT pg_sleep), so load tests can fill pools.
SleepMs = Annotated[int, Query(ge=0, le=1000)]
_SLEEP = text("SELECT pg_sleep(:seconds)")


async def hold(session: AsyncSession, sleep_ms: int) -> None:
    if sleep_ms:
        await session.execute(_SLEEP, {"seconds": sleep_ms / 1000})


def hold_sync(db: Session | Connection, sleep_ms: int) -> None:
    if sleep_ms:
        db.execute(_SLEEP, {"seconds": sleep_ms / 1000})
