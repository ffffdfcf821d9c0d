"""Helpers every section uses: a time as people read it, counts by kind, a titled table."""

from __future__ import annotations

import datetime as _dt
from typing import Any

from poolbench import format as fmt
from poolbench.report.blocks import (
    Heading,
    Para,
    Table,
)
from poolbench.results.failures import KIND_NAMES, LABELS


def when(epoch: float | None) -> str:
    if epoch is None:
        return fmt.NA
    return _dt.datetime.fromtimestamp(epoch, _dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def kind_counts(kinds: dict[str, int]) -> str:
    parts = [f"{LABELS[k]} {fmt.count(kinds.get(k))}" for k in KIND_NAMES if kinds.get(k)]
    return ", ".join(parts) or "none"


def unsteady_note(d: Any) -> str:
    """A trend inside the full-load window, in words (beside the figures it affects)."""
    return f"not steady: {d.describe()}"


def table_section(
    title: str, header: list[str], rows: list[list[Any]], align: str, intro: str | None = None
) -> list[Any]:
    """A table under its heading; nothing at all when no variant has a row."""
    table = table_blocks(header, rows, align, intro)
    return [Heading(3, title), *table] if table else []


def table_blocks(
    header: list[str], rows: list[list[Any]], align: str, intro: str | None = None
) -> list[Any]:
    """A table after its muted intro; nothing when there are no rows."""
    if not rows:
        return []
    return [*([Para(intro, muted=True)] if intro else []), Table(header, rows, align)]
