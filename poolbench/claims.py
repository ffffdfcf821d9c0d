"""The seed's claims (DESIGN.md §1), each judged against the measurement.

The claims are quoted as the seed states them; the measured values come from summary.json
only. "Before" is the baseline (first variant) of the first experiment that has two or more
variants, "after" its second variant — whatever they are called. A verdict is one of
`holds`, `partly`, `does not hold`, `not measured`, always with the reason in words.
"""

from __future__ import annotations

from typing import Any

from poolbench.analysis import (
    GROWTH_THRESHOLD_PCT,
    dig,
    format_count,
    format_pct,
    primary_comparison,
)

HOLDS, PARTLY, FAILS, NOT_MEASURED = "holds", "partly", "does not hold", "not measured"
VERDICTS = (HOLDS, PARTLY, FAILS, NOT_MEASURED)
MEMORY_REDUCTION_PCT = 10.0  # below this, a memory difference is not "significant"
COUNT_TOLERANCE = 0.05  # a peak within 5 % (at least 1 connection) of the claim matches it
PCT_TOLERANCE = 5.0  # percentage points

SEED_CLAIMS: tuple[dict[str, Any], ...] = (
    {
        "id": "connections",
        "claim": "Connections, pool of 20 each: 100 → 20",
        "before": 100,
        "after": 20,
    },
    {"id": "connections_pct", "claim": "80 % fewer connections", "pct": -80.0},
    {"id": "pools", "claim": "Permanent pools 5 → 1", "before": 5, "after": 1},
    {"id": "engines", "claim": "Engines 9 → 4", "before": 9, "after": 4},
    {"id": "memory_leak", "claim": "Memory leaks eliminated"},
    {"id": "memory_reduction", "claim": "Significant memory reduction"},
    {"id": "performance", "claim": "Better performance (“performanță semnificativ îmbunătățită”)"},
)


def _mib(value: float | None) -> str:
    if value is None:
        return "n/a"
    text = f"{abs(value) / 1048576:.1f}"
    return f"{'−' if value < 0 and float(text) else ''}{text} MiB"


def _item(claim: dict[str, Any], claimed: str, measured: str, verdict: str, reason: str) -> dict:
    assert verdict in VERDICTS
    return {
        "id": claim["id"],
        "claim": claim["claim"],
        "claimed": claimed,
        "measured": measured,
        "verdict": verdict,
        "reason": reason,
    }


def _close(measured: float, claimed: float) -> bool:
    return abs(measured - claimed) <= max(1.0, COUNT_TOLERANCE * claimed)


def _count_verdict(
    b: float, a: float, cb: float, ca: float, what: str, exact: bool
) -> tuple[str, str]:
    match = (b == cb and a == ca) if exact else (_close(b, cb) and _close(a, ca))
    if match:
        return HOLDS, f"Measured {format_count(b)} → {format_count(a)} {what}, as claimed."
    if a < b:
        return PARTLY, (
            f"Fewer {what} after the change ({format_count(b)} → {format_count(a)}), "
            f"but not the claimed {format_count(cb)} → {format_count(ca)}."
        )
    return FAILS, f"Measured {format_count(b)} → {format_count(a)} {what}: no reduction."


def judge_claims(summary: dict[str, Any]) -> dict[str, Any]:
    """The claims table: one item per seed claim, for the primary comparison of the run."""
    primary = primary_comparison(summary)
    if primary is None:
        return {
            "experiment": None,
            "baseline": None,
            "variant": None,
            "items": [
                _item(
                    c,
                    _claimed(c),
                    "n/a",
                    NOT_MEASURED,
                    "The run has no experiment with two variants to compare.",
                )
                for c in SEED_CLAIMS
            ],
        }
    experiment, comparison = primary
    variants = {v["variant"]: v for v in experiment["variants"]}
    before = variants[comparison["baseline"]]["metrics"]
    after = variants[comparison["variant"]]["metrics"]
    judges = {
        "connections": _connections,
        "connections_pct": _connections_pct,
        "pools": _pools,
        "engines": _engines,
        "memory_leak": _memory_leak,
        "memory_reduction": _memory_reduction,
        "performance": _performance,
    }
    items = [judges[c["id"]](c, before, after, comparison) for c in SEED_CLAIMS]
    return {
        "experiment": experiment["name"],
        "baseline": comparison["baseline"],
        "variant": comparison["variant"],
        "items": items,
    }


def _claimed(claim: dict[str, Any]) -> str:
    if "before" in claim:
        return f"{claim['before']} → {claim['after']}"
    if "pct" in claim:
        return format_pct(claim["pct"])
    return "—"


def _connections(claim, before, after, comparison) -> dict:
    peak = comparison["peak_connections"]
    b, a = peak["baseline"], peak["variant"]
    if b is None or a is None:
        return _item(
            claim, _claimed(claim), "n/a", NOT_MEASURED, "No connection samples in the load phase."
        )
    verdict, reason = _count_verdict(
        b, a, claim["before"], claim["after"], "peak connections", exact=False
    )
    idle = comparison["idle_connections"]
    if idle["baseline"] is not None and idle["variant"] is not None:
        reason += (
            f" After the load, {format_count(idle['baseline'])} → {format_count(idle['variant'])} "
            "stay open: pools keep up to pool_size idle connections."
        )
    ceiling_b = before["model"]["predicted_ceiling"]
    if verdict != HOLDS and ceiling_b is not None and b < 0.9 * ceiling_b:
        reason += (
            f" The load did not fill the pools (before's ceiling is {format_count(ceiling_b)}); "
            "the claim is about the ceiling."
        )
    measured = f"{format_count(b)} → {format_count(a)}"
    return _item(claim, _claimed(claim), measured, verdict, reason)


def _connections_pct(claim, before, after, comparison) -> dict:
    peak = comparison["peak_connections"]
    pct = peak["delta_pct"]
    if pct is None:
        return _item(
            claim, _claimed(claim), "n/a", NOT_MEASURED, "No connection samples in the load phase."
        )
    idle_pct = comparison["idle_connections"]["delta_pct"]
    idle_text = f"; idle connections {format_pct(idle_pct)}" if idle_pct is not None else ""
    if abs(pct - claim["pct"]) <= PCT_TOLERANCE:
        verdict, reason = HOLDS, f"Peak connections changed by {format_pct(pct)}{idle_text}."
    elif pct < 0:
        verdict = PARTLY
        reason = (
            f"A reduction, but {format_pct(pct)} rather than {format_pct(claim['pct'])}{idle_text}."
        )
    else:
        verdict, reason = FAILS, f"Peak connections changed by {format_pct(pct)}{idle_text}."
    return _item(claim, _claimed(claim), format_pct(pct), verdict, reason)


def _pools(claim, before, after, comparison) -> dict:
    b_counts, a_counts = before["engine_counts"], after["engine_counts"]
    b, a = b_counts.get("holding_idle"), a_counts.get("holding_idle")
    if b is None or a is None or (b == 0 and a == 0):
        return _item(
            claim,
            _claimed(claim),
            "n/a",
            NOT_MEASURED,
            "No pool held connections in a sampled idle phase, so permanent pools are not observed.",
        )
    verdict, reason = _count_verdict(
        b, a, claim["before"], claim["after"], "pools holding connections when idle", exact=True
    )
    reason += (
        " A permanent pool is counted when its application_name still holds connections in the "
        "second half of the idle phase"
    )
    if b_counts.get("listed") or a_counts.get("listed"):
        reason += (
            f"; variant.json lists {format_count(b_counts.get('listed'))} → "
            f"{format_count(a_counts.get('listed'))} long-lived engines"
        )
    reason += "."
    return _item(claim, _claimed(claim), f"{format_count(b)} → {format_count(a)}", verdict, reason)


def _engines(claim, before, after, comparison) -> dict:
    b_counts, a_counts = before["engine_counts"], after["engine_counts"]
    b_census, a_census = b_counts.get("census"), a_counts.get("census")
    if b_census and a_census:
        b, a = b_census["sites"], a_census["sites"]
        source = "engine creation sites in the code (lint census)"
    elif b_counts.get("listed") or a_counts.get("listed"):
        # long-lived engines plus the other names seen at run time (e.g. temporary health engines)
        b = b_counts["listed"] + len(set(b_counts["observed_names"]) - _listed_names(before))
        a = a_counts["listed"] + len(set(a_counts["observed_names"]) - _listed_names(after))
        source = "long-lived engines in variant.json plus other application names seen at run time"
    elif b_counts.get("observed") or a_counts.get("observed"):
        b, a = b_counts["observed"], a_counts["observed"]
        source = "distinct application names seen at run time (an engine that never connects is invisible)"
    else:
        return _item(
            claim,
            _claimed(claim),
            "n/a",
            NOT_MEASURED,
            "No census, engine list or connections to count engines from.",
        )
    verdict, reason = _count_verdict(b, a, claim["before"], claim["after"], "engines", exact=True)
    reason += f" Counted from {source}."
    return _item(claim, _claimed(claim), f"{format_count(b)} → {format_count(a)}", verdict, reason)


def _listed_names(metrics: dict) -> set[str]:
    return (
        {row["name"] for row in metrics["model"]["engines"]}
        if metrics["model"]["source"] == "variant.json"
        else set()
    )


def _window_text(w: dict, where: str) -> str | None:
    if not w or w.get("pct_over_window") is None:
        return None
    return f"{format_pct(w['pct_over_window'], 1)} in {w['seconds']:.0f} s {where}"


def _leak_text(leak: dict) -> str:
    """e.g. "PostgreSQL PSS +0.7 % in 7 s of load, ±0.0 % in 7 s idle; app USS …"."""
    parts = []
    for key, label in (("postgres_pss", "PostgreSQL PSS"), ("app_uss", "app USS")):
        entry = leak.get(key) or {}
        windows = [
            text
            for phase, where in (("load", "of load"), ("idle", "idle"))
            if (text := _window_text(entry.get(phase) or {}, where))
        ]
        if windows:
            parts.append(f"{label} {', '.join(windows)}")
    return "; ".join(parts)


def _ramp_text(leak: dict) -> str:
    """What the load did to memory as a whole, when it opened backends: the fixed cost."""
    change = leak.get("load_change") or {}
    n0, n1 = change.get("backends_start"), change.get("backends_end")
    m0, m1 = change.get("postgres_pss_start_bytes"), change.get("postgres_pss_end_bytes")
    if None in (n0, n1, m0, m1) or n1 <= n0 or m1 <= m0:
        return ""
    text = (
        f" Over the load phase PostgreSQL PSS rose {_mib(m0)} → {_mib(m1)} while its backends "
        f"went {format_count(n0)} → {format_count(n1)}"
    )
    p0, p1 = change.get("pss_per_backend_start_bytes"), change.get("pss_per_backend_end_bytes")
    if p0 is not None and p1 is not None:
        text += f" (PSS per backend {_mib(p0)} → {_mib(p1)})"
    return text + ": every new connection costs a fixed amount, which is not a leak."


def _leak_slope(leak: dict) -> float:
    """The steepest growth at constant counts, in % of the level per minute."""
    rates = []
    for key in ("postgres_pss", "app_uss"):
        for phase in ("load", "idle"):
            w = (leak.get(key) or {}).get(phase) or {}
            if w.get("pct_over_window") is not None and w.get("seconds"):
                rates.append(w["pct_over_window"] / w["seconds"] * 60)
    return max(rates, default=0.0)


LEAK_HOW = (
    " How: a leak is memory that grows while the number of processes stays the same, so memory "
    "is compared only with itself inside windows where the number of PostgreSQL backends and "
    "Locust's user count did not change (load and idle phases separately); growing means more "
    f"than {GROWTH_THRESHOLD_PCT:.0f} % of the level over the time observed."
)


def _memory_leak(claim, before, after, comparison) -> dict:
    lb, la = before["memory"].get("leak") or {}, after["memory"].get("leak") or {}
    leak_b, leak_a = lb.get("grows"), la.get("grows")
    if leak_b is None:
        return _item(
            claim,
            "no leak after",
            _leak_text(lb) or "n/a",
            NOT_MEASURED,
            "Memory was not sampled long enough at a constant number of backends and users to "
            "tell a leak from the cost of new connections." + LEAK_HOW,
        )
    measured = f"before: {_leak_text(lb)}; after: {_leak_text(la) or 'n/a'}"
    if not leak_b:
        idle = comparison["postgres_pss_idle_bytes"]
        extra = ""
        if idle["delta"] is not None and idle["delta"] < 0:
            extra = (
                f" PostgreSQL holds {_mib(-idle['delta'])} less PSS after the change because it "
                "has fewer backends: a fixed multiplier (more pools × pool_size), not a leak."
            )
        return _item(
            claim,
            "no leak after",
            measured,
            FAILS,
            "There was no leak to eliminate: at a constant number of backends and users, memory "
            f"stayed flat before the change.{_ramp_text(lb)}{extra}{LEAK_HOW}",
        )
    if leak_a is None:
        return _item(
            claim,
            "no leak after",
            measured,
            NOT_MEASURED,
            "Memory grew at a constant number of backends and users before the change, but the "
            f"variant after it was not sampled long enough at constant counts to tell.{LEAK_HOW}",
        )
    if leak_a is False:
        return _item(
            claim,
            "no leak after",
            measured,
            HOLDS,
            "Memory grew at a constant number of backends and users before the change and stays "
            f"flat after it.{LEAK_HOW}",
        )
    if leak_a and _leak_slope(la) < _leak_slope(lb) / 2:
        return _item(
            claim,
            "no leak after",
            measured,
            PARTLY,
            "Memory still grows at a constant number of backends and users after the change, "
            f"but less than half as fast.{LEAK_HOW}",
        )
    return _item(
        claim,
        "no leak after",
        measured,
        FAILS,
        f"Memory grows at a constant number of backends and users after the change too.{LEAK_HOW}",
    )


def _memory_reduction(claim, before, after, comparison) -> dict:
    pg = comparison["postgres_pss_idle_bytes"]
    pg_peak = comparison["postgres_pss_peak_bytes"]
    app = comparison["app_uss_peak_bytes"]
    if pg["delta_pct"] is None and app["delta_pct"] is None:
        return _item(claim, "significant", "n/a", NOT_MEASURED, "No memory samples.")
    parts = []
    if pg["delta_pct"] is not None:
        parts.append(
            f"PostgreSQL PSS idle {_mib(pg['baseline'])} → {_mib(pg['variant'])} ({format_pct(pg['delta_pct'])})"
        )
    if pg_peak["delta_pct"] is not None:
        parts.append(f"at peak {format_pct(pg_peak['delta_pct'])}")
    if app["delta_pct"] is not None:
        parts.append(
            f"app USS {_mib(app['baseline'])} → {_mib(app['variant'])} ({format_pct(app['delta_pct'])})"
        )
    measured = "; ".join(parts)
    pg_down = pg["delta_pct"] is not None and pg["delta_pct"] <= -MEMORY_REDUCTION_PCT
    app_down = app["delta_pct"] is not None and app["delta_pct"] <= -MEMORY_REDUCTION_PCT
    threshold = f"{MEMORY_REDUCTION_PCT:.0f} %"
    if pg_down and app_down:
        return _item(
            claim,
            "significant",
            measured,
            HOLDS,
            f"Both PostgreSQL's backends and the app use at least {threshold} less memory.",
        )
    if pg_down:
        return _item(
            claim,
            "significant",
            measured,
            PARTLY,
            "The saving is in PostgreSQL (fewer backend processes); the app's own memory "
            f"changed by less than {threshold}.",
        )
    if app_down:
        return _item(
            claim,
            "significant",
            measured,
            PARTLY,
            f"The app uses less memory, but PostgreSQL's backends changed by less than {threshold}.",
        )
    return _item(
        claim,
        "significant",
        measured,
        FAILS,
        f"Neither PostgreSQL's backends nor the app changed by {threshold} or more.",
    )


def _test_text(name: str, entry: dict) -> str:
    test = entry.get("test")
    if test is None:
        if entry["delta_pct"] is None:
            return f"{name} n/a"
        return f"{name} {format_pct(entry['delta_pct'], 1)} (not tested)"
    low, high = test["ci95_pct"]
    mark = "" if test["significant"] else " ~ no significant difference"
    return (
        f"{name} {format_pct(test['delta_pct'], 1)} "
        f"(95 % CI {format_pct(low, 1)} … {format_pct(high, 1)}){mark}"
    )


def _direction(entry: dict, higher_is_better: bool) -> int | None:
    """+1 significantly better, −1 significantly worse, 0 no significant difference, None unknown."""
    test = entry.get("test")
    if test is None:
        return None
    if not test["significant"]:
        return 0
    up = test["delta_pct"] > 0
    return 1 if up == higher_is_better else -1


def _performance(claim, before, after, comparison) -> dict:
    rps, p95 = comparison["requests_per_s"], comparison["latency_p95_ms"]
    moves = [d for d in (_direction(rps, True), _direction(p95, False)) if d is not None]
    failures_b = dig(before, ("locust", "failure_ratio"))
    failures_a = dig(after, ("locust", "failure_ratio"))
    fewer_errors = (
        failures_b is not None
        and failures_a is not None
        and failures_b > 0.01
        and failures_a < failures_b / 2
    )
    more_errors = (
        failures_b is not None
        and failures_a is not None
        and failures_a > 0.01
        and failures_a > failures_b * 2
    )
    if fewer_errors:
        moves.append(1)
    if more_errors:
        moves.append(-1)
    measured = "; ".join([_test_text("requests/s", rps), _test_text("p95 latency", p95)])
    words = {
        "requests/s": _direction(rps, True),
        "p95 latency": _direction(p95, False),
        "failed requests": 1 if fewer_errors else -1 if more_errors else None,
    }
    gains = [name for name, d in words.items() if d == 1]
    losses = [name for name, d in words.items() if d == -1]
    if failures_b is not None and failures_a is not None:
        measured += f"; failed requests {failures_b * 100:.1f} % → {failures_a * 100:.1f} %"
    if not moves:
        return _item(claim, "better", measured, NOT_MEASURED, "No Locust statistics to compare.")
    better, worse = 1 in moves, -1 in moves
    if better and not worse:
        return _item(
            claim, "better", measured, HOLDS,
            f"Significantly better {' and '.join(gains)}, and worse on nothing measured.",
        )  # fmt: skip
    if better and worse:
        return _item(
            claim, "better", measured, PARTLY,
            f"Better {' and '.join(gains)}, but worse {' and '.join(losses)}.",
        )  # fmt: skip
    if worse:
        return _item(
            claim, "better", measured, FAILS,
            f"Significantly worse {' and '.join(losses)}, and better on nothing measured. With "
            "fewer connections in total, requests wait for a connection when a pool is "
            "saturated (see the model).",
        )  # fmt: skip
    return _item(
        claim,
        "better",
        measured,
        FAILS,
        "No significant difference in throughput or latency: the differences are within the "
        "run-to-run noise.",
    )
