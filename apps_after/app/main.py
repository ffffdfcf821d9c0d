"""The FastAPI application: routers, start-up seeding, shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.api import health
from app.api.routers import debug, items, orders, reports, users
from app.db import pools
from app.seed import seed_database


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    await asyncio.to_thread(seed_database)
    yield
    await pools.dispose_all()


app = FastAPI(title="poolbench specimen", lifespan=lifespan)
for module in (users, items, orders, reports, health, debug):
    app.include_router(module.router)


@app.get("/ping")
async def ping() -> dict[str, bool]:
    """Liveness without the database: the harness waits on this."""
    return {"pong": True}
