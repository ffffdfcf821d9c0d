"""FastAPI dependencies shared by the routers."""

from __future__ import annotations

from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncSession


async def get_database_session() -> AsyncIterator[AsyncSession]:
    from app.db.session import get_async_db

    async for session in get_async_db():  # the shared engine of app.db.session
        yield session
