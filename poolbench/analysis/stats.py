"""Differences that survive a skeptical reviewer: medians, their intervals, and one honest test.

In the manner of benchstat (golang.org/x/perf/cmd/benchstat):

- Each side is summarised by its **median** and a **distribution-free 95 % interval of the
  median** from order statistics: the interval [x(l), x(n+1-l)] covers the true median with
  probability P(l ≤ B ≤ n-l), B ~ Binomial(n, ½). It needs no assumption about the shape of the
  distribution, and exists only for n ≥ 6 (for n = 5 the widest interval, [min, max], covers
  93.75 %); below that the interval is None and a footnote says so.
- Two sides are compared with the two-sided **Mann-Whitney U test** (exact distribution when
  there are no ties; exact permutation distribution when there are ties and the number of
  splits is small; tie-corrected normal approximation otherwise). The change is the change of
  the medians in %, so a row's values and its change come from the same numbers.
- `~` (not significant) means p ≥ α = 0.05. When n is so small that no outcome can reach
  p < α (3 vs 3: the smallest two-sided p is 0.10) the result is *untested*, with a footnote,
  never a verdict.
- A **large-spread warning** names a side whose median is uncertain by more than 10 %: the
  half-width of its interval (the 95 % interval, or for n < 6 the range [min, max]) over
  |median|. Such a side needs more repeats before any change below that size can be seen.
- **Exact quantities** (connection ceilings, idle counts) are compared without a test when each
  side's value is identical across repeats (`compare_exact`); when they vary, the result says
  so and falls back to the test.

The unit of inference is the repeat. Within one run (one repeat per variant) only the block
test of `poolbench.analysis.block_test` is valid, and it returns this same `Comparison`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np

ALPHA = 0.05
CONFIDENCE = 0.95
SPREAD_LIMIT = 0.10  # warn when the median is uncertain by more than this share of itself
# Ties: enumerate every split up to this many (6 vs 6 has 924; scipy takes ~25 µs a split),
# else the tie-corrected normal approximation, which is fair from about 7 values per side.
MAX_EXACT_SPLITS = 1000

Values = Sequence[float] | np.ndarray  # one number per repeat, block or second
Status = Literal["exact", "significant", "not significant", "untested"]


@dataclass(frozen=True)
class Side:
    """One side of a comparison: n values, their median and the median's interval.

    `ci_low`/`ci_high` bound the median at `ci_level` (≥ 95 %, the coverage actually achieved by
    the chosen order statistics); all three are None when n < 6.
    """

    n: int
    median: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    ci_level: float | None = None
    minimum: float | None = None
    maximum: float | None = None

    @property
    def spread(self) -> float | None:
        """Half-width of the median's interval (or of the range when there is none) / |median|."""
        low, high = (
            (self.ci_low, self.ci_high) if self.ci_low is not None else (self.minimum, self.maximum)
        )
        if self.median is None or low is None or high is None or self.n < 2 or self.median == 0:
            return None
        return max(self.median - low, high - self.median) / abs(self.median)


@dataclass(frozen=True)
class Blocks:
    """How a within-run test cut its per-second series (see poolbench.analysis.block_test)."""

    length: int  # samples (seconds) per block, the same on both sides
    k_a: int  # blocks on side a
    k_b: int
    taus: tuple[float | None, ...]  # integrated autocorrelation time of each series, samples
    lag1_a: float | None = None  # lag-1 autocorrelation of the block values
    lag1_b: float | None = None
    lag1_p_a: float | None = None  # one-sided permutation p-value that it is > 0
    lag1_p_b: float | None = None
    rule: str = ""


@dataclass(frozen=True)
class Comparison:
    """Side b against side a (the baseline): change in %, p-value, status and why.

    `status` is "exact" (compared without a test: identical values within each side),
    "significant" (p < alpha), "not significant" (shown as `~`), or "untested" (no valid test
    possible; `footnotes[0]` says why). `significant` is True only for a significant test.
    """

    a: Side
    b: Side
    change_pct: float | None
    p_value: float | None
    status: Status
    test: str
    footnotes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    blocks: Blocks | None = None
    alpha: float = ALPHA

    @property
    def significant(self) -> bool:
        return self.status == "significant"

    @property
    def direction(self) -> int | None:
        """+1 / -1 when b is established higher / lower than a, 0 when no difference is shown,
        None when untested. Established means: an exact difference, or a significant one."""
        if self.status == "untested":
            return None
        if self.status == "not significant" or self.a.median is None or self.b.median is None:
            return 0
        return int(np.sign(self.b.median - self.a.median))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["footnotes"] = list(self.footnotes)
        data["warnings"] = list(self.warnings)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Comparison:
        blocks = data.get("blocks")
        return cls(
            a=Side(**data["a"]),
            b=Side(**data["b"]),
            change_pct=data["change_pct"],
            p_value=data["p_value"],
            status=data["status"],
            test=data["test"],
            footnotes=tuple(data.get("footnotes", ())),
            warnings=tuple(data.get("warnings", ())),
            blocks=Blocks(**{**blocks, "taus": tuple(blocks["taus"])}) if blocks else None,
            alpha=data.get("alpha", ALPHA),
        )


def t_quantile(p: float, dof: float) -> float:
    """Student's t quantile, from scipy.special (what scipy.stats.t.ppf calls): importing
    scipy.stats costs ~0.75 s of a report that only needs this number."""
    from scipy import special

    return float(special.stdtrit(dof, p))


def binomial_cdf(k: np.ndarray | int, n: int, p: float) -> np.ndarray:
    """P(B ≤ k), B ~ Binomial(n, p), from scipy.special (what scipy.stats.binom.cdf calls)."""
    from scipy import special

    return np.asarray(special.bdtr(k, n, p))


def median_interval(
    values: Values, confidence: float = CONFIDENCE
) -> tuple[float, float, float] | None:
    """(low, high, achieved level) of the distribution-free interval of the median, or None.

    The widest symmetric pair of order statistics x(l), x(n+1-l) whose coverage
    1 - 2·P(B ≤ l-1), B ~ Binomial(n, ½), is at least `confidence`; None when even [min, max]
    falls short (n < 6 at 95 %).
    """
    x = np.sort(np.asarray(values, dtype=float))
    n = x.size
    if n == 0:
        return None
    tail = (1 - confidence) / 2
    below = np.arange(n)  # m = l - 1 candidate values
    ok = below[binomial_cdf(below, n, 0.5) <= tail + 1e-12]
    if ok.size == 0:
        return None
    m = int(ok[-1])
    level = 1 - 2 * float(binomial_cdf(m, n, 0.5))
    return float(x[m]), float(x[n - 1 - m]), level


def summarize(values: Values) -> Side:
    """Median, its interval and the range of the finite values."""
    x = _finite(values)
    if x.size == 0:
        return Side(n=0, median=None)
    interval = median_interval(x)
    low, high, level = interval if interval else (None, None, None)
    return Side(
        n=int(x.size),
        median=float(np.median(x)),
        ci_low=low,
        ci_high=high,
        ci_level=level,
        minimum=float(x.min()),
        maximum=float(x.max()),
    )


def smallest_p(n_a: int, n_b: int) -> float:
    """The smallest two-sided p-value Mann-Whitney U can reach with n_a vs n_b (no ties)."""
    if n_a == 0 or n_b == 0:
        return 1.0
    return min(1.0, 2 / math.comb(n_a + n_b, n_a))


def mann_whitney(a: np.ndarray, b: np.ndarray) -> tuple[float, str]:
    """Two-sided Mann-Whitney U p-value and the name of the method used.

    Exact when there are no ties (scipy's exact null distribution); with ties the exact
    distribution changes, so every split is enumerated when there are few (a permutation test of
    U), else the tie-corrected normal approximation.
    """
    from scipy import stats as sps

    ties = np.unique(np.concatenate([a, b])).size < a.size + b.size
    if not ties:
        p = sps.mannwhitneyu(a, b, alternative="two-sided", method="exact").pvalue
        return float(p), "Mann-Whitney U, exact"
    if math.comb(a.size + b.size, a.size) <= MAX_EXACT_SPLITS:
        # n_resamples=inf: every permutation (scipy's documented form; its stubs say int)
        method = sps.PermutationMethod(n_resamples=np.inf)  # type: ignore[call-overload]
        p = sps.mannwhitneyu(a, b, alternative="two-sided", method=method).pvalue
        return float(min(1.0, p)), "Mann-Whitney U, exact permutation (ties)"
    p = sps.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic").pvalue
    p = 1.0 if np.isnan(p) else float(p)  # every value tied: no evidence of a difference
    return p, "Mann-Whitney U, normal approximation (tie-corrected)"


def compare(
    a: Values,
    b: Values,
    *,
    names: tuple[str, str] = ("a", "b"),
    alpha: float = ALPHA,
    unit: str = "repeats",
) -> Comparison:
    """Compare independent values (one per repeat) of a noisy metric: b against baseline a.

    `names` label the sides in footnotes and warnings; `unit` names what one value is.
    Non-finite values are dropped with a footnote.
    """
    xa, xb = _finite(a), _finite(b)
    side_a, side_b = summarize(xa), summarize(xb)
    notes = _dropped(a, xa, names[0]) + _dropped(b, xb, names[1])
    notes += _interval_notes((side_a, side_b), names)
    change = change_pct(side_a.median, side_b.median)
    warnings = spread_warnings((side_a, side_b), names)
    if min(xa.size, xb.size) < 2:
        notes.insert(0, f"one value or fewer per side ({xa.size} vs {xb.size} {unit}): no test")
        return Comparison(side_a, side_b, change, None, "untested", "none", tuple(notes), warnings)
    p, test = mann_whitney(xa, xb)
    floor = smallest_p(xa.size, xb.size)
    if floor >= alpha:
        notes.insert(
            0,
            f"n too small for a test at α = {alpha:g}: with {xa.size} vs {xb.size} {unit} the "
            f"smallest achievable p is {floor:.2g}",
        )
        status: Status = "untested"
    else:
        status = "significant" if p < alpha else "not significant"
    return Comparison(side_a, side_b, change, p, status, test, tuple(notes), warnings, alpha=alpha)


def compare_exact(
    a: Values,
    b: Values,
    *,
    names: tuple[str, str] = ("a", "b"),
    alpha: float = ALPHA,
) -> Comparison:
    """Compare an exact quantity (e.g. a connection ceiling) measured once per repeat.

    Identical values within each side: compared as they are, without a test (status "exact").
    Values that vary across repeats are not exact: the result says which side varied and how,
    and falls back to `compare` (a test across repeats).
    """
    xa, xb = _finite(a), _finite(b)
    varied = [
        f"{name} varies across repeats ({', '.join(f'{v:g}' for v in x)}): not exact"
        for name, x in zip(names, (xa, xb), strict=True)
        if np.unique(x).size > 1
    ]
    if varied:
        result = compare(a, b, names=names, alpha=alpha)
        how = ", so tested across repeats" if result.status != "untested" else ", and untested"
        return _with_notes(result, [v + how for v in varied])
    if xa.size == 0 or xb.size == 0:
        side_a, side_b = summarize(xa), summarize(xb)
        missing = [n for n, x in zip(names, (xa, xb), strict=True) if x.size == 0]
        missing_note = (f"no value for {' and '.join(missing)}",)
        return Comparison(side_a, side_b, None, None, "untested", "none", missing_note)
    side_a, side_b = _exact_side(xa), _exact_side(xb)
    change = change_pct(side_a.median, side_b.median)
    notes = _dropped(a, xa, names[0]) + _dropped(b, xb, names[1])
    test = "exact (identical across repeats)" if max(xa.size, xb.size) > 1 else "exact"
    return Comparison(side_a, side_b, change, None, "exact", test, tuple(notes), alpha=alpha)


def change_pct(a: float | None, b: float | None) -> float | None:
    """(b - a) / |a| in %, None when a is missing or zero."""
    if a is None or b is None or a == 0:
        return None
    return (b - a) / abs(a) * 100


def spread_warnings(sides: Sequence[Side], names: Sequence[str]) -> tuple[str, ...]:
    """One warning per side whose median is uncertain by more than SPREAD_LIMIT of itself."""
    out = []
    for name, side in zip(names, sides, strict=True):
        spread = side.spread
        if spread is not None and spread > SPREAD_LIMIT:
            what = "95 % interval" if side.ci_low is not None else "range"
            out.append(
                f"large spread: {name}'s {what} is ±{spread * 100:.0f} % of its median "
                f"(warning above {SPREAD_LIMIT * 100:.0f} %)"
            )
    return tuple(out)


def _exact_side(x: np.ndarray) -> Side:
    value = float(x[0])
    return Side(n=int(x.size), median=value, minimum=value, maximum=value)


def _interval_notes(sides: Sequence[Side], names: Sequence[str]) -> list[str]:
    return [
        f"n = {side.n} too small for a {CONFIDENCE * 100:.0f} % interval of {name}'s median "
        "(needs n ≥ 6)"
        for name, side in zip(names, sides, strict=True)
        if side.n and side.ci_low is None
    ]


def _dropped(raw: Values, kept: np.ndarray, name: str) -> list[str]:
    missing = len(raw) - kept.size
    return [f"{missing} of {len(raw)} values of {name} missing"] if missing else []


def _with_notes(result: Comparison, notes: Sequence[str]) -> Comparison:
    """Add notes after the first footnote when untested (footnotes[0] says why), else first."""
    keep = 1 if result.status == "untested" else 0
    footnotes = (*result.footnotes[:keep], *notes, *result.footnotes[keep:])
    return replace(result, footnotes=footnotes)


def _finite(values: Values) -> np.ndarray:
    x = np.asarray([np.nan if v is None else v for v in values], dtype=float)
    finite: np.ndarray = x[np.isfinite(x)]
    return finite
