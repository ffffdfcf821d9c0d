"""FastAPI dependencies shared by the routers."""

from __future__ import annotations

from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from app.core.config import application_name, async_connect_args, pool_options, settings
from app.db.pools import register


async def get_database_session() -> AsyncIterator[AsyncSession]:
    # The engine is created on the first request and cached on the function.
    if not hasattr(get_database_session, "session_factory"):
        engine = create_async_engine(
            settings.async_url,
            **pool_options(),
            connect_args=async_connect_args(__name__),
        )
        register(engine, application_name(__name__))
        get_database_session.session_factory = async_sessionmaker(engine, expire_on_commit=False)
    async with get_database_session.session_factory() as session:
        yield session
