"""How often poolbench's tests cry wolf, and how often they see a real 10 % change.

Synthetic runs with known truth and realistic autocorrelation:

- goodput per second: an AR(1) process, φ drawn uniformly in [0.5, 0.8] per run, around
  60 requests/s with a marginal coefficient of variation of 10 %; Poisson counts around it;
- per-request latencies: lognormal (σ = 0.5, median 40 ms) around a level that varies slowly
  (an AR(1) on the log scale with φ = 0.97 per second, i.e. wandering over half a minute);
  requests start uniformly within their second and are assigned to the second they complete in;
- across repeats, each run also gets its own level (run-to-run offsets, 3 % on goodput and
  latency): repeats differ by more than the seconds within one run do.

A/A: both sides from the same process. A/B: side b's goodput × 0.9 and latency × 1.1 (a 10 %
change for the worse). Measured for the across-repeat test (5 repeats per side, one value per
repeat: window goodput, window p95) and the within-run block test (one run per side).

Usage: .venv/bin/python benchmarks/false_alarm.py [--trials 1000] [--seed 1]
       .venv/bin/python benchmarks/false_alarm.py --suite-size   # the test's CPU cost vs budget
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
from scipy import signal
from scipy.stats import binomtest

from poolbench.analysis.block_test import (
    block_edges,
    choose_block_length,
    compare_blocks,
    per_block,
)
from poolbench.analysis.stats import Comparison, compare

REPEATS = 5
SHIFT = 0.10
METRICS = ("goodput", "p95_ms")
# tests/test_stats.py measures on this smaller model (same shape, fewer seconds): its CPU cost
# is budgeted here, not asserted in the test (4.4 s measured on the fast machine).
SUITE_BUDGET_CPU_S = 10.0


@dataclass(frozen=True)
class Model:
    """The synthetic system; the defaults are the figures reported."""

    window_s: int = 180  # steady window per run
    rate: float = 60.0  # requests/s
    goodput_cv: float = 0.10
    phi: tuple[float, float] = (0.5, 0.8)
    latency_ms: float = 40.0
    latency_sigma: float = 0.5
    slow_phi: float = 0.97
    slow_sd: float = 0.10
    run_cv: float = 0.03  # run-to-run offsets, applied across repeats


@dataclass
class Run:
    start_s: np.ndarray
    response_ms: np.ndarray
    ok: np.ndarray


def ar1(rng: np.random.Generator, n: int, phi: float) -> np.ndarray:
    """A stationary AR(1) series with unit marginal variance."""
    noise = rng.standard_normal(n) * np.sqrt(1 - phi**2)
    noise[0] = rng.standard_normal()
    return signal.lfilter([1.0], [1.0, -phi], noise)


def synthetic_run(
    rng: np.random.Generator, model: Model, *, shift: float = 0.0, run_cv: float = 0.0
) -> Run:
    """One run's requests; `shift` makes goodput lower and latency higher by that share."""
    n = model.window_s
    level = 1 + run_cv * rng.standard_normal(2)
    phi = rng.uniform(*model.phi)
    rate = model.rate * (1 - shift) * level[0] * (1 + model.goodput_cv * ar1(rng, n, phi))
    second = np.repeat(np.arange(n), rng.poisson(np.clip(rate, 0, None)))
    start = second + rng.random(second.size)
    slow = model.slow_sd * ar1(rng, n, model.slow_phi)
    scale = model.latency_ms * (1 + shift) * level[1] * np.exp(slow[second])
    response = scale * np.exp(model.latency_sigma * rng.standard_normal(second.size))
    return Run(start, response, np.ones(second.size, dtype=bool))


def window_values(run: Run, model: Model) -> dict[str, float]:
    """One repeat's figures over its whole window."""
    whole = per_block(run.start_s, run.response_ms, run.ok, np.array([0.0, model.window_s]))
    return {"goodput": float(whole.goodput[0]), "p95_ms": float(whole.p95_ms[0])}


def across_repeats(rng: np.random.Generator, model: Model, shift: float) -> dict[str, Comparison]:
    """Five repeats per side, one value per repeat, Mann-Whitney U."""
    sides = [
        [
            window_values(synthetic_run(rng, model, shift=s, run_cv=model.run_cv), model)
            for _ in range(REPEATS)
        ]
        for s in (0.0, shift)
    ]
    return {m: compare([r[m] for r in sides[0]], [r[m] for r in sides[1]]) for m in METRICS}


def seconds(run: Run, model: Model) -> tuple[np.ndarray, np.ndarray]:
    """Per-second goodput and mean latency (by completion second)."""
    n = model.window_s
    second = np.floor(run.start_s + run.response_ms / 1000).astype(int)
    keep = run.ok & (second < n)
    count = np.bincount(second[keep], minlength=n)[:n]
    total = np.bincount(second[keep], run.response_ms[keep], minlength=n)[:n]
    with np.errstate(invalid="ignore"):
        return count.astype(float), total / count


def within_run(
    rng: np.random.Generator, model: Model, shift: float, run_cv: float = 0.0
) -> dict[str, Comparison]:
    """One run per side, block test; block length from the per-second series of the metric
    (goodput per second for goodput, mean latency per second for p95)."""
    runs = [synthetic_run(rng, model, shift=s, run_cv=run_cv) for s in (0.0, shift)]
    per_second = [seconds(r, model) for r in runs]
    out = {}
    for metric, series in (("goodput", 0), ("p95_ms", 1)):
        length = choose_block_length(*(p[series] for p in per_second))
        edges = block_edges(0, model.window_s, length.length or model.window_s + 1)
        values = [getattr(per_block(r.start_s, r.response_ms, r.ok, edges), metric) for r in runs]
        out[metric] = compare_blocks(*values, length)
    return out


def rates(results: list[dict[str, Comparison]]) -> dict[str, dict[str, float]]:
    """Share significant (with its 95 % Clopper-Pearson interval) and share untested."""
    out = {}
    for metric in METRICS:
        status = [r[metric].status for r in results]
        significant = status.count("significant")
        interval = binomtest(significant, len(status)).proportion_ci(0.95)
        out[metric] = {
            "significant": significant / len(status),
            "low": interval.low,
            "high": interval.high,
            "untested": status.count("untested") / len(status),
        }
    return out


def measure(
    trials: int,
    seed: int,
    model: Model = Model(),
    *,
    run_cv_within: float = 0.0,
    shifts: tuple[float, ...] = (0.0, SHIFT),
) -> dict[str, dict]:
    """Share called significant over `trials` comparisons per test and shift (0: A/A)."""
    rng = np.random.default_rng(seed)
    out = {}
    for shift in shifts:
        label = "A/A" if shift == 0 else f"A/B {shift:.0%}"
        out[f"across {label}"] = rates([across_repeats(rng, model, shift) for _ in range(trials)])
        out[f"within {label}"] = rates(
            [within_run(rng, model, shift, run_cv_within) for _ in range(trials)]
        )
    return out


SUITE_MODEL = Model(window_s=150, rate=30.0)


def suite_size() -> None:
    """What tests/test_stats.py's false-alarm test costs: CPU seconds against its budget."""
    began = time.process_time()  # CPU time: the wall clock depends on the neighbours' load
    measure(200, seed=11, model=SUITE_MODEL, shifts=(0.0,))
    measure(40, seed=12, model=SUITE_MODEL, shifts=(SHIFT,))
    took = time.process_time() - began
    verdict = "within" if took <= SUITE_BUDGET_CPU_S else "OVER"
    print(f"false-alarm test: {took:.1f} s of CPU, budget {SUITE_BUDGET_CPU_S:.0f} s ({verdict})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--run-cv-within",
        type=float,
        default=0.0,
        help="run-to-run offset in the within-run runs too (shows what that test cannot see)",
    )
    parser.add_argument(
        "--slow-sd",
        type=float,
        default=Model().slow_sd,
        help="sd of the slowly varying log latency level (0: stationary latency)",
    )
    parser.add_argument(
        "--suite-size", action="store_true", help="time the test suite's measurement instead"
    )
    args = parser.parse_args()
    if args.suite_size:
        suite_size()
        return
    began = time.perf_counter()
    model = Model(slow_sd=args.slow_sd)
    result = measure(args.trials, args.seed, model, run_cv_within=args.run_cv_within)
    print(f"{args.trials} comparisons per row, seed {args.seed}, {model}")
    print(f"run-to-run offset within-run: {args.run_cv_within:g}")
    print(f"{'':15} {'metric':8} {'significant (95 % CI)':>23} {'untested':>9}")
    for name, per_metric in result.items():
        for metric, share in per_metric.items():
            interval = f"({share['low'] * 100:.1f}-{share['high'] * 100:.1f})"
            print(
                f"{name:15} {metric:8} {share['significant'] * 100:9.1f} % {interval:>12} "
                f"{share['untested'] * 100:7.1f} %"
            )
    print(f"{time.perf_counter() - began:.1f} s")


if __name__ == "__main__":
    main()
