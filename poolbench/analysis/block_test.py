"""Within one run: a test is valid only over independent units, so test batch means over blocks.

With one repeat per variant, the per-second values of a steady window are not independent
(goodput and latency wander for seconds at a time), so a test over seconds calls noise
significant. Instead the window is cut into k non-overlapping blocks of L seconds, each block
gives one value (its mean, or its percentile from the requests that completed in it), and
Mann-Whitney U compares the block values of the two variants.

**Block length.** L = ceil(5 τ), where τ is the integrated autocorrelation time of the
per-second series, τ = 1 + 2 Σ_{h≥1} ρ(h), summed up to Sokal's adaptive window (the smallest M
with M ≥ 5 τ(M)); the larger τ of the series given is used, for both sides, and recorded. Why τ
and not "the first lag where the sample ACF falls inside ±2/√n": the variance of a block mean is
σ²τ/L, set by the *sum* of the autocorrelations, and adjacent block means stay correlated by
about 0.3 τ / L whatever the AR(1) coefficient (worked out exactly for AR(1) blocks). The
first-crossing rule gives L ≈ τ and leaves adjacent blocks correlated by 0.2-0.36 (φ = 0.3-0.8,
n = 120); L = 5 τ leaves about 0.06. The factor 5 was chosen by measurement
(benchmarks/false_alarm.py, 300 A/A pairs per cell, windows of 120-600 s): with 3 the share of
A/A pairs called significant reached 7 % in 120-s windows whose latency level wanders; with 5
it stayed ≤ 4 %, at the same power for goodput. τ estimated from a short series is biased low,
which is part of why the factor is that large.

**Validity checks**, any failing makes the result "untested" (never significant):
at least 5 blocks per side (fewer cannot reach a trustworthy p, and hide drift); τ estimable
(the series is longer than 5 τ, Sokal's window exists); the lag-1 autocorrelation of each side's
block values not significantly positive (one-sided permutation test over their order, α = 0.05;
a positive one means the blocks are still too short or the level drifts).

**What it cannot see**: a difference between the two runs' levels that is not due to the
variant (the machine warmer, a neighbour busier). It tests "these two windows differ", and the
result's footnote says so; only repeats (poolbench.analysis.stats.compare) include run-to-run
variation.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, fields, replace

import numpy as np

from poolbench import format as fmt
from poolbench.analysis.stats import ALPHA, Blocks, Comparison, Values, compare

BLOCK_FACTOR = 5.0  # block length in units of the integrated autocorrelation time
SOKAL_C = 5.0  # Sokal's window: sum the autocorrelation up to M ≥ SOKAL_C × τ(M)
MIN_BLOCKS = 5
LAG1_RESAMPLES = 2000  # permutations for the lag-1 check (exact up to 6 blocks: 720 orders)
# Permutations drawn and tested this many at a time: the same permutations in the same order
# (scipy draws each from the generator in turn, whatever the batch), but arrays that stay in
# the CPU's cache: an hour's 600 blocks took 47 ms a check in one batch of 2000, 26 ms so
LAG1_BATCH = 250
RULE = (
    f"blocks of ceil({BLOCK_FACTOR:g} τ) s, τ the integrated autocorrelation time of the "
    f"per-second series (Sokal window, c = {SOKAL_C:g}); ≥ {MIN_BLOCKS} blocks per side and "
    "block values without significant lag-1 autocorrelation"
)
WITHIN_RUN_NOTE = "within-run test over blocks: run-to-run variation is not included"


@dataclass(frozen=True)
class BlockLength:
    """The block length chosen for a window, or None with the reason it could not be."""

    length: int | None
    taus: tuple[float | None, ...]
    reason: str | None = None


@dataclass(frozen=True)
class BlockMetrics:
    """Per-block figures from per-request data (arrays of k values, one per block)."""

    edges: np.ndarray  # k + 1 block edges, seconds
    goodput: np.ndarray  # successful requests completed per second
    failures: np.ndarray  # failed requests completed per second
    p50_ms: np.ndarray  # NaN for a block without a successful request
    p95_ms: np.ndarray
    p99_ms: np.ndarray
    mean_ms: np.ndarray


def integrated_time(series: Values) -> float | None:
    """Integrated autocorrelation time τ of a per-second series, in samples; None if too short.

    τ = 1 + 2 Σ_{h=1..M} ρ(h) with the sample autocorrelation ρ (FFT, biased estimator) and
    Sokal's window M: the smallest M with M ≥ 5 τ(M). A series shorter than that window gives
    None: its autocorrelation cannot be estimated. Missing seconds (NaN) count as the mean. A
    constant series has τ = 1.
    """
    x = np.asarray(series, dtype=float)
    if x.size < 2:
        return None
    x = np.where(np.isfinite(x), x, np.nanmean(x)) - np.nanmean(x)
    if not np.any(x):
        return 1.0
    spectrum = np.fft.rfft(x, n=2 * x.size)  # zero-padded: the products do not wrap around
    acov = np.fft.irfft(spectrum * np.conj(spectrum), n=2 * x.size)[: x.size]
    rho = acov / acov[0]
    # taus[M] = 1 + 2 Σ_{h=1..M} ρ(h), never lowered by the negative tail that the sample ACF
    # of a short series always has (it sums to -1/2 over all lags)
    taus = np.maximum.accumulate(2 * np.cumsum(rho) - 1)
    window = np.flatnonzero(np.arange(x.size) >= SOKAL_C * taus)
    if window.size == 0:
        return None
    return float(max(1.0, taus[window[0]]))


def choose_block_length(*series: Values, factor: float = BLOCK_FACTOR) -> BlockLength:
    """One block length for every series given (the longest any of them needs)."""
    taus = tuple(integrated_time(s) for s in series)
    known = [t for t in taus if t is not None]
    if not taus or len(known) < len(taus):
        return BlockLength(
            None,
            taus,
            "steady window too short to estimate its autocorrelation "
            f"(needs more than {SOKAL_C:g} τ seconds)",
        )
    return BlockLength(max(1, math.ceil(factor * max(known))), taus)


def block_edges(start: float, end: float, length: float) -> np.ndarray:
    """Edges of the whole blocks of `length` seconds in [start, end); the remainder is dropped."""
    k = int((end - start) // length) if length > 0 else 0
    return start + length * np.arange(k + 1, dtype=float)


def block_means(series: Values, length: int) -> np.ndarray:
    """Means of consecutive whole blocks of `length` samples (a trailing remainder is dropped)."""
    x = np.asarray(series, dtype=float)
    k = x.size // length if length > 0 else 0
    if k == 0:
        return np.empty(0)
    means: np.ndarray = np.nanmean(x[: k * length].reshape(k, length), axis=1)
    return means


def lag1(values: Values) -> tuple[float | None, float | None]:
    """Lag-1 autocorrelation of block values and its one-sided permutation p-value (> 0)."""
    from scipy import stats as sps

    x = np.asarray(values, dtype=float)
    if x.size < 3 or np.ptp(x) == 0:
        return None, None
    result = sps.permutation_test(
        (x,),
        _lag1_stat,
        permutation_type="pairings",
        alternative="greater",
        n_resamples=LAG1_RESAMPLES,
        vectorized=True,
        batch=LAG1_BATCH,
        rng=np.random.default_rng(0),
    )
    return float(result.statistic), float(result.pvalue)


def compare_blocks(
    values_a: Values,
    values_b: Values,
    length: BlockLength,
    *,
    names: tuple[str, str] = ("a", "b"),
    alpha: float = ALPHA,
) -> Comparison:
    """Test block values of two runs (b against a), after the validity checks.

    `values_*` are one value per block (block means, or per-block percentiles from
    `per_block`); `length` is the choice they were cut with. Invalid → "untested" and why.
    """
    xa, xb = np.asarray(values_a, dtype=float), np.asarray(values_b, dtype=float)
    result = compare(xa, xb, names=names, alpha=alpha, unit="blocks")
    (r_a, p_a), (r_b, p_b) = lag1(xa), lag1(xb)
    blocks = Blocks(
        length=length.length or 0,
        k_a=int(np.isfinite(xa).sum()),
        k_b=int(np.isfinite(xb).sum()),
        taus=length.taus,
        lag1_a=r_a,
        lag1_b=r_b,
        lag1_p_a=p_a,
        lag1_p_b=p_b,
        rule=RULE,
    )
    problems = _invalid(blocks, length, names, alpha)
    notes = (*problems, *result.footnotes, WITHIN_RUN_NOTE)
    test = result.test if result.test == "none" else f"{result.test} over {blocks.length}-s blocks"
    if problems:
        return replace(result, status="untested", test=test, footnotes=notes, blocks=blocks)
    return replace(result, test=test, footnotes=notes, blocks=blocks)


def compare_within_run(
    series_a: Values,
    series_b: Values,
    *,
    names: tuple[str, str] = ("a", "b"),
    alpha: float = ALPHA,
) -> Comparison:
    """The whole within-run test for a per-second series of a steady window (e.g. goodput/s).

    Block length from both series' autocorrelation, block means, checks, Mann-Whitney U.
    """
    length = choose_block_length(series_a, series_b)
    size = length.length or 0
    return compare_blocks(
        block_means(series_a, size), block_means(series_b, size), length, names=names, alpha=alpha
    )


def per_block(
    start_s: np.ndarray, response_ms: np.ndarray, ok: np.ndarray, edges: np.ndarray
) -> BlockMetrics:
    """Goodput, failures/s and latency percentiles per block, from per-request data.

    A request belongs to the block in which it *completed* (start + response time): that is
    when it counts as served, as in requests per second. Latency figures are over successful
    requests only (a fast failure is not a fast answer; failures/s are reported beside).
    Percentiles use numpy's "inverted_cdf" method: the smallest observed response time with at
    least q % of the block's requests at or below it, an actual request's value, never an
    interpolation between two. Rates divide by the block's width in seconds. Vectorised (one
    sort for every block), so an hour of requests in one-second blocks takes well under a second.
    """
    start_s, response_ms = np.asarray(start_s, float), np.asarray(response_ms, float)
    ok = np.asarray(ok, bool)
    edges = np.asarray(edges, float)
    key = (start_s, response_ms, ok)
    for refs, cut, done in _CUTS:
        if np.array_equal(cut, edges) and all(r() is a for r, a in zip(refs, key, strict=True)):
            return _copy(done)
    metrics = _per_block(start_s, response_ms, ok, edges)
    _CUTS[:] = [(tuple(weakref.ref(a) for a in key), edges.copy(), metrics), *_CUTS[:7]]
    return _copy(metrics)


# the last cuts made, by the request arrays' identity (weak: a log dropped is not kept) and
# the edges: the report cuts the same log into the same seconds up to three times. The arrays
# of a request log are never written once read (RequestLog); arrays changed in place after a
# cut would be answered from that cut, as _time_order's sorting would be.
_CUTS: list[tuple[tuple[weakref.ref[np.ndarray], ...], np.ndarray, BlockMetrics]] = []


def _copy(metrics: BlockMetrics) -> BlockMetrics:
    """The caller's own arrays: one that changes them changes no other caller's."""
    return BlockMetrics(*(np.array(a, copy=True) for a in _arrays(metrics)))


def _arrays(metrics: BlockMetrics) -> tuple[np.ndarray, ...]:
    return tuple(getattr(metrics, f.name) for f in fields(metrics))


def _per_block(
    start_s: np.ndarray, response_ms: np.ndarray, ok: np.ndarray, edges: np.ndarray
) -> BlockMetrics:
    k = max(0, edges.size - 1)
    index = np.searchsorted(edges, start_s + response_ms / 1000, side="right") - 1
    inside = (index >= 0) & (index < k)
    width = np.diff(edges)
    served = np.bincount(index[inside & ok], minlength=k)[:k]
    failed = np.bincount(index[inside & ~ok], minlength=k)[:k]
    good = inside & ok
    if k < 1 << 16:
        by_time = _time_order(response_ms)  # every request, fastest first: sorted once per log
        by_time = by_time[good[by_time]]
        # then stably by block: a 16-bit key, which numpy radix-sorts
        order = by_time[np.argsort(index[by_time].astype(np.uint16), kind="stable")]
        blocks, times = index[order], response_ms[order]
    else:
        blocks, times = index[good], response_ms[good]
        order = np.lexsort((times, blocks))
        blocks, times = blocks[order], times[order]
    first = np.searchsorted(blocks, np.arange(k), side="left")
    quantiles = np.full((k, 4), np.nan)
    has = served > 0
    for column, q in enumerate((0.50, 0.95, 0.99)):
        # inverted_cdf: the ceil(q·n)-th smallest value of the block (1-based)
        rank = np.maximum(np.ceil(q * served[has] - 1e-9).astype(int), 1) - 1
        quantiles[has, column] = times[first[has] + rank]
    sums = np.bincount(blocks, weights=times, minlength=k)[:k]
    quantiles[has, 3] = sums[has] / served[has]
    return BlockMetrics(
        edges=edges,
        goodput=served / width,
        failures=failed / width,
        p50_ms=quantiles[:, 0],
        p95_ms=quantiles[:, 1],
        p99_ms=quantiles[:, 2],
        mean_ms=quantiles[:, 3],
    )


_SORTED: list[tuple[weakref.ref[np.ndarray], np.ndarray]] = []


def _time_order(response_ms: np.ndarray) -> np.ndarray:
    """np.argsort(response_ms), kept for the last array asked: the report cuts the same
    requests into blocks a dozen times (steady windows, halves, charts), an hour of them takes
    ~30 ms to sort each time. Sorting by block after filtering this order gives the values
    np.lexsort((times, blocks)) gives (equal times are equal values, whichever comes first)."""
    if _SORTED and _SORTED[0][0]() is response_ms:
        return _SORTED[0][1]
    order = np.argsort(response_ms)
    _SORTED[:] = [(weakref.ref(response_ms), order)]
    return order


def _invalid(
    blocks: Blocks, length: BlockLength, names: tuple[str, str], alpha: float
) -> list[str]:
    """Why a block test is not valid (empty when it is)."""
    if length.length is None:
        return [length.reason or "no block length"]
    problems = [
        f"{name}: {fmt.plural(k, 'block')} of {blocks.length} s, fewer than {MIN_BLOCKS} "
        "(window too short)"
        for name, k in zip(names, (blocks.k_a, blocks.k_b), strict=True)
        if k < MIN_BLOCKS
    ]
    problems += [
        f"{name}: block values still autocorrelated (lag-1 r = {r:.2f}, p = {p:.2g})"
        for name, r, p in zip(
            names,
            (blocks.lag1_a, blocks.lag1_b),
            (blocks.lag1_p_a, blocks.lag1_p_b),
            strict=True,
        )
        if r is not None and p is not None and p < alpha
    ]
    return problems


def _lag1_stat(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = x - x.mean(axis=axis, keepdims=True)
    num = (x[..., 1:] * x[..., :-1]).sum(axis=axis)
    stat: np.ndarray = num / (x * x).sum(axis=axis)
    return stat
