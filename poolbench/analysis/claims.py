"""Claims as data: what a change is said to do, judged against the measurement by one rule.

Claims live in the bench file (`[experiments.NAME.claims.ID]`, see scenarios/bench.toml) and
reach the analysis through run.json; an experiment without claims gets no claims section. Every
claim is judged by the same rule:

- *holds*: the measurement meets or beats the claim (for a noisy metric, the claimed value lies
  within the measured interval or beyond it on the better side; exact counts have no tolerance);
- *partly*: it moves in the claimed direction but falls short (or improves some of the claimed
  metrics and none gets worse... while others are unchanged or untested);
- *does not hold*: it does not move, or moves the wrong way;
- *untested*: both variants were measured but the difference is not established — one repeat
  per variant (a within-run test alone included): the values are shown, no verdict is drawn;
- *not measured*: nothing to decide with — a metric never sampled, a window too short, a
  fault that spoiled the run.

A difference "moves" only when it is established: exact and different, or significant in a test
across repeats (poolbench.analysis.compare); a within-run test alone never decides a claim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from poolbench import format as fmt
from poolbench.analysis.compare import ComparisonTable, Row
from poolbench.analysis.figures import VariantFigures
from poolbench.analysis.leak import FLAT, GROWING
from poolbench.analysis.metrics import BY_NAME
from poolbench.analysis.typed import Json
from poolbench.results.status import Status

HOLDS, PARTLY, FAILS, UNTESTED, NOT_MEASURED = (
    "holds",
    "partly",
    "does not hold",
    "untested",
    "not measured",
)
VERDICTS = (HOLDS, PARTLY, FAILS, UNTESTED, NOT_MEASURED)
KINDS = ("level", "change", "direction", "no_leak")


@dataclass(frozen=True)
class Claim(Json):
    """One claim as the bench file states it (see poolbench.config.bench for the keys)."""

    id: str
    text: str
    metrics: list[str]
    before: float | None = None
    after: float | None = None
    change_pct: float | None = None
    direction: str | None = None  # "better", "lower" or "higher"
    kind: str = "level"  # level, change, direction, no_leak

    def claimed(self) -> str:
        if self.kind == "level":
            return f"{fmt.count(self.before)} → {fmt.count(self.after)}"
        if self.kind == "change":
            return fmt.pct(self.change_pct)
        if self.kind == "no_leak":
            return "no memory growth after"
        return f"{self.direction} {', '.join(self.metrics)}"


@dataclass(frozen=True)
class Judgement(Json):
    claim: Claim
    measured: str
    verdict: str
    reason: str


@dataclass(frozen=True)
class ClaimsTable(Json):
    experiment: str
    baseline: str
    variant: str
    items: list[Judgement]


def _shown(row: Row) -> str:
    return f"{fmt.value(row.baseline, row.unit)} → {fmt.value(row.variant, row.unit)}"


def _undecided(row: Row) -> str:
    if row.spoiled:
        return f"{row.label}: {_shown(row)}, not measured: {row.spoiled}."
    if row.within_run:
        return (
            f"{row.label}: {_shown(row)} in one run per variant — the difference is untested "
            "across runs (run with --repeats 5 or more)"
        )
    why = row.result.footnotes[0] if row.result.footnotes else "no test possible"
    return f"{row.label}: {_shown(row)}, untested ({why})"


def _undecided_verdict(rows: list[Row]) -> str:
    """Untested when every undecided row has both values (measured, one repeat), else not
    measured: "not measured" is said only when something was not measured — or when a row's
    values are spoiled (a failed variant, one capped by another client)."""
    measured = all(r.baseline is not None and r.variant is not None and not r.spoiled for r in rows)
    return UNTESTED if rows and measured else NOT_MEASURED


def _moved(row: Row, sign: int) -> bool | None:
    """True when the change is established in direction `sign`, None when undecided."""
    if row.baseline is None or row.variant is None:
        return None
    if row.within_run or row.verdict in ("untested", "not measured"):
        return None
    if row.verdict in ("same", "no difference"):
        return False
    return (row.variant - row.baseline) * sign > 0


def _meets_level(row: Row, claim: Claim, sign: int) -> bool:
    """The variant reaches the claimed level and the change is at least the claimed one."""
    target = claim.after
    # _judge_level asks only when _moved found both figures; a level claim has both levels
    assert row.variant is not None and row.baseline is not None
    assert target is not None and claim.before is not None
    reach = (
        row.variant if row.exact else (row.result.b.ci_low if sign < 0 else row.result.b.ci_high)
    )
    reach = row.variant if reach is None else reach
    change_ok = abs(row.variant - row.baseline) >= abs(target - claim.before)
    return (reach - target) * sign >= 0 and change_ok


def _judge_level(claim: Claim, row: Row) -> Judgement:
    sign = 1 if (claim.after or 0) > (claim.before or 0) else -1
    moved = _moved(row, sign)
    if moved is None:
        return Judgement(claim, _shown(row), _undecided_verdict([row]), _undecided(row))
    measured = _shown(row)
    if not moved:
        return Judgement(
            claim,
            measured,
            FAILS,
            f"{row.label} did not move in the claimed direction ({measured}).",
        )
    if _meets_level(row, claim, sign):
        extra = ""
        if row.baseline != claim.before:
            extra = (
                " (the measured starting point is "
                f"{fmt.value(row.baseline, row.unit)}, not {fmt.count(claim.before)})"
            )
        return Judgement(
            claim, measured, HOLDS, f"{row.label}: {measured}, as claimed or better{extra}."
        )
    return Judgement(
        claim,
        measured,
        PARTLY,
        f"{row.label} moved the claimed way ({measured}) but not as far as {claim.claimed()}.",
    )


def _judge_change(claim: Claim, row: Row) -> Judgement:
    sign = -1 if (claim.change_pct or 0) < 0 else 1
    moved = _moved(row, sign)
    measured = fmt.change(row.baseline, row.variant, row.unit)
    if moved is None or row.change_pct is None:
        return Judgement(claim, measured, _undecided_verdict([row]), _undecided(row))
    if not moved:
        return Judgement(
            claim, measured, FAILS, f"{row.label} changed by {measured} ({_shown(row)})."
        )
    assert claim.change_pct is not None  # a change claim has its percentage (config checks)
    if (row.change_pct - claim.change_pct) * sign >= 0:
        return Judgement(
            claim, measured, HOLDS, f"{row.label} changed by {measured} ({_shown(row)})."
        )
    return Judgement(
        claim,
        measured,
        PARTLY,
        f"{row.label} changed by {measured} ({_shown(row)}), short of {claim.claimed()}.",
    )


def _judge_direction(claim: Claim, rows: list[Row]) -> Judgement:
    gains, losses, flat, undecided, open_rows = [], [], [], [], []
    for row in rows:
        if claim.direction == "better":
            sign = 1 if row.better == "higher" else -1
        else:
            sign = 1 if claim.direction == "higher" else -1
        moved = _moved(row, sign)
        against = _moved(row, -sign)
        text = f"{row.label} {_shown(row)} ({fmt.change(row.baseline, row.variant, row.unit)})"
        if moved:
            gains.append(text)
        elif against:
            losses.append(text)
        elif moved is None:
            undecided.append(_undecided(row))
            open_rows.append(row)
        else:
            flat.append(text)
    measured = "; ".join(
        f"{r.label} {_shown(r)} ({fmt.change(r.baseline, r.variant, r.unit)})" for r in rows
    )
    if losses:
        verdict = PARTLY if gains else FAILS
        reason = f"Worse: {'; '.join(losses)}." + (f" Better: {'; '.join(gains)}." if gains else "")
    elif gains and not flat and not undecided:
        verdict, reason = HOLDS, f"Established for every claimed metric: {'; '.join(gains)}."
    elif gains:
        verdict = PARTLY
        reason = f"Better: {'; '.join(gains)}." + (
            f" No difference: {'; '.join(flat)}." if flat else ""
        )
        reason += f" Undecided: {'; '.join(undecided)}." if undecided else ""
    elif undecided:
        verdict, reason = (
            _undecided_verdict(open_rows),
            "; ".join(undecided) + (f". No difference: {'; '.join(flat)}." if flat else "."),
        )
    else:
        verdict, reason = FAILS, f"No difference: {'; '.join(flat)}."
    return Judgement(claim, measured, verdict, reason)


def _leak_state(figures: list[VariantFigures]) -> tuple[str, str]:
    """(growing | no growth | not measured, words) over the repeats and the memory series."""
    trends = [t for f in figures for t in f.leak if t.unit == "bytes" and t.judged]
    if any(t.verdict == GROWING for t in trends):
        worst = max((t for t in trends if t.verdict == GROWING), key=lambda t: t.slope_per_h or 0)
        return GROWING, f"{worst.what} grows {fmt.mib(worst.slope_per_h)}/h"
    if trends and all(t.verdict == FLAT for t in trends):
        return FLAT, "; ".join(
            f"{t.what} no growth above {fmt.mib(t.high_per_h)}/h" for t in trends
        )
    reasons = {t.reason for t in trends if t.verdict not in (GROWING, FLAT)} or {
        "no memory samples"
    }
    return "not measured", "; ".join(sorted(reasons))


def _judge_no_leak(
    claim: Claim, before: list[VariantFigures], after: list[VariantFigures]
) -> Judgement:
    (b, b_text), (a, a_text) = _leak_state(before), _leak_state(after)
    measured = f"before: {b_text}; after: {a_text}"
    if b == FLAT:
        return Judgement(
            claim,
            measured,
            FAILS,
            "There was no leak to eliminate: memory did not grow at a constant load "
            "before the change either. Fewer pools hold fewer connections — a fixed "
            "multiplier, not a leak.",
        )
    if b != GROWING or a not in (GROWING, FLAT):
        return Judgement(
            claim,
            measured,
            NOT_MEASURED,
            f"The leak test could not decide ({b_text if b != GROWING else a_text}).",
        )
    if a == FLAT:
        return Judgement(
            claim,
            measured,
            HOLDS,
            "Memory grew at a constant load before the change and does not after it.",
        )
    return Judgement(
        claim, measured, FAILS, "Memory grows at a constant load after the change too."
    )


def judge(
    claims: list[Claim],
    table: ComparisonTable,
    experiment: str,
    before: list[VariantFigures],
    after: list[VariantFigures],
) -> ClaimsTable:
    spoiled = _faults(before + after)
    items = []
    for claim in claims:
        rows = [r for m in claim.metrics if (r := table.row(m)) is not None]
        if len(rows) > 1:  # a metric this run could not measure (e.g. no server log) is left out
            rows = [r for r in rows if r.baseline is not None or r.variant is not None] or rows
        if spoiled:
            items.append(
                Judgement(
                    claim, fmt.NA, NOT_MEASURED, f"A fault spoiled the measurement: {spoiled}."
                )
            )
        elif claim.kind == "no_leak":
            items.append(_judge_no_leak(claim, before, after))
        elif not rows:
            items.append(Judgement(claim, fmt.NA, NOT_MEASURED, "Its metric was not measured."))
        elif claim.kind == "level":
            items.append(_judge_level(claim, rows[0]))
        elif claim.kind == "change":
            items.append(_judge_change(claim, rows[0]))
        else:
            items.append(_judge_direction(claim, rows))
    items = [_no_hold_with_refusals(j, _refused(after)) for j in items]
    return ClaimsTable(experiment, table.baseline, table.variant, items)


PERFORMANCE = {"goodput", "failures_per_s", "p50_ms", "p95_ms", "p99_ms"}


def _refused(after: list[VariantFigures]) -> tuple[float, str]:
    """What the server refused the variant, in words: connection attempts from its log, else
    failed requests whose error names a refusal."""
    logged = [f.exact.attempts.refused for f in after if f.exact.attempts is not None]
    if logged:
        return float(sum(logged)), "connection attempts (its log)"
    return float(sum(f.traffic.refusals or 0 for f in after)), "requests (app log / Locust)"


def _no_hold_with_refusals(j: Judgement, refused: tuple[float, str]) -> Judgement:
    """A variant PostgreSQL refused connections to cannot hold a performance claim."""
    count, what = refused
    if j.verdict != HOLDS or not count or not PERFORMANCE & set(j.claim.metrics):
        return j
    return Judgement(
        j.claim,
        j.measured,
        PARTLY,
        f"{j.reason} But PostgreSQL refused {fmt.count(count)} of its {what} (SQLSTATE 53300): "
        "not better performance while connections are refused.",
    )


def _faults(figures: list[VariantFigures]) -> str:
    """What went wrong in the compared variants (a status other than complete), in words."""
    return "; ".join(
        f"{f.variant}-{f.repeat} is {f.status}" + (f" ({f.fault})" if f.fault else "")
        for f in figures
        if f.status not in (None, Status.COMPLETE)
    )


def not_compared(claims: list[Claim], experiment: str, baseline: str) -> ClaimsTable:
    """An experiment with claims but one variant with data: every claim is not measured."""
    reason = "Only one variant has data: there is nothing to compare it with."
    items = [Judgement(c, fmt.NA, NOT_MEASURED, reason) for c in claims]
    return ClaimsTable(experiment, baseline, fmt.NA, items)


def claim_from_config(claim_id: str, table: dict[str, Any]) -> Claim:
    """A Claim from its bench-file table (already validated by poolbench.config.bench)."""
    metrics = table.get("metrics") or ([table["metric"]] if table.get("metric") else [])
    if table.get("kind") == "no_leak":
        kind = "no_leak"
    elif "change_pct" in table:
        kind = "change"
    elif "direction" in table:
        kind = "direction"
    else:
        kind = "level"
    return Claim(
        id=claim_id,
        text=str(table["text"]),
        metrics=list(metrics),
        before=table.get("before"),
        after=table.get("after"),
        change_pct=table.get("change_pct"),
        direction=table.get("direction"),
        kind=kind,
    )


def metric_names() -> tuple[str, ...]:
    return tuple(BY_NAME)
