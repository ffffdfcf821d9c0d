"""poolbench.analysis.thresholds: CI gates pass, breach, are inconclusive, and reject malformed
input."""

from __future__ import annotations

import numpy as np
import pytest

from poolbench.analysis.stats import Comparison, compare, compare_exact
from poolbench.analysis.thresholds import (
    EXIT_THRESHOLD,
    ThresholdResult,
    check,
    evaluate,
    exit_code,
    parse,
)
from poolbench.errors import PoolbenchError

EXACT = {"peak_connections", "idle_connections"}


class Repeats:
    """A ThresholdSource over per-repeat values: figures are medians, comparisons are tests."""

    def __init__(self, data: dict[str, dict[str, list[float]]]):
        self.data = data
        self.asked: list[tuple[str, str]] = []

    def variants(self) -> list[str]:
        return list(self.data)

    def metrics(self) -> set[str]:
        return {metric for per_variant in self.data.values() for metric in per_variant}

    def value(self, variant: str, metric: str) -> float | None:
        self.asked.append((variant, metric))
        values = self.data[variant].get(metric)
        return float(np.median(values)) if values else None

    def comparison(self, baseline: str, other: str, metric: str) -> Comparison | None:
        a, b = self.data[baseline].get(metric), self.data[other].get(metric)
        if a is None or b is None:
            return None
        test = compare_exact if metric in EXACT else compare
        return test(a, b, names=(baseline, other))


def source(**after_goodput: list[float]) -> Repeats:
    return Repeats(
        {
            "before": {
                "peak_connections": [100] * 5,
                "p95_ms": [700, 710, 720, 705, 715],
                "goodput": [200, 201, 199, 202, 200],
                "errors": [0, 0, 0, 0, 0],
                "idle_connections": [5] * 5,
            },
            "after": {
                "peak_connections": [20] * 5,
                "p95_ms": [1100, 1090, 1120, 1080, 1105],
                "goodput": after_goodput.get("goodput", [180, 181, 179, 182, 180]),
                "errors": [0, 0, 0, 0, 0],
                "idle_connections": [5] * 5,
            },
            "my-app": {"peak_connections": [20] * 5, "p95_ms": [700] * 5},
        }
    )


def test_absolute_threshold_passes_and_breaches():
    passed = evaluate(parse("after.peak_connections > 25"), source())
    assert passed.outcome == "passed"
    assert passed.explanation == (
        "passed: after.peak_connections > 25: 20 > 25 is false (after.peak_connections = 20)"
    )
    breached = evaluate(parse("before.peak_connections > 25"), source())
    assert breached.outcome == "breached"
    assert "100 > 25 is true" in breached.explanation
    assert exit_code([passed]) == 0 and exit_code([passed, breached]) == EXIT_THRESHOLD


def test_relative_threshold_uses_the_figures():
    result = evaluate(parse("after.p95_ms > 1.2 * before.p95_ms"), source())
    assert result.outcome == "breached"
    assert "1100 > 852 is true (after.p95_ms = 1100, before.p95_ms = 710)" in result.explanation
    assert result.values == {"after.p95_ms": 1100.0, "before.p95_ms": 710.0}
    ok = evaluate(parse("(after.p95_ms - before.p95_ms) / before.p95_ms > 0.6"), source())
    assert ok.outcome == "passed"


def test_bare_comparison_means_significantly_lower_decided_by_the_test():
    lower = evaluate(parse("after.goodput < before.goodput"), source())
    assert lower.outcome == "breached"
    assert "after.goodput is significantly lower than before.goodput (-10.0 %, p = 0.0079" in (
        lower.explanation
    )
    # raw figures lower (199.5 < 200.5 by median) but not significantly: passes
    noisy = source(goodput=[190, 210, 199, 205, 195])
    assert evaluate(parse("after.goodput < before.goodput"), noisy).outcome == "passed"
    assert (
        "no significant difference"
        in evaluate(parse("after.goodput != before.goodput"), noisy).explanation
    )
    higher = evaluate(parse("after.goodput > before.goodput"), source())
    assert higher.outcome == "passed"
    assert "after.goodput is significantly lower" in higher.explanation


def test_an_untested_difference_is_inconclusive_not_a_breach():
    few = Repeats({"before": {"goodput": [200, 201]}, "after": {"goodput": [150, 151]}})
    result = evaluate(parse("after.goodput < before.goodput"), few)
    assert result.outcome == "inconclusive"
    assert (
        "cannot tell whether after.goodput is significantly lower than before.goodput: "
        "n too small for a test at α = 0.05" in result.explanation
    )
    assert exit_code([result]) == 0
    assert exit_code([result], strict=True) == EXIT_THRESHOLD


def test_exact_metrics_decide_by_their_values():
    fewer = evaluate(parse("after.peak_connections < before.peak_connections"), source())
    assert fewer.outcome == "breached"
    assert fewer.explanation.endswith(
        "after.peak_connections is lower than before.peak_connections (-80.0 %, 20 vs 100, exact)"
    )
    same = evaluate(parse("after.idle_connections != before.idle_connections"), source())
    assert same.outcome == "passed" and "equal" in same.explanation


def test_missing_figures_and_division_by_zero_are_inconclusive():
    missing = Repeats({"before": {"p95_ms": [1.0]}, "after": {"p95_ms": [], "goodput": [1.0]}})
    result = evaluate(parse("after.p95_ms > 2 * before.p95_ms"), missing)
    assert result.outcome == "inconclusive" and "no value for after.p95_ms" in result.explanation
    zero = evaluate(parse("after.p95_ms / before.errors > 1"), source())
    assert zero.outcome == "inconclusive" and "division by zero" in zero.explanation


def test_hyphenated_variants_and_unspaced_minus():
    result = evaluate(parse("my-app.p95_ms > 1.2*before.p95_ms"), source())
    assert result.outcome == "passed" and "my-app.p95_ms = 700" in result.explanation
    diff = evaluate(parse("after.p95_ms-before.p95_ms > 300"), source())
    assert diff.outcome == "breached" and "390 > 300" in diff.explanation


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("after.p95_ms >", "not a valid expression"),
        ("after.p95_ms", "needs one comparison"),
        ("1 < after.p95_ms < 2", "one comparison per expression"),
        ("after.p95_ms ** 2 > 1", "'after.p95_ms ** 2' is not allowed"),
        ("__import__('os').system('true') > 1", "is not allowed"),
        ("p95_ms > 1", "'p95_ms' is not VARIANT.METRIC"),
        ("after.p95.x > 1", "'after.p95.x' is not allowed"),
        ("after.p95_ms > True", "True is not a number"),
        ("after.p95_ms > 'x'", "'x' is not a number"),
        ("1 > 2", "names no VARIANT.METRIC"),
        ("after.goodput <= before.goodput", "use < or > (significantly lower/higher)"),
        ("after.p95_ms > 1 and after.goodput < 2", "no and/or"),
    ],
)
def test_malformed_expressions_are_one_line_errors(text, problem):
    with pytest.raises(PoolbenchError) as caught:
        parse(text)
    message = str(caught.value)
    assert problem in message and "\n" not in message
    assert message.startswith(f"threshold {text!r}: ")


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(
        PoolbenchError,
        match=r"unknown variant 'aftr': valid variants are "
        r"after, before, my-app$",
    ):
        evaluate(parse("aftr.goodput > 1"), source())
    with pytest.raises(
        PoolbenchError,
        match=r"unknown metric 'p96_ms': valid metrics are errors, "
        r"goodput, idle_connections, p95_ms, peak_connections$",
    ):
        evaluate(parse("after.p96_ms > 1"), source())


def test_check_validates_every_expression_before_deciding_any():
    src = source()
    with pytest.raises(PoolbenchError, match="unknown metric 'nope'"):
        check(["after.p95_ms > 1", "after.nope > 1"], src)
    assert src.asked == []
    results = check(["after.p95_ms > 1", "after.goodput < before.goodput"], src)
    assert [r.outcome for r in results] == ["breached", "breached"]


def test_result_round_trips_through_json():
    result = evaluate(parse("after.p95_ms > 1.2 * before.p95_ms"), source())
    assert ThresholdResult.from_json(result.to_json()) == result
