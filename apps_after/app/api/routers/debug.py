"""GET /debug/pools: what each engine's pool holds in this worker process."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter

from app.db import pools

router = APIRouter(tags=["debug"])


@router.get("/debug/pools")
async def debug_pools() -> dict[str, Any]:
    return {"pid": os.getpid(), "engines": pools.describe()}
