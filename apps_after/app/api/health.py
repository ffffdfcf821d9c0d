"""GET /health: check the database with temporary engines, disposed after every check."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app.core.config import async_connect_args, settings, sync_connect_args

router = APIRouter()


async def _check_async() -> int:
    engine = create_async_engine(
        settings.async_url, poolclass=NullPool, connect_args=async_connect_args(__name__)
    )
    try:
        async with engine.connect() as conn:
            return (await conn.execute(text("SELECT 1"))).scalar_one()
    finally:
        await engine.dispose()


def _check_sync() -> int:
    engine = create_engine(
        settings.sync_url, poolclass=NullPool, connect_args=sync_connect_args(__name__)
    )
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT 1")).scalar_one()
    finally:
        engine.dispose()


@router.get("/health")
async def health(response: Response) -> dict[str, str]:
    try:
        await _check_async()
        await asyncio.to_thread(_check_sync)
    except Exception as exc:  # any failure means "not healthy", with its type for the caller
        response.status_code = 503
        return {"status": "unavailable", "error": type(exc).__name__}
    return {"status": "ok"}
