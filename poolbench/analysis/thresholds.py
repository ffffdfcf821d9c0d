"""CI gates: `--fail-if` expressions checked against a run's figures and comparisons.

The grammar and its parser are poolbench/config/thresholds.py (a gate is read with the bench
file, so a malformed one fails before a run); here, what a parsed gate means against a run.

Two forms, two meanings:

- **Arithmetic** (anything but the form below): the figures are `source.value(variant,
  metric)` (what the report shows, e.g. the median over repeats), compared as numbers.
- **Significance**: the same metric of two variants, bare, with `<`, `>` or `!=` — "X.m < Y.m"
  means X is *significantly* lower than Y, decided by `source.comparison(Y, X, m)` (X against
  baseline Y), never by the raw numbers. An exact comparison (identical across repeats) decides
  by its values. An untested difference is **inconclusive**. `<=`, `>=` and `==` are refused in
  this form: "not significantly higher" would fail a gate whenever the test lacks power; write
  `X.m <= 1 * Y.m` to compare the raw figures.

Outcomes: *breached* (the condition holds: the gate fails), *passed*, *inconclusive* (a figure
missing, a division by zero, an untested difference). Inconclusive does **not** fail CI by
default — "not shown lower" is what an underpowered test says too, and a gate that fails on
every one-repeat run would be switched off — but it is printed and reported as such;
`exit_code(results, strict=True)` makes it fail. A breach exits with EXIT_THRESHOLD.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from poolbench.analysis.stats import Comparison
from poolbench.config.thresholds import (
    BY_SYMBOL,
    SIGNIFICANCE_OPS,
    Threshold,
    compute,
    parse,
    validate,
)

EXIT_THRESHOLD = 3  # a threshold breached; bad input is 2, a failed run 1, interrupted 130


class Outcome(StrEnum):
    """What a threshold decided: breached fails the run, inconclusive only with --strict."""

    BREACHED = "breached"
    PASSED = "passed"
    INCONCLUSIVE = "inconclusive"


class ThresholdSource(Protocol):
    """What a threshold is checked against (a run's analysis, or a compare across runs)."""

    def variants(self) -> Collection[str]: ...

    def metrics(self) -> Collection[str]: ...

    def value(self, variant: str, metric: str) -> float | None: ...

    def comparison(self, baseline: str, other: str, metric: str) -> Comparison | None:
        """`other` against `baseline` (change_pct = other vs baseline), or None if none."""
        ...


@dataclass(frozen=True)
class ThresholdResult:
    expression: str
    outcome: Outcome
    explanation: str  # one line, with the values it was decided on
    values: dict[str, float | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "expression": self.expression,
            "outcome": str(self.outcome),
            "explanation": self.explanation,
            "values": dict(self.values),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ThresholdResult:
        return cls(
            data["expression"], Outcome(data["outcome"]), data["explanation"], data["values"]
        )


def evaluate(threshold: Threshold, source: ThresholdSource) -> ThresholdResult:
    """Decide one threshold against a source (validated first)."""
    validate(threshold, source.variants(), source.metrics())
    values = {str(ref): source.value(ref.variant, ref.metric) for ref in threshold.refs}
    if threshold.significance:
        return _significance(threshold, source, values)
    return _arithmetic(threshold, values)


def check(texts: Iterable[str], source: ThresholdSource) -> list[ThresholdResult]:
    """Parse and validate every expression before deciding any, then decide them all."""
    thresholds = [parse(text) for text in texts]
    for threshold in thresholds:
        validate(threshold, source.variants(), source.metrics())
    return [evaluate(threshold, source) for threshold in thresholds]


def exit_code(results: Sequence[ThresholdResult], *, strict: bool = False) -> int:
    """EXIT_THRESHOLD when a threshold is breached (or, when strict, inconclusive), else 0."""
    failing = {Outcome.BREACHED, Outcome.INCONCLUSIVE} if strict else {Outcome.BREACHED}
    return EXIT_THRESHOLD if any(r.outcome in failing for r in results) else 0


def _significance(
    threshold: Threshold, source: ThresholdSource, values: dict[str, float | None]
) -> ThresholdResult:
    x, y = threshold.significance  # type: ignore[misc]
    result = source.comparison(y.variant, x.variant, x.metric)
    relation = {"<": "lower than", ">": "higher than"}.get(threshold.op, "different from")
    if result is None or result.direction is None:
        why = result.footnotes[0] if result and result.footnotes else "no comparison available"
        line = f"cannot tell whether {x} is significantly {relation} {y}: {why}"
        return _result(threshold, Outcome.INCONCLUSIVE, line, values)
    direction = result.direction
    held = direction != 0 if threshold.op == "!=" else direction == SIGNIFICANCE_OPS[threshold.op]
    how = "" if result.status == "exact" else "significantly "
    if held:
        line = f"{x} is {how}{relation} {y} ({_evidence(result)})"
    elif direction == 0:
        found = "equal" if result.status == "exact" else "no significant difference"
        line = f"{found} ({_evidence(result)})"
    else:
        line = f"{x} is {how}{'higher' if direction > 0 else 'lower'} ({_evidence(result)})"
    return _result(threshold, Outcome.BREACHED if held else Outcome.PASSED, line, values)


def _evidence(result: Comparison) -> str:
    change = "" if result.change_pct is None else f"{result.change_pct:+.1f} %, "
    if result.status == "exact":
        return f"{change}{_num(result.b.median)} vs {_num(result.a.median)}, exact"
    return f"{change}p = {result.p_value:.2g}, {result.test}"


def _arithmetic(threshold: Threshold, values: dict[str, float | None]) -> ThresholdResult:
    missing = [name for name, value in values.items() if value is None]
    if missing:
        return _result(
            threshold, Outcome.INCONCLUSIVE, f"no value for {', '.join(missing)}", values
        )
    numbers = [values[str(ref)] for ref in threshold.refs]
    try:
        left = compute(threshold.left, numbers)  # type: ignore[arg-type]
        right = compute(threshold.right, numbers)  # type: ignore[arg-type]
    except ZeroDivisionError:
        return _result(threshold, Outcome.INCONCLUSIVE, "division by zero", values)
    held = BY_SYMBOL[threshold.op](left, right)
    shown = ", ".join(f"{name} = {_num(value)}" for name, value in values.items())
    line = f"{_num(left)} {threshold.op} {_num(right)} is {str(held).lower()} ({shown})"
    return _result(threshold, Outcome.BREACHED if held else Outcome.PASSED, line, values)


def _result(
    threshold: Threshold, outcome: Outcome, why: str, values: dict[str, float | None]
) -> ThresholdResult:
    return ThresholdResult(threshold.text, outcome, f"{outcome}: {threshold.text}: {why}", values)


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.6g}"
