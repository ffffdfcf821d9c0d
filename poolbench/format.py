"""Numbers as people read them: one place for units, signs, rounding and the missing value.

In the manner of pyperf's `_formatter`: every figure in the text summary, the report and the
comparison table goes through here, so "n/a", the minus sign and the precision are the same
everywhere.
"""

from __future__ import annotations

import re
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


def pct(value: float | None, digits: int | None = None) -> str:
    """A change in %, by the one rule for every change the report shows:

    - below 100 %: one decimal, a trailing ".0" dropped (+12.3 %, −80 %, ±0 %);
    - from 100 % up to 1 000 %: no decimals (+106 %, +733 %);
    - past +1 000 %: the ratio instead ("38×"), since "+3 733 %" reads as noise.

    `digits` forces a precision (for a figure that is not a change, e.g. a disagreement).
    """
    if value is None:
        return NA
    if digits is None and value >= 1000:
        return f"{count(round(1 + value / 100))}×"
    if digits is None:
        digits = 1 if abs(value) < 100 else 0
    text = f"{abs(value):,.{digits}f}".replace(",", " ")
    if digits and text.endswith("." + "0" * digits):
        text = text[: -(digits + 1)]
    sign = "±" if float(text.replace(" ", "")) == 0 else (MINUS if value < 0 else "+")
    return f"{sign}{text} %"


_SHOWN = re.compile(r"^[−-]?\d{1,3}(?: \d{3})*(?:\.\d+)?")


def shown(value: float | None, unit: str = "") -> float | None:
    """The number a reader sees for `value` in `unit` (see UNITS), at the precision shown:
    0.0301 /s is shown as 0.03 and read back as 0.03; 1.5 MiB in bytes as 1.5 (MiB)."""
    if value is None:
        return None
    match = _SHOWN.match(globals()["value"](value, unit))
    if match is None:
        return None
    return float(match.group(0).replace(" ", "").replace(MINUS, "-"))


def change(before: float | None, after: float | None, unit: str = "") -> str:
    """The change from `before` to `after` as the reader can recompute it: from the two
    values at the precision they are shown with (`shown`), formatted by `pct`'s rule.
    From a shown 0 there is no ratio (n/a), unless the other side is 0 too (±0 %)."""
    a, b = shown(before, unit), shown(after, unit)
    if a is None or b is None:
        return NA
    if a == b:
        return "±0 %"
    if a == 0:
        return NA
    return pct((b - a) / abs(a) * 100)


def change_pct(before: float | None, after: float | None, unit: str = "") -> float | None:
    """The number behind `change` (None when it says n/a)."""
    a, b = shown(before, unit), shown(after, unit)
    if a is None or b is None or a == 0:
        return None if a != b or a is None else 0.0
    return (b - a) / abs(a) * 100


def plural(n: float, word: str, many: str | None = None) -> str:
    """ "1 block", "2 blocks", "0 blocks": a count and its noun, agreeing."""
    return f"{count(n)} {word if n == 1 else many or word + 's'}"


def seconds(value: float | None) -> str:
    return number(value, 0 if value is None or abs(value) >= 10 else 1, "s")


# pg_settings.setting is in the setting's own unit (pg_settings.unit): bytes per unit here
PG_SETTING_BYTES = {
    "shared_buffers": 8192,
    "effective_cache_size": 8192,
    "wal_buffers": 8192,
    "work_mem": 1024,
    "maintenance_work_mem": 1024,
    "temp_buffers": 8192,
}


def pg_setting(name: str, setting: object) -> str:
    """A PostgreSQL setting as pg_settings gives it (shared_buffers 16384, in 8 kB pages), in
    its unit: "128 MiB"."""
    size = PG_SETTING_BYTES.get(name)
    try:
        amount = float(str(setting))
    except ValueError:
        return str(setting)
    if size is None or amount < 0:
        return str(setting)
    return number(amount * size / MiB, None if amount * size >= MiB else 2, "MiB")


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
