"""Numbers as people read them: one place for units, signs, rounding and the missing value.

In the manner of pyperf's `_formatter`: every figure in the text summary, the report and the
comparison table goes through here, so "n/a", the minus sign and the precision are the same
everywhere.
"""

from __future__ import annotations

from collections.abc import Callable

NA = "n/a"
MINUS = "−"  # a real minus sign, as in typeset tables
MiB = 1024 * 1024


def _signed(text: str, negative: bool) -> str:
    return f"{MINUS}{text}" if negative and text.strip("0. ") else text


def count(value: float | None) -> str:
    """Connections, sessions, requests: integers as integers, else one decimal."""
    if value is None:
        return NA
    text = f"{abs(value):,.0f}" if float(value).is_integer() else f"{abs(value):,.1f}"
    return _signed(text.replace(",", " "), value < 0)


def number(value: float | None, digits: int | None = None, unit: str = "") -> str:
    """A measured quantity: 3 significant-ish digits unless told (0 decimals from 100 up)."""
    if value is None:
        return NA
    if digits is None:
        digits = 0 if abs(value) >= 100 or float(value).is_integer() else 1
    text = f"{abs(value):,.{digits}f}".replace(",", " ")
    return _signed(text, value < 0) + (f" {unit}" if unit else "")


def mib(value: float | None) -> str:
    """Bytes as MiB: no decimals from 100 MiB up, one below."""
    if value is None:
        return NA
    v = value / MiB
    return number(v, 0 if abs(v) >= 100 else 1, "MiB")


def ms(value: float | None) -> str:
    return number(value, None if value is None or abs(value) >= 10 else 1, "ms")


def rate(value: float | None) -> str:
    """Per-second rates (requests/s, sessions/s)."""
    return number(value, None if value is None or abs(value) >= 10 else 2, "/s")


def share(value: float | None) -> str:
    """A fraction of a whole (0.56 → "56 %"), unsigned: one decimal below 10 %."""
    if value is None:
        return NA
    return number(value * 100, 1 if 0 < value < 0.1 else 0, "%")


def percent_of_core(value: float | None) -> str:
    return number(value, 1, "% of a core")


def pct(value: float | None, digits: int = 1) -> str:
    """A change: +12.3 %, −80 %, ±0 %."""
    if value is None:
        return NA
    text = f"{abs(value):.{digits}f}"
    sign = "±" if float(text) == 0 else (MINUS if value < 0 else "+")
    return f"{sign}{text} %"


def seconds(value: float | None) -> str:
    return number(value, 0 if value is None or abs(value) >= 10 else 1, "s")


UNITS: dict[str, Callable[[float | None], str]] = {
    "connections": count,
    "count": count,
    "bytes": mib,
    "ms": ms,
    "per_s": rate,
    "pct_core": percent_of_core,
    "s": seconds,
}


def value(value: float | None, unit: str) -> str:
    """A figure in its unit (see UNITS)."""
    return UNITS.get(unit, number)(value)
