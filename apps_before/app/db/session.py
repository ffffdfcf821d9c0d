"""The application's main database engines (async for requests, sync for scripts)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import sessionmaker

from app.core.config import (
    application_name,
    async_connect_args,
    pool_options,
    settings,
    sync_connect_args,
)
from app.db.pools import register

async_engine = create_async_engine(
    settings.async_url,
    **pool_options(),
    connect_args=async_connect_args(__name__),
)
register(async_engine, application_name(__name__))
AsyncSessionLocal = async_sessionmaker(async_engine, expire_on_commit=False)

engine = create_engine(
    settings.sync_url,
    **pool_options(),
    connect_args=sync_connect_args(__name__),
)
register(engine, application_name(__name__, sync=True))
SessionLocal = sessionmaker(bind=engine, expire_on_commit=False)


async def get_async_db() -> AsyncIterator[AsyncSession]:
    async with AsyncSessionLocal() as session:
        yield session
