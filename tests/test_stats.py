"""poolbench.analysis.stats and poolbench.analysis.block_test on synthetic data with known
properties."""

from __future__ import annotations

import importlib.util
import math
import sys

import numpy as np
import pytest
from conftest import REPO
from scipy import signal
from scipy import stats as sps

from poolbench.analysis.block_test import (
    BLOCK_FACTOR,
    LAG1_RESAMPLES,
    BlockLength,
    _lag1_stat,
    block_edges,
    block_means,
    choose_block_length,
    compare_blocks,
    compare_within_run,
    integrated_time,
    lag1,
    per_block,
)
from poolbench.analysis.stats import Comparison, compare, compare_exact, median_interval


def ar1(seed: int, n: int, phi: float, mean: float = 100.0, sd: float = 10.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(n) * np.sqrt(1 - phi**2)
    noise[0] = rng.standard_normal()
    return mean + sd * signal.lfilter([1.0], [1.0, -phi], noise)


# --- across repeats -------------------------------------------------------------------------


def test_clear_shift_is_significant_with_the_right_sign():
    before = [100.0, 101.5, 99.2, 102.1, 100.4, 98.9]
    after = [110.3, 111.0, 108.7, 112.4, 109.9, 110.8]
    up = compare(before, after, names=("before", "after"))
    assert up.status == "significant" and up.significant
    assert up.direction == 1
    assert up.change_pct == pytest.approx((110.55 - 100.2) / 100.2 * 100)  # medians
    assert up.p_value == pytest.approx(sps.mannwhitneyu(before, after, method="exact").pvalue)
    assert up.test == "Mann-Whitney U, exact"
    down = compare(after, before)
    assert down.significant and down.direction == -1 and down.change_pct < 0


def test_two_draws_from_one_distribution_are_not_significant():
    rng = np.random.default_rng(7)
    a, b = rng.normal(200, 10, 8), rng.normal(200, 10, 8)
    result = compare(a, b)
    assert result.status == "not significant"
    assert not result.significant and result.direction == 0
    assert result.p_value >= 0.05


def test_small_n_gives_footnotes_not_a_verdict():
    tiny = compare([1.0, 2.0, 3.0], [10.0, 11.0, 12.0], names=("before", "after"))
    assert tiny.status == "untested" and not tiny.significant and tiny.direction is None
    assert tiny.p_value == pytest.approx(0.1)  # the smallest 3-vs-3 can reach
    assert any("smallest achievable p is 0.1" in note for note in tiny.footnotes)
    assert any("before's median" in n and "n ≥ 6" in n for n in tiny.footnotes)
    assert (tiny.a.ci_low, tiny.a.ci_high) == (None, None)
    single = compare([5.0], [9.0])
    assert single.status == "untested" and single.p_value is None
    # 5 vs 5 can be tested (smallest p 0.008) but has no 95 % interval of the median
    five = compare([1, 2, 3, 4, 5], [11, 12, 13, 14, 15])
    assert five.significant and five.a.ci_low is None
    assert not any("smallest achievable" in note for note in five.footnotes)


def test_median_interval_is_the_binomial_order_statistic_interval():
    assert median_interval(np.arange(5.0)) is None  # [min, max] covers only 93.75 %
    low, high, level = median_interval(np.arange(1.0, 7.0))
    assert (low, high, level) == (1.0, 6.0, pytest.approx(1 - 2 / 64))
    for n in range(6, 40):
        x = np.random.default_rng(n).normal(size=n)
        low, high, level = median_interval(x)
        reference = sps.quantile_test(x, q=np.median(x)).confidence_interval(0.95)
        assert (low, high) == (reference.low, reference.high), n
        rank = int(np.searchsorted(np.sort(x), low))  # 0-based: P(B ≤ rank) outside per tail
        assert level == pytest.approx(1 - 2 * sps.binom.cdf(rank, n, 0.5))
        assert level >= 0.95


def test_ties_use_the_exact_permutation_distribution():
    a, b = [1.0, 2.0, 2.0, 3.0, 4.0], [4.0, 5.0, 6.0, 6.0, 7.0]
    result = compare(a, b)
    assert result.test == "Mann-Whitney U, exact permutation (ties)"
    expected = sps.mannwhitneyu(a, b, method=sps.PermutationMethod(n_resamples=np.inf)).pvalue
    assert result.p_value == pytest.approx(expected)
    many = compare([5.0] * 10, [5.0] * 10)  # too many splits to enumerate, every value tied
    assert many.test.endswith("normal approximation (tie-corrected)")
    assert many.status == "not significant" and many.p_value == 1.0


def test_large_spread_is_named():
    wide = compare([80, 100, 120, 90, 110, 95, 105], [100, 101, 99, 100, 102, 98, 100])
    assert len(wide.warnings) == 1 and wide.warnings[0].startswith("large spread: a's 95 %")
    assert wide.a.spread == pytest.approx(0.2)
    assert not compare([100, 101, 99], [100, 102, 98]).warnings


def test_missing_values_are_dropped_with_a_footnote():
    result = compare([1.0, None, 2.0, float("nan")], [3.0, 4.0], names=("x", "y"))
    assert result.a.n == 2
    assert "2 of 4 values of x missing" in result.footnotes


def test_an_exact_metric_is_compared_without_a_test():
    result = compare_exact([100] * 5, [20] * 5, names=("before", "after"))
    assert result.status == "exact" and result.p_value is None
    assert result.test == "exact (identical across repeats)"
    assert result.change_pct == pytest.approx(-80.0) and result.direction == -1
    assert not result.significant  # no test ran; the difference is exact
    assert compare_exact([20], [20]).direction == 0
    # one repeat is still exact: a connection ceiling does not wobble
    assert compare_exact([37], [40]).status == "exact"


def test_an_exact_metric_that_varies_across_repeats_says_so_and_is_tested():
    result = compare_exact([20, 20, 21, 20, 20], [20] * 5, names=("before", "after"))
    assert result.status != "exact"
    assert result.footnotes[0].startswith("before varies across repeats (20, 20, 21, 20, 20)")
    untested = compare_exact([20, 21], [20, 20])
    assert untested.footnotes[0].startswith("n too small for a test")
    assert untested.footnotes[1].startswith("a varies across repeats")
    assert result.test.startswith("Mann-Whitney U")


def test_comparison_round_trips_through_json():
    length = choose_block_length(ar1(1, 600, 0.5), ar1(2, 600, 0.5))
    results = [
        compare([1, 2, 3, 4, 5, 6], [3, 4, 5, 6, 7, 8]),
        compare_exact([20, 20], [100, 100]),
        compare_within_run(ar1(1, 600, 0.5), ar1(2, 600, 0.5, mean=110)),
        compare_blocks([1.0] * 3, [2.0] * 3, length),
    ]
    for result in results:
        again = Comparison.from_json(result.to_json())
        assert again == result
        assert again.to_json() == result.to_json()


# --- within one run: blocks -------------------------------------------------------------------


def test_integrated_time_matches_ar1_theory():
    for phi in (0.0, 0.5, 0.8):
        tau = integrated_time(ar1(3, 20_000, phi))
        assert tau == pytest.approx((1 + phi) / (1 - phi), rel=0.15), phi
    assert integrated_time(np.full(100, 7.0)) == 1.0
    assert integrated_time([1.0, 2.0, 3.0, 4.0, 5.0]) is None  # shorter than Sokal's window


def test_block_length_is_chosen_from_the_autocorrelation_and_recorded():
    slow, fast = ar1(4, 3000, 0.8), ar1(5, 3000, 0.3)
    length = choose_block_length(slow, fast)
    assert length.length == math.ceil(BLOCK_FACTOR * max(length.taus))
    assert length.taus[0] > length.taus[1]
    result = compare_within_run(slow, fast, names=("before", "after"))
    assert result.blocks.length == length.length
    assert result.blocks.k_a == 3000 // length.length
    assert result.blocks.taus == length.taus
    assert result.test.endswith(f"over {length.length}-s blocks")


def test_block_test_sees_a_clear_shift_and_not_noise():
    base = ar1(6, 600, 0.6)
    shifted = compare_within_run(base, ar1(7, 600, 0.6, mean=110), names=("before", "after"))
    assert shifted.status == "significant" and shifted.direction == 1
    assert shifted.blocks.k_a >= 5
    assert "run-to-run variation is not included" in shifted.footnotes[-1]
    same = compare_within_run(base, ar1(8, 600, 0.6))
    assert same.status == "not significant"


def test_block_test_refuses_a_too_short_window_even_for_a_huge_shift():
    result = compare_within_run(ar1(9, 40, 0.7), ar1(10, 40, 0.7, mean=200))
    assert result.status == "untested" and not result.significant
    assert "too short" in result.footnotes[0] and result.test == "none"


def test_block_test_refuses_block_values_that_are_still_autocorrelated():
    drifting = np.arange(8.0) + np.array([0.1, -0.1, 0.05, 0.0, -0.05, 0.1, 0.0, -0.1])
    result = compare_blocks(drifting, drifting + 20, BlockLength(10, (2.0, 2.0)))
    assert result.status == "untested"
    assert any("still autocorrelated" in note for note in result.footnotes)
    assert result.blocks.lag1_p_a < 0.05


@pytest.mark.parametrize("k", [3, 6, 7, 33, 599])
def test_lag1_check_in_batches_gives_the_one_batch_answer(k: int) -> None:
    """lag1 draws its permutations LAG1_BATCH at a time: the statistic and the p-value are
    those of scipy's one batch of LAG1_RESAMPLES (exact enumeration up to 6 blocks)."""
    x = ar1(k, k, 0.3)
    whole = sps.permutation_test(
        (x,),
        _lag1_stat,
        permutation_type="pairings",
        alternative="greater",
        n_resamples=LAG1_RESAMPLES,
        vectorized=True,
        rng=np.random.default_rng(0),
    )
    assert lag1(x) == (float(whole.statistic), float(whole.pvalue))


def test_block_edges_and_means_drop_the_remainder():
    assert list(block_edges(10.0, 47.0, 12)) == [10.0, 22.0, 34.0, 46.0]
    assert list(block_means(np.arange(10.0), 4)) == [1.5, 5.5]


def test_per_block_counts_by_completion_and_takes_actual_percentiles():
    # block [0, 10): 100 successes with latencies 1..100 ms, completed inside it
    latency = np.arange(1.0, 101.0)
    start = np.full(100, 2.0)
    # one failure in block 0, one success that starts in block 0 but completes in block 1
    start = np.concatenate([start, [3.0, 9.5]])
    latency = np.concatenate([latency, [5.0, 1000.0]])
    ok = np.concatenate([np.ones(100, bool), [False, True]])
    blocks = per_block(start, latency, ok, np.array([0.0, 10.0, 20.0]))
    assert list(blocks.goodput) == [10.0, 0.1]
    assert list(blocks.failures) == [0.1, 0.0]
    assert (blocks.p50_ms[0], blocks.p95_ms[0], blocks.p99_ms[0]) == (50.0, 95.0, 99.0)
    assert blocks.mean_ms[0] == 50.5  # the failure's 5 ms is not a latency
    assert blocks.p95_ms[1] == 1000.0
    empty = per_block(start, latency, ok, np.array([100.0, 110.0]))
    assert empty.goodput[0] == 0 and np.isnan(empty.p95_ms[0])


# --- measured false-alarm rate ------------------------------------------------------------------


def _false_alarm_module():
    spec = importlib.util.spec_from_file_location("false_alarm", REPO / "benchmarks/false_alarm.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_false_alarm_rate_is_at_most_7_percent_and_a_10_percent_shift_is_seen():
    """200 synthetic A/A comparisons per test with realistic autocorrelation (fixed seed).
    Its CPU budget is `benchmarks/false_alarm.py --suite-size`'s, not an assertion here."""
    fa = _false_alarm_module()
    model = fa.SUITE_MODEL
    aa = fa.measure(200, seed=11, model=model, shifts=(0.0,))
    for test in ("across A/A", "within A/A"):
        for metric, share in aa[test].items():
            assert share["significant"] <= 0.07, (test, metric, share)
    ab = fa.measure(40, seed=12, model=model, shifts=(fa.SHIFT,))
    # power: a test that never says "significant" would pass the line above
    assert ab["across A/B 10%"]["goodput"]["significant"] >= 0.7
    assert ab["within A/B 10%"]["goodput"]["significant"] >= 0.4
