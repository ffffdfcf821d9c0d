"""An independent recomputation of the at-a-glance figures, from the raw files only.

It shares no code with poolbench.analysis (nor with poolbench's file readers): it parses
samples.csv with the csv module, requests.bin from its documented layout (docs/results.md),
Locust's stats history and variant.json, applies the window definitions as docs/report.md states
them, and compares every figure with summary.json. Used by tests/test_recompute.py on a real
quick run; also a script:

    .venv/bin/python tests/recompute.py results/latest
"""

from __future__ import annotations

import csv
import json
import re
import struct
import sys
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

SETTLE_S = 2.0
# a refusal named in a request's error: the SQLSTATE as a word of its own (not a client port
# "127.0.0.1:53300", a path "/users/53300" or a pid "[53300]"), or PostgreSQL's words
REFUSED = r"(?<![\w:/.\[#-])53300(?![\w\]:.])|too many clients|remaining connection slots"


def names_a_refusal(text: str) -> bool:
    """Whether text (an app log, Locust's error strings) records PostgreSQL refusing a
    connection: the SQLSTATE as a token of its own, or the server's own words. A substring
    test for "53300" also counts uvicorn's access-log client port ("127.0.0.1:53300")."""
    return re.search(REFUSED, text, re.I) is not None


HEADER = struct.Struct("<8sdII8x")
RECORDS = {  # by the format version in the magic's last byte
    1: np.dtype(
        [
            ("response_ms", "<f8"),
            ("start_ms", "<i4"),
            ("name", "<u2"),
            ("ok", "u1"),
            ("worker", "u1"),
        ]
    ),
    2: np.dtype(
        [
            ("response_ms", "<f4"),
            ("start_ms", "<i4"),
            ("user", "<u4"),
            ("name", "<u2"),
            ("ok", "u1"),
            ("worker", "u1"),
        ]
    ),
}


def _phases(variant: dict) -> dict[str, tuple[float, float]]:
    return {p["name"]: (p["start"], p["end"]) for p in variant["phases"] if p.get("end")}


def _samples(path: Path) -> dict[str, list[tuple]]:
    by_metric: dict[str, list[tuple]] = defaultdict(list)
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            value = float(row["value"]) if row["value"] != "" else float("nan")
            by_metric[row["metric"]].append(
                (float(row["ts"]), row["application_name"], row["state"], row["component"], value)
            )
    return by_metric


def _inside(ts: float, window: tuple[float, float]) -> bool:
    return window[0] <= ts < window[1]


def _users(vdir: Path) -> list[tuple[float, float]]:
    with (vdir / "locust_stats_history.csv").open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["Name"] == "Aggregated"]
    return sorted((float(r["Timestamp"]), float(r["User Count"])) for r in rows)


def full_load(users: list[tuple[float, float]], load: tuple[float, float]) -> tuple[float, float]:
    """Longest run of history rows at the top user count in the load phase, plus settling."""
    inside = [(t, u) for t, u in users if load[0] <= t <= load[1]]
    top = max(u for _, u in inside)
    best, start = (0.0, None, None), None
    for i, (t, u) in enumerate(inside):
        if u >= top and start is None:
            start = t
        last = i == len(inside) - 1
        if start is not None and (u < top or last):
            end = load[1] if u >= top else t
            if end - start > best[0]:
                best = (end - start, start, end)
            start = None
    return max(best[1], load[0]) + SETTLE_S, min(best[2], load[1])


def _requests(vdir: Path) -> np.ndarray:
    raw = (vdir / "requests.bin").read_bytes()
    magic, base, _, _ = HEADER.unpack_from(raw)
    records = np.frombuffer(raw, dtype=RECORDS[magic[-1]], offset=HEADER.size)
    start = base + records["start_ms"] / 1000.0
    response = records["response_ms"].astype("f8")
    return np.rec.fromarrays(
        [start + response / 1000.0, response, records["ok"] == 1],
        names="end,ms,ok",
    )


def _sum_at(rows: list[tuple], keep) -> dict[float, float]:
    out: dict[float, float] = defaultdict(float)
    for ts, app, state, component, value in rows:
        if keep(app, state, component):
            out[ts] += value
    return out


def _series_max(series: dict[float, float], window) -> float:
    return max(v for t, v in series.items() if _inside(t, window))


def _series_median(series: dict[float, float], window) -> float:
    return float(np.median([v for t, v in series.items() if _inside(t, window)]))


def recompute(vdir: Path) -> dict[str, float | None]:
    variant = json.loads((vdir / "variant.json").read_text())
    phases = _phases(variant)
    load, idle = phases["load"], phases["idle"]
    idle2 = (idle[0] + (idle[1] - idle[0]) / 2, idle[1])
    samples = _samples(vdir / "samples.csv")
    total = _sum_at(samples["connections_total"], lambda *_: True)
    per_name: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    ticks = sorted(total)
    for ts, app, _state, _c, value in samples["connections"]:
        per_name[app][ts] += value
    holding = sum(
        1
        for series in per_name.values()
        if np.median([series.get(t, 0.0) for t in ticks if _inside(t, idle2)]) >= 1
    )
    window = full_load(_users(vdir), load)
    req = _requests(vdir)
    served = (req.end >= window[0]) & (req.end < window[1])
    good = req.ms[served & req.ok]
    seconds = window[1] - window[0]
    pg_parts = ("postgres_backends", "postgres_postmaster", "postgres_other")

    def memory(metric: str, components) -> dict[float, float]:
        return _sum_at(samples[metric], lambda app, state, c: c in components)

    refusals = 0
    log = (vdir / "app.log").read_text(errors="replace")
    record = None
    for line in [*log.splitlines(), "INFO end"]:
        if re.match(r"^(CRITICAL|ERROR|WARNING|INFO|DEBUG)\b", line):
            refusals += bool(record)
            record = False
        if re.search(REFUSED, line, re.I):
            record = True
    failures = {}
    with (vdir / "locust_failures.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            if re.search(REFUSED, row["Error"], re.I):
                failures["refused"] = failures.get("refused", 0) + int(row["Occurrences"])
    return {
        "peak_connections": _series_max(total, load),
        "idle_connections": _series_median(total, idle2),
        "pools_holding_idle": float(holding),
        "refused_requests": float(max(refusals, failures.get("refused", 0))),
        "refusals": _server_refusals(vdir / "postgres.log", phases),
        "goodput": good.size / seconds,
        "failures_per_s": int((served & ~req.ok).sum()) / seconds,
        "p50_ms": float(np.percentile(good, 50, method="inverted_cdf")),
        "p95_ms": float(np.percentile(good, 95, method="inverted_cdf")),
        "p99_ms": float(np.percentile(good, 99, method="inverted_cdf")),
        "postgres_pss_idle": _series_median(memory("mem_pss_bytes", pg_parts), idle2),
        "postgres_uss_idle": _series_median(memory("mem_uss_bytes", pg_parts), idle2),
        "app_uss": float(
            np.mean([v for t, v in memory("mem_uss_bytes", ("app",)).items() if _inside(t, window)])
        ),
    }


def _server_refusals(log: Path, phases: dict[str, tuple[float, float]]) -> float | None:
    """FATAL lines with SQLSTATE 53300 in the server's own log, within the variant's phases."""
    if not log.is_file():
        return None
    start, end = min(p[0] for p in phases.values()), max(p[1] for p in phases.values())
    count = 0
    for line in log.read_text(errors="replace").splitlines():
        found = re.match(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) UTC \[\d+\] 53300 FATAL:", line)
        if found:
            ts = datetime.strptime(found[1], "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC).timestamp()
            count += start <= ts < end
    return float(count)


def compare(run_dir: Path) -> list[str]:
    """Every disagreement between summary.json's glance rows and the recomputation."""
    summary = json.loads((run_dir / "summary.json").read_text())
    problems = []
    for experiment in summary["experiments"]:
        for table in experiment["comparisons"]:
            for side, key in ((table["baseline"], "baseline"), (table["variant"], "variant")):
                entry = next(v for v in experiment["variants"] if v["name"] == side)
                mine = recompute(run_dir / entry["repeats"][0]["dir"])
                for row in table["rows"]:
                    if row["metric"] not in mine:
                        continue
                    theirs, ours = row[key], mine[row["metric"]]
                    if theirs is None and ours is None:  # not measured on either side
                        continue
                    if theirs is None or not np.isclose(theirs, ours, rtol=1e-9, atol=1e-9):
                        problems.append(
                            f"{experiment['name']}/{side} {row['metric']}: "
                            f"summary {theirs}, recomputed {ours}"
                        )
    return problems


if __name__ == "__main__":
    found = compare(Path(sys.argv[1]))
    print("\n".join(found) or "every at-a-glance figure agrees")
    sys.exit(1 if found else 0)
