"""Database access for the user endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from app.core.config import application_name, async_connect_args, pool_options, settings
from app.db.pools import register

engine = create_async_engine(
    settings.async_url,
    **pool_options(),
    connect_args=async_connect_args(__name__),
)
register(engine, application_name(__name__))
AsyncSessionLocal = async_sessionmaker(engine, expire_on_commit=False)


async def get_db() -> AsyncIterator[AsyncSession]:
    async with AsyncSessionLocal() as session:
        yield session
