"""Typed figures: frozen dataclasses that write themselves to JSON and read themselves back.

summary.json is written from these objects and the report reads it back into them, so every
figure has one definition (its field) and one computation (the function that fills it). The
(de)serialisation is pydantic's, not ours: it validates what it reads, so a summary.json from
another schema fails loudly instead of rendering wrong numbers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from typing import Any, Self, TypeVar

import numpy as np
from pydantic import TypeAdapter

T = TypeVar("T")


@cache
def _adapter(cls: type[T]) -> TypeAdapter[T]:
    return TypeAdapter(cls)


class Json:
    """Mixin for frozen dataclasses: `to_json()` gives plain JSON data (NaN → null)."""

    def to_json(self) -> Any:
        return json.loads(_adapter(type(self)).dump_json(self))  # type: ignore[arg-type]  # mypy#11470: a class object is hashable

    @classmethod
    def from_json(cls, data: Any) -> Self:
        adapter: TypeAdapter[Self] = _adapter(cls)  # type: ignore[arg-type]  # mypy#11470, as above
        return adapter.validate_python(data)


@dataclass(frozen=True)
class Window(Json):
    """A time window a figure is computed over; its name goes into the figure's label."""

    name: str
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def label(self) -> str:
        return f"{self.name}, {self.seconds:.0f} s"

    def contains(self, ts: np.ndarray) -> np.ndarray:
        """Half-open [start, end): a sample on a boundary belongs to the later window."""
        return (ts >= self.start) & (ts < self.end)


class AnalysisBug(AssertionError):
    """A figure that cannot be true (e.g. a memory change below −100 %): a bug, not a finding."""


def num(value: Any) -> float | None:
    """A finite float, or None."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def stat(values: Any, how: str) -> float | None:
    """max, min, mean, median or pNN (numpy's linear interpolation) of the finite values."""
    array = np.asarray(values, dtype=float)
    array = array[np.isfinite(array)]
    if array.size == 0:
        return None
    if how in ("max", "min", "mean", "median"):
        return float(getattr(np, how)(array))
    return float(np.percentile(array, float(how.lstrip("p"))))


def pct_change(before: float | None, after: float | None, *, what: str = "") -> float | None:
    """(after − before) / before in %, from the very values shown beside it.

    Every quantity poolbench compares is non-negative (counts, bytes, rates, milliseconds),
    so a change below −100 % is impossible: it raises AnalysisBug rather than reaching a report.
    """
    if before is None or after is None or before == 0:
        return None
    if before < 0 or after < 0:
        raise AnalysisBug(f"negative value compared ({what}: {before} → {after})")
    return (after - before) / before * 100
