"""Database package: engines with the pool settings from the environment."""

from __future__ import annotations

from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
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
AsyncSessionFactory = async_sessionmaker(async_engine, expire_on_commit=False)

sync_engine = create_engine(
    settings.sync_url,
    **pool_options(),
    connect_args=sync_connect_args(__name__),
)
register(sync_engine, application_name(__name__, sync=True))
SessionFactory = sessionmaker(bind=sync_engine, expire_on_commit=False)
